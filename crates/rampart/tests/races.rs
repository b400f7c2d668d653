//! The logical races Rust does not prevent. The compiler refuses data
//! races (see `compile_fail.rs`), but a check and the act on it, or a read
//! and the write after an `.await`, are each correctly synchronised on
//! their own and still wrong together. Each test runs the naive version
//! with every caller held in the gap (a barrier or a gate, so the loss is
//! deterministic, not a matter of luck) and shows it losing, then the same
//! schedule through rampart's guard, which does not.
#![cfg(not(rampart_loom))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rampart::cache::TieredCache;
use rampart::{BoxError, Loader};
use tokio::sync::{watch, Barrier};

/// Callers of one key at once.
const CALLERS: usize = 10;

/// A source of truth that counts its loads; a load waits for the gate.
#[derive(Clone)]
struct Source {
    rows: Arc<Mutex<HashMap<u64, String>>>,
    loads: Arc<AtomicUsize>,
    gate: watch::Receiver<bool>,
}

impl Source {
    fn new(gate: watch::Receiver<bool>) -> Self {
        let rows = HashMap::from([(1, "v1".to_owned())]);
        Source {
            rows: Arc::new(Mutex::new(rows)),
            loads: Arc::new(AtomicUsize::new(0)),
            gate,
        }
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Loader<u64, String> for Source {
    async fn load(&self, key: &u64) -> Result<Option<String>, BoxError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        // What the source holds when the load is sent…
        let row = self.rows.lock().get(key).cloned();
        // …arrives after the gate opens (a slow query).
        self.gate.clone().wait_for(|open| *open).await?;
        Ok(row)
    }
}

/// The naive read-through cache: a map behind a lock, check then act.
struct NaiveCache {
    map: Mutex<HashMap<u64, String>>,
    source: Source,
}

impl NaiveCache {
    /// `between` runs after the check and before the act.
    async fn get(
        &self,
        key: u64,
        between: impl std::future::Future<Output = ()>,
    ) -> Option<String> {
        let cached = self.map.lock().get(&key).cloned();
        if cached.is_some() {
            return cached;
        }
        between.await;
        let loaded = self.source.load(&key).await.ok()??;
        self.map.lock().insert(key, loaded.clone());
        Some(loaded)
    }

    fn invalidate(&self, key: u64) {
        self.map.lock().remove(&key);
    }
}

/// A `TieredCache` over a gated source (closed: loads wait for the sender).
fn guarded() -> (watch::Sender<bool>, Source, Arc<TieredCache<u64, String>>) {
    let (gate, closed) = watch::channel(false);
    let source = Source::new(closed);
    let cache = TieredCache::builder("races", source.clone())
        .build()
        .expect("cache");
    (gate, source, Arc::new(cache))
}

fn open_gate() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(true)
}

/// Check-then-act: ten callers find the key missing, and each loads it.
#[tokio::test]
async fn check_then_act_loads_once_per_caller_naively_and_once_with_the_guard() {
    let (_gate, open) = open_gate();
    let naive = Arc::new(NaiveCache {
        map: Mutex::new(HashMap::new()),
        source: Source::new(open.clone()),
    });
    let barrier = Arc::new(Barrier::new(CALLERS));
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (naive, barrier) = (Arc::clone(&naive), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            naive
                .get(1, async move {
                    barrier.wait().await;
                })
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task").as_deref(), Some("v1"));
    }
    assert_eq!(
        naive.source.loads(),
        CALLERS,
        "the naive cache loads once per caller"
    );

    // The same ten callers, all arrived before the one load answers.
    let (gate, source, cache) = guarded();
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let cache = Arc::clone(&cache);
        tasks.push(tokio::spawn(async move {
            cache.get(&1).await.map(|l| l.value().cloned())
        }));
    }
    wait_until(|| cache.stats().waiting == (CALLERS - 1) as u64).await;
    gate.send(true).expect("open");
    for task in tasks {
        let value = task.await.expect("task").expect("loaded");
        assert_eq!(value.as_deref(), Some("v1"));
    }
    assert_eq!(source.loads(), 1, "single flight: one load for ten callers");
}

/// A lost update across an await: a load reads the row, the row changes
/// and the key is invalidated while the load is in flight, then the load
/// stores what it read — the invalidation is lost and the stale value
/// stays until it expires.
#[tokio::test]
async fn an_invalidation_during_a_load_is_lost_naively_and_kept_with_the_guard() {
    let (gate, closed) = watch::channel(false);
    let naive = Arc::new(NaiveCache {
        map: Mutex::new(HashMap::new()),
        source: Source::new(closed),
    });
    let loading = tokio::spawn({
        let naive = Arc::clone(&naive);
        async move { naive.get(1, async {}).await }
    });
    wait_until(|| naive.source.loads() == 1).await;
    naive.source.rows.lock().insert(1, "v2".into());
    naive.invalidate(1);
    gate.send(true).expect("open");
    assert_eq!(loading.await.expect("task").as_deref(), Some("v1"));
    assert_eq!(
        naive.get(1, async {}).await.as_deref(),
        Some("v1"),
        "the naive cache kept the value read before the invalidation"
    );

    let (gate, source, cache) = guarded();
    let loading = tokio::spawn({
        let cache = Arc::clone(&cache);
        async move { cache.get(&1).await.map(|l| l.value().cloned()) }
    });
    wait_until(|| source.loads() == 1).await;
    source.rows.lock().insert(1, "v2".into());
    cache.invalidate(&1).await.expect("invalidate");
    gate.send(true).expect("open");
    let first = loading.await.expect("task").expect("loaded");
    assert_eq!(
        first.as_deref(),
        Some("v1"),
        "the caller in flight gets what it loaded"
    );
    let after = cache.get(&1).await.expect("loaded");
    assert_eq!(
        after.value().map(String::as_str),
        Some("v2"),
        "but it was not stored"
    );
    assert_eq!(cache.stats().fills_refused, 1);
}

/// Waits (at most 5 s) until `done` holds.
async fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..5_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition not reached within 5 s");
}
