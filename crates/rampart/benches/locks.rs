//! The lock lab: one shared map of 1,024 keys read and written by 1 to N
//! threads at 50 / 90 / 99 % reads, behind every way of sharing it —
//! `Mutex` and `RwLock` (std and parking_lot), 64 shards of a std
//! `Mutex<HashMap>` (the source document's session map), copy-on-write
//! through `arc-swap`, and the concurrent maps `scc`, `dashmap` and
//! `papaya` — and a shared counter, atomic against locked. All side by side
//! in one run, so the ratios hold on a loaded machine. `docs/LOCKS.md`
//! holds the figures next to the source document's claims.
//!
//! `cargo bench -p rampart --bench locks` (all of it, a few minutes);
//! `cargo bench -p rampart --bench locks -- map/90` for the 90 % read
//! group alone (the sessions store's choice, see BENCHMARKS.md).
//! `RAMPART_LOCK_THREADS=16` raises the largest thread count (the default
//! is the machine's cores, at least 2). `RAMPART_LOCKS_TABLE=1` prints the
//! interleaved best-of-rounds tables of `docs/LOCKS.md` instead.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

/// Keys in the shared map.
const KEYS: u64 = 1_024;

/// Operations one iteration runs, split across the threads.
const OPS: u64 = 65_536;

/// A shared `u64 → u64` map, however it is protected.
trait SharedMap: Send + Sync + 'static {
    fn get(&self, key: u64) -> Option<u64>;
    fn put(&self, key: u64, value: u64);
}

fn filled() -> HashMap<u64, u64> {
    (0..KEYS).map(|k| (k, k)).collect()
}

struct StdMutex(std::sync::Mutex<HashMap<u64, u64>>);
impl SharedMap for StdMutex {
    fn get(&self, key: u64) -> Option<u64> {
        self.0.lock().ok()?.get(&key).copied()
    }
    fn put(&self, key: u64, value: u64) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(key, value);
        }
    }
}

struct StdRwLock(std::sync::RwLock<HashMap<u64, u64>>);
impl SharedMap for StdRwLock {
    fn get(&self, key: u64) -> Option<u64> {
        self.0.read().ok()?.get(&key).copied()
    }
    fn put(&self, key: u64, value: u64) {
        if let Ok(mut map) = self.0.write() {
            map.insert(key, value);
        }
    }
}

struct PlMutex(parking_lot::Mutex<HashMap<u64, u64>>);
impl SharedMap for PlMutex {
    fn get(&self, key: u64) -> Option<u64> {
        self.0.lock().get(&key).copied()
    }
    fn put(&self, key: u64, value: u64) {
        self.0.lock().insert(key, value);
    }
}

struct PlRwLock(parking_lot::RwLock<HashMap<u64, u64>>);
impl SharedMap for PlRwLock {
    fn get(&self, key: u64) -> Option<u64> {
        self.0.read().get(&key).copied()
    }
    fn put(&self, key: u64, value: u64) {
        self.0.write().insert(key, value);
    }
}

/// The source document's design: 64 buckets, each its own lock, chosen by
/// the key's hash.
struct Sharded64 {
    shards: Vec<std::sync::Mutex<HashMap<u64, u64>>>,
    hasher: foldhash::fast::FixedState,
}
impl Sharded64 {
    fn new() -> Self {
        let mut shards: Vec<HashMap<u64, u64>> = (0..64).map(|_| HashMap::new()).collect();
        let hasher = foldhash::fast::FixedState::default();
        for (k, v) in filled() {
            shards[Self::index(&hasher, k)].insert(k, v);
        }
        Sharded64 {
            shards: shards.into_iter().map(std::sync::Mutex::new).collect(),
            hasher,
        }
    }
    fn index(hasher: &impl BuildHasher, key: u64) -> usize {
        (hasher.hash_one(key) % 64) as usize
    }
    fn shard(&self, key: u64) -> &std::sync::Mutex<HashMap<u64, u64>> {
        &self.shards[Self::index(&self.hasher, key)]
    }
}
impl SharedMap for Sharded64 {
    fn get(&self, key: u64) -> Option<u64> {
        self.shard(key).lock().ok()?.get(&key).copied()
    }
    fn put(&self, key: u64, value: u64) {
        if let Ok(mut map) = self.shard(key).lock() {
            map.insert(key, value);
        }
    }
}

