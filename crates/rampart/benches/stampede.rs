//! Stampede: 1,000 concurrent gets of one cold key with a 5 ms loader, many
//! rounds. Prints source loads per round (must be exactly 1) and the
//! callers' latency percentiles next to the loader's own time. Exits
//! non-zero if any round loaded more than once.
//!
//! `cargo bench -p rampart --bench stampede`

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rampart::cache::{CacheConfig, CacheStatus, TieredCache};
use rampart::{BoxError, Loader};

const CALLERS: usize = 1_000;
const ROUNDS: u64 = 30;
const LOAD_TIME: Duration = Duration::from_millis(5);

struct SlowRows {
    loads: Arc<AtomicUsize>,
    /// How long each load really took: tokio's timer rounds a 5 ms sleep up
    /// to its 1 ms tick, so the nominal figure would flatter the waiters.
    load_times: Arc<parking_lot::Mutex<Vec<Duration>>>,
}

#[async_trait]
impl Loader<u64, Arc<str>> for SlowRows {
    async fn load(&self, key: &u64) -> Result<Option<Arc<str>>, BoxError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let start = Instant::now();
        tokio::time::sleep(LOAD_TIME).await;
        self.load_times.lock().push(start.elapsed());
        Ok(Some(Arc::from(format!("row {key}"))))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let loads = Arc::new(AtomicUsize::new(0));
    let load_times = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let rows = SlowRows {
        loads: loads.clone(),
        load_times: load_times.clone(),
    };
    let cache = TieredCache::builder("stampede", rows)
        .config(CacheConfig::default())
        .build()
        .expect("cache");
    let mut latencies = Vec::with_capacity(CALLERS * ROUNDS as usize);
    let mut sources: HashMap<CacheStatus, usize> = HashMap::new();
    let mut bad_rounds = 0;
    runtime.block_on(async {
        for round in 0..ROUNDS {
            let before = loads.load(Ordering::SeqCst);
            let tasks: Vec<_> = (0..CALLERS)
                .map(|_| {
                    let cache = cache.clone();
                    tokio::spawn(async move {
                        let start = Instant::now();
                        let answer = cache.get(&round).await.expect("get");
                        (start.elapsed(), answer.status())
                    })
                })
                .collect();
            for task in tasks {
                let (latency, source) = task.await.expect("task");
                latencies.push(latency);
                *sources.entry(source).or_default() += 1;
            }
            let round_loads = loads.load(Ordering::SeqCst) - before;
            if round_loads != 1 {
                bad_rounds += 1;
                eprintln!("round {round}: {round_loads} loads");
            }
        }
    });
    latencies.sort();
    let mut load_times = load_times.lock().clone();
    load_times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "stampede: {CALLERS} concurrent gets of one cold key x {ROUNDS} rounds, loader {} ms",
        ms(LOAD_TIME)
    );
    println!(
        "  source loads: {} total, {} per round",
        loads.load(Ordering::SeqCst),
        loads.load(Ordering::SeqCst) as f64 / ROUNDS as f64
    );
    let mut by_source: Vec<_> = sources.into_iter().collect();
    by_source.sort_by_key(|(s, _)| s.as_str());
    println!("  answers by x-cache: {by_source:?}");
    println!(
        "  loader's own time ms: p50 {:.2}  p99 {:.2}",
        ms(percentile(&load_times, 0.50)),
        ms(percentile(&load_times, 0.99)),
    );
    println!(
        "  caller latency ms: p50 {:.2}  p99 {:.2}  max {:.2}  (caller p99 - loader p99 = {:.2} ms)",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0)),
        ms(percentile(&latencies, 0.99)) - ms(percentile(&load_times, 0.99)),
    );
    if bad_rounds > 0 {
        eprintln!("{bad_rounds} rounds loaded more than once");
        std::process::exit(1);
    }
}
