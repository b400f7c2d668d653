//! The cache's hit path against the bare L1 map a user would otherwise
//! use, and the L1 crate choice (quick_cache vs moka), side by side in one
//! run.
//!
//! `cargo bench -p rampart --bench cache`

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::FutureExt;
use rampart::cache::{CacheConfig, Lookup, TieredCache};
use rampart::clock::Clock;
use rampart::{BoxError, Loader};

const KEYS: u64 = 100_000;
const OPS: usize = 1 << 16;

/// Values as a service holds them: shared bytes, cheap to clone.
type Value = Arc<str>;

struct Rows;

#[async_trait]
impl Loader<u64, Value> for Rows {
    async fn load(&self, key: &u64) -> Result<Option<Value>, BoxError> {
        Ok(Some(Arc::from(format!(
            "{{\"id\":{key},\"name\":\"user {key}\"}}"
        ))))
    }
}

/// A Zipf(0.99) key sequence over `KEYS` keys: a few hot keys, a long tail.
fn zipf_keys(n: usize, seed: u64) -> Vec<u64> {
    let weights: Vec<f64> = (1..=KEYS).map(|r| 1.0 / (r as f64).powf(0.99)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| {
            let u = rng.f64();
            cdf.partition_point(|&c| c < u).min(KEYS as usize - 1) as u64
        })
        .collect()
}

fn tiered(clock: Clock) -> TieredCache<u64, Value> {
    let cache = TieredCache::builder("bench", Rows)
        .config(CacheConfig {
            l1_capacity: KEYS as usize * 2,
            ttl: Duration::from_secs(3_600),
            ..CacheConfig::default()
        })
        .clock(clock)
        .build()
        .expect("cache");
    // Fill through the real miss path, no runtime needed for a ready loader.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for k in 0..KEYS {
            cache.get(&k).await.expect("fill");
        }
    });
    cache
}

fn bare_quick_cache() -> quick_cache::sync::Cache<u64, Value> {
    let l1 = quick_cache::sync::Cache::new(KEYS as usize * 2);
    for k in 0..KEYS {
        l1.insert(
            k,
            Arc::from(format!("{{\"id\":{k},\"name\":\"user {k}\"}}")),
        );
    }
    l1
}

fn bare_moka() -> moka::sync::Cache<u64, Value> {
    let l1 = moka::sync::Cache::new(KEYS * 2);
    for k in 0..KEYS {
        l1.insert(
            k,
            Arc::from(format!("{{\"id\":{k},\"name\":\"user {k}\"}}")),
        );
    }
    l1.run_pending_tasks();
    l1
}

/// What a user writing a TTL cache on the bare crate would store: the value
/// and its deadline, checked on every get.
type WithDeadline = (rampart::clock::Instant, Value);

fn value_len(lookup: Option<Lookup<Value>>) -> usize {
    lookup.and_then(|l| l.value().map(|v| v.len())).unwrap_or(0)
}

/// Polls `get`'s future once, as a runtime polls one request's handler
/// (`futures_util`'s `now_or_never` is not inlined around the poll, which
/// would bill its call to the cache): the answer if it was ready.
#[inline(always)]
fn poll_once(
    get: impl Future<Output = Result<Lookup<Value>, rampart::Error>>,
) -> Option<Lookup<Value>> {
    let mut get = std::pin::pin!(get);
    match get.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(answer) => answer.ok(),
        Poll::Pending => None,
    }
}

/// Reads every key with a synchronous `read` (which answers the value's
/// length, what a handler consumes) and sums the lengths.
fn sum_read(keys: &[u64], read: impl FnMut(&u64) -> usize) -> usize {
    black_box(keys.iter().map(read).sum())
}

/// Reads every key with `cache.get(..).await`, all in one async block (so
/// the loop's own state lives in the future across every await).
fn sum_awaited(cache: &TieredCache<u64, Value>, keys: &[u64]) -> usize {
    async {
        let mut total = 0;
        for k in keys {
            total += value_len(cache.get(k).await.ok());
        }
        black_box(total)
    }
    .now_or_never()
    .expect("every key is an L1 hit")
}