/// Copy-on-write: a read is a lock-free load, a write clones the whole map
/// (the config-snapshot pattern; here to show what it costs under writes).
struct ArcSwapMap(arc_swap::ArcSwap<HashMap<u64, u64>>);
impl SharedMap for ArcSwapMap {
    fn get(&self, key: u64) -> Option<u64> {
        self.0.load().get(&key).copied()
    }
    fn put(&self, key: u64, value: u64) {
        self.0.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(key, value);
            map
        });
    }
}

struct Scc(scc::HashMap<u64, u64>);
impl SharedMap for Scc {
    fn get(&self, key: u64) -> Option<u64> {
        self.0.read_sync(&key, |_, v| *v)
    }
    fn put(&self, key: u64, value: u64) {
        self.0.upsert_sync(key, value);
    }
}

struct Dash(dashmap::DashMap<u64, u64>);
impl SharedMap for Dash {
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key).map(|v| *v)
    }
    fn put(&self, key: u64, value: u64) {
        self.0.insert(key, value);
    }
}

struct Papaya(papaya::HashMap<u64, u64>);
impl SharedMap for Papaya {
    fn get(&self, key: u64) -> Option<u64> {
        self.0.pin().get(&key).copied()
    }
    fn put(&self, key: u64, value: u64) {
        self.0.pin().insert(key, value);
    }
}

fn collect<M: FromIterator<(u64, u64)>>() -> M {
    filled().into_iter().collect()
}

/// Every contender, by name.
fn contenders() -> Vec<(&'static str, Arc<dyn SharedMap>)> {
    vec![
        (
            "std_mutex",
            Arc::new(StdMutex(filled().into())) as Arc<dyn SharedMap>,
        ),
        ("std_rwlock", Arc::new(StdRwLock(filled().into()))),
        ("pl_mutex", Arc::new(PlMutex(filled().into()))),
        ("pl_rwlock", Arc::new(PlRwLock(filled().into()))),
        ("sharded64_std_mutex", Arc::new(Sharded64::new())),
        (
            "arc_swap_cow",
            Arc::new(ArcSwapMap(arc_swap::ArcSwap::from_pointee(filled()))),
        ),
        ("scc", Arc::new(Scc(collect()))),
        ("dashmap", Arc::new(Dash(collect()))),
        ("papaya", Arc::new(Papaya(collect()))),
    ]
}

/// The largest thread count: `RAMPART_LOCK_THREADS`, else the cores (at least 2).
fn max_threads() -> usize {
    std::env::var("RAMPART_LOCK_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(2)
}

/// 1, 2, 4, … up to `max` (and `max` itself).
fn thread_counts(max: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = std::iter::successors(Some(1), |n| Some(n * 2))
        .take_while(|n| *n < max)
        .collect();
    counts.push(max);
    counts
}

/// Runs `per_thread(thread, ops)` on `threads` threads at once, `iters`
/// times, and returns the wall time of the lot: from the first thread's
/// start to the last one's end, each read by the worker itself (thread
/// start excluded: all wait on a barrier first). Timing from the spawning
/// thread instead would be wrong on a loaded machine: descheduled between
/// the barrier and its clock read, it would miss the work it measures.
fn run_threads<F>(threads: usize, iters: u64, per_thread: F) -> Duration
where
    F: Fn(u64, u64) + Sync,
{
    let barrier = std::sync::Barrier::new(threads);
    let ops = OPS * iters / threads as u64;
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, per_thread) = (&barrier, &per_thread);
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    per_thread(t as u64, ops);
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let first = spans.iter().map(|s| s.0).min().expect("a thread");
    let last = spans.iter().map(|s| s.1).max().expect("a thread");
    last - first
}

/// One thread's share: a cheap xorshift picks the key and whether the
/// operation reads, so no shared RNG or modulo bias skews the mix.
fn mixed(map: &dyn SharedMap, seed: u64, ops: u64, read_percent: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..ops {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = x % KEYS;
        if (x >> 32) % 100 < read_percent {
            black_box(map.get(key));
        } else {
            map.put(key, i);
        }
    }
}

fn maps(c: &mut Criterion) {
    let max = max_threads();
    for read_percent in [50u64, 90, 99] {
        let mut group = c.benchmark_group(format!("map/{read_percent}"));
        group.throughput(Throughput::Elements(OPS));
        for threads in thread_counts(max) {
            for (name, map) in contenders() {
                group.bench_with_input(
                    BenchmarkId::new(name, format!("{threads}t")),
                    &threads,
                    |b, &threads| {
                        b.iter_custom(|iters| {
                            run_threads(threads, iters, |t, ops| {
                                mixed(&*map, t + 1, ops, read_percent)
                            })
                        })
                    },
                );
            }
        }
        group.finish();
    }
}

