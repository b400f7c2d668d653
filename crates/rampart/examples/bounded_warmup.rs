//! A bounded warm-up: fill a cache from a stream of keys without taking
//! the source down.
//!
//! `cargo run -p rampart --example bounded_warmup`
//!
//! Warms a `TieredCache` from a lazy stream of 20 000 ids, in batches of
//! 500, at most 2 batches at once and 200 000 keys/s, then shows that reads
//! of warmed keys are hits. The "database" counts how many batch queries
//! it saw at once, so the bound is visible in the output. A second run
//! shows the adaptive part: while `pressure` says the source is busy
//! (foreground traffic), the warm-up drops to one batch at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream;
use rampart::cache::{CacheStatus, TieredCache};
use rampart::warm::{warm, WarmConfig, WarmProgress};
use rampart::{BoxError, Error, Loader};
use tokio_util::sync::CancellationToken;

/// A source that answers batch queries after 5 ms and records the most
/// batch queries it ever had in flight.
#[derive(Default)]
struct Products {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    queries: AtomicUsize,
}

#[async_trait]
impl Loader<u64, Arc<str>> for Products {
    async fn load(&self, id: &u64) -> Result<Option<Arc<str>>, BoxError> {
        Ok(self.load_many(&[*id]).await?.remove(id))
    }

    async fn load_many(&self, ids: &[u64]) -> Result<HashMap<u64, Arc<str>>, BoxError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.queries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(ids
            .iter()
            .map(|&id| (id, Arc::from(format!("product {id}"))))
            .collect())
    }
}

/// The cache owns its loader; this wrapper lets the example keep a handle
/// on the counters.
struct Shared(Arc<Products>);

#[async_trait]
impl Loader<u64, Arc<str>> for Shared {
    async fn load(&self, id: &u64) -> Result<Option<Arc<str>>, BoxError> {
        self.0.load(id).await
    }
    async fn load_many(&self, ids: &[u64]) -> Result<HashMap<u64, Arc<str>>, BoxError> {
        self.0.load_many(ids).await
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let products = Arc::new(Products::default());
    let cache: TieredCache<u64, Arc<str>> =
        TieredCache::builder("products", Shared(Arc::clone(&products))).build()?;

    let config = WarmConfig {
        batch_size: 500,
        max_concurrency: 2,
        max_keys_per_sec: Some(200_000),
        max_consecutive_failures: 5,
    };
    // In a real service the keys come from the database (`SELECT id ...`
    // as a stream) or a file; they are pulled only as batches are needed.
    let keys = stream::iter((0..20_000u64).map(Ok::<_, Error>));
    // One batch = one `get_many` on the cache: a miss goes to `load_many`
    // (one query for the batch) and fills the cache.
    let load_batch = |batch: Vec<u64>| {
        let cache = cache.clone();
        async move {
            let answers = cache.get_many(&batch).await;
            Ok(answers.iter().filter(|answer| answer.is_ok()).count() as u64)
        }
    };
    let progress = WarmProgress::default();
    let cancel = CancellationToken::new();
    // No pressure: the warm-up runs at `max_concurrency`.
    let never = || false;
    let report = warm(keys, load_batch, &config, &never, &progress, &cancel).await?;
    println!(
        "warmed {} keys in {} batches in {:.0?}; the source saw {} queries, at most {} at once",
        report.keys_done,
        report.batches,
        report.elapsed,
        products.queries.load(Ordering::SeqCst),
        products.peak.load(Ordering::SeqCst),
    );

    let lookup = cache.get(&12_345).await?;
    assert_eq!(lookup.status(), CacheStatus::Hit);
    println!(
        "get(12345) after the warm-up: {} ({:?})",
        lookup.status(),
        lookup.value()
    );

    // Under pressure (say, foreground p99 is high) the limit halves before
    // each dispatch, down to one batch at a time.
    products.peak.store(0, Ordering::SeqCst);
    let busy = AtomicBool::new(true);
    let pressure = || busy.load(Ordering::Relaxed);
    let keys = stream::iter((20_000..25_000u64).map(Ok::<_, Error>));
    let progress = WarmProgress::default();
    let report = warm(keys, load_batch, &config, &pressure, &progress, &cancel).await?;
    println!(
        "under pressure: warmed {} keys, the source saw at most {} batch at once",
        report.keys_done,
        products.peak.load(Ordering::SeqCst),
    );
    Ok(())
}