/// A pass over the key sequence; returns its wall time.
type Pass<'a> = &'a dyn Fn(&[u64]) -> Duration;

/// Min-of-rounds ns/op for each contender, measured interleaved (round
/// robin) so that this VM's drifting noise hits them all alike; criterion's
/// one-after-the-other runs below give the distributions.
fn interleaved_report(label: &str, keys: &[u64], contenders: &[(&str, Pass<'_>)]) {
    let mut best = vec![f64::MAX; contenders.len()];
    for _ in 0..40 {
        for (i, (_, pass)) in contenders.iter().enumerate() {
            let took = pass(keys);
            best[i] = best[i].min(took.as_secs_f64() * 1e9 / keys.len() as f64);
        }
    }
    println!("interleaved {label} (min of 40 rounds, ns/op; throughput ratio vs the first):");
    for ((name, _), ns) in contenders.iter().zip(&best) {
        println!("  {name:<36} {ns:>7.1} ns   ratio {:.2}", best[0] / ns);
    }
}

fn hit_path_report(_: &mut Criterion) {
    let clock = Clock::coarse();
    let with_deadline = quick_cache::sync::Cache::<u64, WithDeadline>::new(KEYS as usize * 2);
    let deadline = clock.now() + Duration::from_secs(3_600);
    let quick = bare_quick_cache();
    for k in 0..KEYS {
        with_deadline.insert(k, (deadline, quick.get(&k).expect("filled")));
    }
    let coarse = tiered(Clock::coarse());
    // Every pass runs inside one async block, as a handler would: `get` is
    // awaited there, the bare map is called there.
    let timed = |pass: &dyn Fn()| {
        let start = Instant::now();
        pass();
        start.elapsed()
    };
    // Each contender consumes what a handler would, the value's length, so
    // no contender pays for spilling a whole answer to memory.
    let contenders: [(&str, Pass<'_>); 5] = [
        ("bare quick_cache get", &|keys| {
            timed(&|| {
                sum_read(keys, |k| quick.get(k).map_or(0, |v| v.len()));
            })
        }),
        ("bare quick_cache get + TTL check", &|keys| {
            timed(&|| {
                sum_read(keys, |k| {
                    with_deadline
                        .get(k)
                        .filter(|(d, _)| clock.now() < *d)
                        .map_or(0, |(_, v)| v.len())
                });
            })
        }),
        ("TieredCache::get(..).await", &|keys| {
            timed(&|| {
                sum_awaited(&coarse, keys);
            })
        }),
        ("TieredCache::get, a future per get", &|keys| {
            // Each get polled once on its own, as a runtime polls one
            // request's handler: no loop state lives across an await.
            timed(&|| {
                sum_read(keys, |k| value_len(poll_once(coarse.get(k))));
            })
        }),
        ("TieredCache::get_cached", &|keys| {
            timed(&|| {
                sum_read(keys, |k| value_len(coarse.get_cached(k)));
            })
        }),
    ];
    interleaved_report(
        "hit path, 100k keys, Zipf 0.99",
        &zipf_keys(OPS, 7),
        &contenders,
    );
    let hot: Vec<u64> = (0..OPS as u64).map(|i| i % 1_000).collect();
    interleaved_report("hit path, 1k hot keys (in CPU cache)", &hot, &contenders);
}

/// One thread: every get is a hit.
fn hit_path(c: &mut Criterion) {
    let keys = zipf_keys(OPS, 7);
    let quick = bare_quick_cache();
    let moka = bare_moka();
    let coarse = tiered(Clock::coarse());
    let precise = tiered(Clock::new());

    let mut group = c.benchmark_group("hit_path");
    group.throughput(Throughput::Elements(OPS as u64));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("bare_quick_cache_get", |b| {
        b.iter(|| sum_read(&keys, |k| quick.get(k).map_or(0, |v| v.len())))
    });
    group.bench_function("tiered_get_coarse_clock", |b| {
        b.iter(|| sum_awaited(&coarse, &keys))
    });
    group.bench_function("tiered_get_cached_coarse_clock", |b| {
        b.iter(|| sum_read(&keys, |k| value_len(coarse.get_cached(k))))
    });
    group.bench_function("tiered_get_precise_clock", |b| {
        b.iter(|| sum_awaited(&precise, &keys))
    });
    group.bench_function("bare_moka_get", |b| {
        b.iter(|| sum_read(&keys, |k| moka.get(k).map_or(0, |v| v.len())))
    });
    group.finish();
}

/// Runs `op` over the key sequence on `threads` threads at once and returns
/// the wall time of the slowest, for criterion's `iter_custom`.
fn parallel(threads: usize, iters: u64, keys: &[u64], op: &(dyn Fn(u64) + Sync)) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for i in 0..iters {
                    let offset = (t * 7_919 + i as usize) % keys.len();
                    for k in keys[offset..].iter().chain(&keys[..offset]) {
                        op(*k);
                    }
                }
            });
        }
    });
    start.elapsed()
}

