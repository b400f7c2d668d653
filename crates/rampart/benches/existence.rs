//! The existence filter's cost per miss against what it saves: a check of a
//! key that is not there, an insert, and, through the cache, a missing key
//! answered by the filter against one that goes to the cheapest possible
//! loader (no I/O, `Ok(None)` at once), with an L1 hit for scale. The bare
//! `fastbloom` filter alongside shows what the wrapper (the rebuild
//! hand-over's state load, the statistics) adds per check.
//!
//! `cargo bench -p rampart --bench existence`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion};
use rampart::cache::{CacheConfig, TieredCache};
use rampart::existence::{ExistenceFilter, FilterSize};
use rampart::{BoxError, Loader};

/// Keys that exist: 0..EXISTING. Missing keys are above it.
const EXISTING: u64 = 1_000_000;

const SIZE: FilterSize = FilterSize {
    capacity: EXISTING,
    false_positive_rate: 0.01,
};

/// Answers at once: rows below `EXISTING` exist. The bare alternative to
/// the filter is this load (and its flight, breaker, bulkhead, L1 fill).
struct Rows;

#[async_trait]
impl Loader<u64, u64> for Rows {
    async fn load(&self, key: &u64) -> Result<Option<u64>, BoxError> {
        Ok((*key < EXISTING).then_some(*key))
    }
}

fn cache(filter: Option<ExistenceFilter>) -> TieredCache<u64, u64> {
    let builder = TieredCache::builder("bench", Rows).config(CacheConfig {
        l1_capacity: 1 << 16,
        ttl: Duration::from_secs(3_600),
        negative_ttl: Duration::from_secs(3_600),
        ..CacheConfig::default()
    });
    match filter {
        Some(filter) => builder.existence(filter),
        None => builder,
    }
    .build()
    .expect("valid settings")
}

/// False positives over `trials` keys that were never inserted.
fn false_positive_rate(contains: impl Fn(u64) -> bool, trials: u64) -> f64 {
    let hits = (0..trials)
        .filter(|i| contains(EXISTING * 10 + i * 13))
        .count();
    hits as f64 / trials as f64
}

fn bench(c: &mut Criterion) {
    let filter = ExistenceFilter::from_keys(SIZE, 0..EXISTING).expect("valid size");
    // The crate bare, at the same nominal rate: bytes per key, measured
    // rate, then the same timings.
    let crate_filter = fastbloom::AtomicBloomFilter::with_false_pos(0.01)
        .seed(&7)
        .expected_items(EXISTING as usize);
    for key in 0..EXISTING {
        crate_filter.insert(&key);
    }
    println!(
        "ExistenceFilter: {:.2} bytes/key, false-positive rate {:.4}; bare fastbloom: {:.2} bytes/key, {} hashes, false-positive rate {:.4}",
        filter.stats().bytes as f64 / EXISTING as f64,
        false_positive_rate(|k| filter.may_contain(&k), 1_000_000),
        crate_filter.num_bits() as f64 / 8.0 / EXISTING as f64,
        crate_filter.num_hashes(),
        false_positive_rate(|k| crate_filter.contains(&k), 1_000_000),
    );
    let mut group = c.benchmark_group("existence");
    let mut missing = EXISTING;
    group.bench_function("check_absent", |b| {
        b.iter(|| {
            missing += 1;
            black_box(filter.may_contain(&missing))
        })
    });
    let mut present = 0;
    group.bench_function("check_present", |b| {
        b.iter(|| {
            present = (present + 7_919) % EXISTING;
            black_box(filter.may_contain(&present))
        })
    });
    let mut missing_c = EXISTING;
    group.bench_function("fastbloom_check_absent", |b| {
        b.iter(|| {
            missing_c += 1;
            black_box(crate_filter.contains(&missing_c))
        })
    });
    let mut key_c = 0;
    group.bench_function("fastbloom_insert_known", |b| {
        b.iter(|| {
            key_c = (key_c + 7_919) % EXISTING;
            crate_filter.insert(&key_c)
        })
    });
    let mut key = 0;
    group.bench_function("insert_known", |b| {
        b.iter(|| {
            key = (key + 7_919) % EXISTING;
            filter.insert(&key)
        })
    });

    // Through the cache, each call run to completion on one runtime (a
    // load needs its timers): the same harness for all three.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Through the cache: every iteration a missing key never asked before,
    // so negative caching cannot help (the penetration storm).
    let screened = cache(Some(filter.clone()));
    let next = AtomicU64::new(EXISTING);
    group.bench_function("cache_missing_key_filtered", |b| {
        b.iter(|| {
            let key = next.fetch_add(1, Ordering::Relaxed);
            black_box(runtime.block_on(screened.get(&key)))
        })
    });
    let bare = cache(None);
    group.bench_function("cache_missing_key_loaded", |b| {
        b.iter(|| {
            let key = next.fetch_add(1, Ordering::Relaxed);
            black_box(runtime.block_on(bare.get(&key)))
        })
    });
    let warm = 42u64;
    let _ = runtime.block_on(screened.get(&warm));
    group.bench_function("cache_hit", |b| {
        b.iter(|| black_box(runtime.block_on(screened.get(&warm))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
