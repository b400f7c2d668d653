//! The in-process session store, measured against the bare map under it:
//!
//! * memory: resident bytes per session with 1 M sessions (each holding
//!   `{"user_id": n}`), from `/proc/self/statm` before and after;
//! * reads: `MemoryStore::get` (hash lookup by `SessionId`, expiry check,
//!   idle timeout restarted, the session cloned out) against a bare
//!   `scc::HashMap::read_async` of the same keys, in alternating rounds in
//!   one run, on 1 and 2 threads; the ratio is what the store adds.
//!
//! `cargo bench -p rampart-server --bench sessions` (about a minute;
//! `RAMPART_SESSIONS=100000` for a smaller store). A plain `main`, no
//! criterion: the figures are one run's, printed with the command.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_server::sessions::memory::MemoryStore;
use rampart_server::sessions::store::{Data, SessionStore};
use rampart_server::sessions::token::SessionId;
use rampart_server::sessions::SessionsConfig;
use serde_json::json;

/// Resident memory of this process, bytes (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn ids(n: u64) -> Vec<SessionId> {
    (0..n).map(|i| SessionId::of(&i.to_le_bytes())).collect()
}

/// Reads per second over `rounds` passes of `ids` on `threads` threads.
fn reads_per_sec<F, Fut>(threads: usize, ids: &Arc<Vec<SessionId>>, read: F) -> f64
where
    F: Fn(SessionId) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool>,
{
    let per_thread = 200_000usize;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (ids, read) = (Arc::clone(ids), read.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    let mut found = 0usize;
                    let mut at = t * 7_919;
                    for _ in 0..per_thread {
                        at = (at + 104_729) % ids.len();
                        found += usize::from(read(ids[at]).await);
                    }
                    assert_eq!(found, per_thread, "every read finds its session");
                })
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("reader");
    }
    (per_thread * threads) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n: u64 = std::env::var("RAMPART_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let config = SessionsConfig {
        max_sessions: n as usize,
        idle_timeout: Duration::from_secs(3_600),
        absolute_timeout: Duration::from_secs(3_600),
        ..SessionsConfig::default()
    };
    let ids = Arc::new(ids(n));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    let before = rss();
    let store = Arc::new(MemoryStore::new(config));
    runtime.block_on(async {
        for (i, id) in ids.iter().enumerate() {
            let data: Data = json!({ "user_id": i })
                .as_object()
                .cloned()
                .unwrap_or_default();
            store.create(*id, data, 1).await.expect("room");
        }
    });
    let store_bytes = rss().saturating_sub(before);

    let before = rss();
    let bare: Arc<scc::HashMap<SessionId, u64>> = Arc::new(scc::HashMap::new());
    for (i, id) in ids.iter().enumerate() {
        let _ = bare.insert_sync(*id, i as u64);
    }
    let bare_bytes = rss().saturating_sub(before);
    println!(
        "memory, {n} sessions: store {:.0} MiB ({:.0} B/session); bare scc map of 32-byte keys to u64 {:.0} MiB ({:.0} B/entry)",
        store_bytes as f64 / 1_048_576.0,
        store_bytes as f64 / n as f64,
        bare_bytes as f64 / 1_048_576.0,
        bare_bytes as f64 / n as f64,
    );

    for threads in [1, 2] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let s = Arc::clone(&store);
            ours.push(reads_per_sec(threads, &ids, move |id| {
                let s = Arc::clone(&s);
                async move { matches!(s.get(&id, 2).await, Ok(Some(_))) }
            }));
            let b = Arc::clone(&bare);
            theirs.push(reads_per_sec(threads, &ids, move |id| {
                let b = Arc::clone(&b);
                async move { b.read_async(&id, |_, v| *v).await.is_some() }
            }));
        }
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        let (ours, theirs) = (best(&ours), best(&theirs));
        println!(
            "reads, {threads} thread(s), best of 3: store.get {:.2} M/s, bare scc read {:.2} M/s, ratio {:.2}",
            ours / 1e6,
            theirs / 1e6,
            ours / theirs
        );
    }
}