/// Two threads hitting the same hot keys: contention on the L1's shards.
fn hit_path_two_threads(c: &mut Criterion) {
    let keys = zipf_keys(OPS, 11);
    let quick = bare_quick_cache();
    let moka = bare_moka();
    let coarse = tiered(Clock::coarse());
    let mut group = c.benchmark_group("hit_path_2_threads");
    group.throughput(Throughput::Elements(2 * OPS as u64));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("bare_quick_cache_get", |b| {
        b.iter_custom(|iters| {
            parallel(2, iters, &keys, &|k| {
                black_box(quick.get(&k).map_or(0, |v| v.len()));
            })
        })
    });
    group.bench_function("tiered_get_coarse_clock", |b| {
        b.iter_custom(|iters| {
            parallel(2, iters, &keys, &|k| {
                black_box(value_len(poll_once(coarse.get(&k))));
            })
        })
    });
    group.bench_function("tiered_get_cached_coarse_clock", |b| {
        b.iter_custom(|iters| {
            parallel(2, iters, &keys, &|k| {
                black_box(value_len(coarse.get_cached(&k)));
            })
        })
    });
    group.bench_function("bare_moka_get", |b| {
        b.iter_custom(|iters| {
            parallel(2, iters, &keys, &|k| {
                black_box(moka.get(&k).map_or(0, |v| v.len()));
            })
        })
    });
    group.finish();
}

/// The L1 choice under eviction: capacity a tenth of the key space, Zipf
/// reads, insert on miss. Prints each crate's hit ratio once.
fn l1_under_eviction(c: &mut Criterion) {
    let keys = zipf_keys(OPS * 4, 13);
    let capacity = (KEYS / 10) as usize;
    let value: Value = Arc::from("{\"id\":0}");
    let quick = quick_cache::sync::Cache::<u64, Value>::new(capacity);
    let moka = moka::sync::Cache::<u64, Value>::new(capacity as u64);
    let ratio = |get: &dyn Fn(u64) -> bool| {
        let hits = keys.iter().filter(|k| get(**k)).count();
        hits as f64 / keys.len() as f64
    };
    let quick_ratio = ratio(&|k| {
        let hit = quick.get(&k).is_some();
        if !hit {
            quick.insert(k, value.clone());
        }
        hit
    });
    let moka_ratio = ratio(&|k| {
        let hit = moka.get(&k).is_some();
        if !hit {
            moka.insert(k, value.clone());
        }
        hit
    });
    println!("l1_under_eviction hit ratio (Zipf 0.99, capacity 10% of keys): quick_cache {quick_ratio:.3}, moka {moka_ratio:.3}");

    let mut group = c.benchmark_group("l1_under_eviction");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("quick_cache_get_or_insert", |b| {
        b.iter(|| {
            for k in &keys {
                if quick.get(k).is_none() {
                    quick.insert(*k, value.clone());
                }
            }
        })
    });
    group.bench_function("moka_get_or_insert", |b| {
        b.iter(|| {
            for k in &keys {
                if moka.get(k).is_none() {
                    moka.insert(*k, value.clone());
                }
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).sample_size(20);
    targets = hit_path_report, hit_path, hit_path_two_threads, l1_under_eviction
}
criterion_main!(benches);
