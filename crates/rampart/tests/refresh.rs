//! Batched background refreshes (`cache/refresh.rs`): a warm set that goes
//! stale together is refreshed in a few `load_many` calls, not one load per
//! key; no queued key is lost between the drain and new stale hits; a
//! failed refresh is claimed again by the key's next stale hit.
#![cfg(not(rampart_loom))]

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rampart::cache::{CacheConfig, CacheStatus, MemoryTier, TieredCache};
use rampart::clock::Clock;
use rampart::{BoxError, Loader};

/// Rows in memory, every call counted; single loads counted apart.
#[derive(Clone, Default)]
struct Rows {
    rows: Arc<Mutex<HashMap<u64, String>>>,
    single_loads: Arc<AtomicUsize>,
    batches: Arc<Mutex<Vec<usize>>>,
    fail: Arc<AtomicBool>,
}

impl Rows {
    fn fill(&self, n: u64, version: &str) {
        let mut rows = self.rows.lock();
        for k in 0..n {
            rows.insert(k, format!("{version}{k}"));
        }
    }
}

#[async_trait]
impl Loader<u64, String> for Rows {
    async fn load(&self, key: &u64) -> Result<Option<String>, BoxError> {
        self.single_loads.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err("source is down".into());
        }
        Ok(self.rows.lock().get(key).cloned())
    }

    async fn load_many(&self, keys: &[u64]) -> Result<HashMap<u64, String>, BoxError> {
        self.batches.lock().push(keys.len());
        // A real query takes a while: keys queue behind it meanwhile.
        tokio::time::sleep(Duration::from_micros(300)).await;
        if self.fail.load(Ordering::SeqCst) {
            return Err("source is down".into());
        }
        let rows = self.rows.lock();
        Ok(keys
            .iter()
            .filter_map(|k| rows.get(k).map(|v| (*k, v.clone())))
            .collect())
    }
}

fn cache(rows: &Rows, clock: &Clock) -> TieredCache<u64, String> {
    TieredCache::builder("users", rows.clone())
        .config(CacheConfig {
            ttl: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            jitter: 0.0,
            l1_capacity: 10_000,
            ..CacheConfig::default()
        })
        .clock(clock.clone())
        .tier(Arc::new(MemoryTier::with_clock(10_000, clock.clone())))
        .build()
        .expect("valid config")
}

async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition never held");
}

/// 3,000 keys go stale at once; 16 tasks hit them in a seeded random
/// order. Every key is refreshed (a lost queued key would stay stale), by
/// batch loads only, in far fewer calls than keys (one load per key is
/// what the unbatched refresh did: 3,000 single loads), none above 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_set_going_stale_together_is_refreshed_in_batches() {
    const KEYS: u64 = 3_000;
    let seed = support::stress_seed(15);
    let (clock, mock) = Clock::mock();
    let rows = Rows::default();
    rows.fill(KEYS, "old");
    let cache = cache(&rows, &clock);
    let keys: Vec<u64> = (0..KEYS).collect();
    for chunk in keys.chunks(500) {
        for answer in cache.get_many(chunk).await {
            answer.expect("warm");
        }
    }
    rows.batches.lock().clear();
    rows.fill(KEYS, "new");
    mock.increment(Duration::from_secs(61)); // all stale, within grace

    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(t));
            let mut stale = 0;
            for _ in 0..2_000 {
                let key = rng.u64(0..KEYS);
                let answer = cache.get(&key).await.expect("get");
                if answer.status() == CacheStatus::Stale {
                    stale += 1;
                }
                if rng.u8(0..8) == 0 {
                    tokio::task::yield_now().await;
                }
            }
            stale
        }));
    }
    let mut stale = 0;
    for task in tasks {
        stale += task.await.expect("task");
    }
    assert!(stale > 0, "the hits found stale entries");
    // Every key not hit yet gets its stale hit now, so all are queued.
    for key in &keys {
        cache.get(key).await.expect("get");
    }
    until(|| cache.stats().in_flight == 0).await;
    for key in &keys {
        let answer = cache.get(key).await.expect("get");
        assert_eq!(
            (answer.status(), answer.value().map(String::as_str)),
            (CacheStatus::Hit, Some(format!("new{key}").as_str())),
            "key {key} was refreshed"
        );
    }
    let batches = rows.batches.lock().clone();
    assert_eq!(rows.single_loads.load(Ordering::SeqCst), 0);
    assert_eq!(batches.iter().sum::<usize>(), KEYS as usize, "{batches:?}");
    assert!(batches.iter().all(|&n| n <= 500), "{batches:?}");
    assert!(
        batches.len() <= KEYS as usize / 10,
        "{} batch loads for {KEYS} keys: {batches:?}",
        batches.len()
    );
    assert_eq!(cache.stats().refreshes, KEYS);
}

/// A refresh that fails leaves the stale value served and lets the key's
/// next stale hit claim a new refresh, which then lands.
#[tokio::test]
async fn a_failed_refresh_is_claimed_again_by_the_next_stale_hit() {
    let (clock, mock) = Clock::mock();
    let rows = Rows::default();
    rows.fill(3, "old");
    let cache = cache(&rows, &clock);
    cache.get(&1).await.expect("get");
    rows.fill(3, "new");
    rows.fail.store(true, Ordering::SeqCst);
    mock.increment(Duration::from_secs(61));
    let stale = cache.get(&1).await.expect("get");
    assert_eq!(stale.status(), CacheStatus::Stale);
    until(|| cache.stats().in_flight == 0).await;
    assert_eq!(rows.batches.lock().len(), 1, "one refresh, failed");
    rows.fail.store(false, Ordering::SeqCst);
    let stale = cache.get(&1).await.expect("get");
    assert_eq!(
        (stale.status(), stale.value().map(String::as_str)),
        (CacheStatus::Stale, Some("old1"))
    );
    until(|| cache.stats().in_flight == 0).await;
    let fresh = cache.get(&1).await.expect("get");
    assert_eq!(
        (fresh.status(), fresh.value().map(String::as_str)),
        (CacheStatus::Hit, Some("new1"))
    );
    assert_eq!(cache.stats().refreshes, 2);
}