/// The source document's "atomic 80 µs vs lock 850 µs" increment: a shared
/// counter bumped by every thread, atomic against behind a lock.
fn counters(c: &mut Criterion) {
    let mut group = c.benchmark_group("counter");
    group.throughput(Throughput::Elements(OPS));
    for threads in thread_counts(max_threads()) {
        let atomic = AtomicU64::new(0);
        group.bench_function(
            BenchmarkId::new("atomic_fetch_add", format!("{threads}t")),
            |b| {
                b.iter_custom(|iters| {
                    run_threads(threads, iters, |_, ops| {
                        for _ in 0..ops {
                            black_box(&atomic).fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
            },
        );
        let std_locked = std::sync::Mutex::new(0u64);
        group.bench_function(BenchmarkId::new("std_mutex", format!("{threads}t")), |b| {
            b.iter_custom(|iters| {
                run_threads(threads, iters, |_, ops| {
                    for _ in 0..ops {
                        if let Ok(mut n) = black_box(&std_locked).lock() {
                            *n += 1;
                        }
                    }
                })
            })
        });
        let pl_locked = parking_lot::Mutex::new(0u64);
        group.bench_function(BenchmarkId::new("pl_mutex", format!("{threads}t")), |b| {
            b.iter_custom(|iters| {
                run_threads(threads, iters, |_, ops| {
                    for _ in 0..ops {
                        *black_box(&pl_locked).lock() += 1;
                    }
                })
            })
        });
        black_box((atomic.load(Ordering::Relaxed), *pl_locked.lock()));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(700))
        .sample_size(10)
        .without_plots();
    targets = maps, counters
}
/// `RAMPART_LOCKS_TABLE=1`: instead of criterion's one-contender-at-a-time
/// runs, every contender in turn, round after round, keeping each one's
/// best round — on a machine shared with other work, the least disturbed
/// figure, and every contender sees the same background load. Prints
/// markdown tables of M operations/s (the ones in docs/LOCKS.md).
fn interleaved_table() {
    let rounds = 15;
    let counts = thread_counts(max_threads());
    let names: Vec<&str> = contenders().iter().map(|(n, _)| *n).collect();
    println!("| reads | threads | {} |", names.join(" | "));
    println!("|---|---|{}", "---|".repeat(names.len()));
    for read_percent in [50u64, 90, 99] {
        for &threads in &counts {
            let maps = contenders();
            let mut best = vec![0f64; maps.len()];
            for _ in 0..rounds {
                for (i, (_, map)) in maps.iter().enumerate() {
                    let took =
                        run_threads(threads, 8, |t, ops| mixed(&**map, t + 1, ops, read_percent));
                    best[i] = best[i].max((OPS * 8) as f64 / took.as_secs_f64() / 1e6);
                }
            }
            let cells: Vec<String> = best.iter().map(|b| format!("{b:.1}")).collect();
            println!("| {read_percent} % | {threads} | {} |", cells.join(" | "));
        }
    }
    println!();
    println!("| threads | atomic fetch_add | std Mutex | parking_lot Mutex | (M increments/s) |");
    println!("|---|---|---|---|---|");
    for &threads in &counts {
        let atomic = AtomicU64::new(0);
        let std_locked = std::sync::Mutex::new(0u64);
        let pl_locked = parking_lot::Mutex::new(0u64);
        let mut best = [0f64; 3];
        for _ in 0..rounds {
            let runs: [&(dyn Fn(u64) + Sync); 3] = [
                &|ops| {
                    for _ in 0..ops {
                        black_box(&atomic).fetch_add(1, Ordering::Relaxed);
                    }
                },
                &|ops| {
                    for _ in 0..ops {
                        if let Ok(mut n) = black_box(&std_locked).lock() {
                            *n += 1;
                        }
                    }
                },
                &|ops| {
                    for _ in 0..ops {
                        *black_box(&pl_locked).lock() += 1;
                    }
                },
            ];
            for (i, run) in runs.iter().enumerate() {
                let took = run_threads(threads, 8, |_, ops| run(ops));
                best[i] = best[i].max((OPS * 8) as f64 / took.as_secs_f64() / 1e6);
            }
        }
        println!(
            "| {threads} | {:.1} | {:.1} | {:.1} | |",
            best[0], best[1], best[2]
        );
    }
}

fn main() {
    if std::env::var_os("RAMPART_LOCKS_TABLE").is_some() {
        interleaved_table();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
