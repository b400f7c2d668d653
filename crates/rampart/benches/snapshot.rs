//! Read throughput of a hot-swapped configuration map, four ways, side by
//! side in one run: `Snapshot<HashMap>` (one lock-free load; and through
//! each reader thread's own cached `Snapshot::reader()`), the bare
//! `RwLock<HashMap>` (read lock, look up) and `RwLock<Arc<HashMap>>` (read
//! lock, clone the `Arc`, unlock, look up: the usual "swap an Arc" idiom).
//! Each read looks one key up. Readers run on `READERS` threads (2 by
//! default, `SNAPSHOT_BENCH_READERS=16` where the cores are at hand) while
//! a writer thread replaces the whole map once a second.
//!
//! `cargo bench -p rampart --bench snapshot`
//!
//! Criterion's time per iteration is the wall time of one read on each
//! reader thread at once (the batch is split over the threads), so the
//! ratio of two lines is the ratio of their throughputs.
//!
//! Each read is the same work: one lookup of one key. The snapshot's read
//! is `Snapshot::load()`, arc-swap's guard (a thread-local debt slot, no
//! shared reference count touched), not `load_full()`'s `Arc` clone.
//!
//! Whether the readers really ran at the same time decides what the lines
//! mean: the locks' cost is a shared counter's cache line moving between
//! cores, which only happens when two readers are on cores together. So
//! after the group each line prints its readers' on-CPU share (time on a
//! core, from `/proc/thread-self/schedstat`, over wall time): near 100 %
//! the readers overlapped; near `cores free / readers` they mostly took
//! turns, and the ratios understate the locks' cost.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::snapshot::Snapshot;

type Map = HashMap<String, u64>;

fn map(version: u64) -> Map {
    (0..32).map(|i| (format!("key{i}"), version + i)).collect()
}

fn readers() -> usize {
    std::env::var("SNAPSHOT_BENCH_READERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

/// A thread replacing the value once a second until dropped: one write a
/// second across the whole measurement of a line, not per sample.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Writer {
    fn start(write: impl Fn(u64) + Send + 'static) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut version = 1;
                let mut next = Instant::now() + Duration::from_secs(1);
                while !stop.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        version += 1;
                        write(version);
                        next += Duration::from_secs(1);
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Writer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// This thread's time on a core so far (Linux; `None` elsewhere).
fn on_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// The reader threads' time on a core and in total, over a line's runs.
#[derive(Default)]
struct Overlap {
    on_cpu_ns: AtomicU64,
    wall_ns: AtomicU64,
}

impl Overlap {
    fn add(&self, on_cpu: Duration, wall: Duration) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.on_cpu_ns.fetch_add(ns(on_cpu), Ordering::Relaxed);
        self.wall_ns.fetch_add(ns(wall), Ordering::Relaxed);
    }

    fn report(&self, line: &str) {
        let (cpu, wall) = (
            self.on_cpu_ns.load(Ordering::Relaxed),
            self.wall_ns.load(Ordering::Relaxed),
        );
        if wall > 0 && cpu > 0 {
            println!(
                "{line}: readers on a core {:.0} % of their wall time ({} readers)",
                100.0 * cpu as f64 / wall as f64,
                readers()
            );
        }
    }
}

/// Runs `read` `iters` times on each reader thread at once; their wall time.
fn run<R>(iters: u64, read: &Arc<R>, overlap: &Arc<Overlap>) -> Duration
where
    R: Fn() -> u64 + Send + Sync + 'static,
{
    let read = Arc::clone(read);
    run_each(
        iters,
        &Arc::new(move || {
            let read = Arc::clone(&read);
            move || read()
        }),
        overlap,
    )
}

/// Runs a reader made by `make` on each reader thread (its own state, e.g.
/// a cached handle), `iters` reads each, all at once; their wall time.
fn run_each<M, R>(iters: u64, make: &Arc<M>, overlap: &Arc<Overlap>) -> Duration
where
    M: Fn() -> R + Send + Sync + 'static,
    R: FnMut() -> u64,
{
    let threads = readers();
    let start = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (make, start, overlap) =
                (Arc::clone(make), Arc::clone(&start), Arc::clone(overlap));
            thread::spawn(move || {
                let mut read = make();
                start.wait();
                let (began, cpu_before) = (Instant::now(), on_cpu());
                let mut sum = 0u64;
                for _ in 0..iters {
                    sum = sum.wrapping_add(read());
                }
                black_box(sum);
                if let (Some(before), Some(after)) = (cpu_before, on_cpu()) {
                    overlap.add(after.saturating_sub(before), began.elapsed());
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for h in handles {
        h.join().expect("reader");
    }
    began.elapsed()
}

fn reads(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("config_read_{}_threads", readers()));
    group.measurement_time(Duration::from_secs(5));
    let overlaps: [(&str, Arc<Overlap>); 4] = [
        ("snapshot", Arc::default()),
        ("snapshot_reader", Arc::default()),
        ("rwlock_hashmap", Arc::default()),
        ("rwlock_arc", Arc::default()),
    ];
    {
        let snapshot = Snapshot::new(1, map(1));
        let reader = snapshot.clone();
        let read = Arc::new(move || reader.load().get(black_box("key7")).copied().unwrap_or(0));
        let _writer = Writer::start(move |v| {
            let _ = snapshot.store(v, map(v));
        });
        let overlap = &overlaps[0].1;
        group.bench_function("snapshot", |b| {
            b.iter_custom(|iters| run(iters, &read, overlap))
        });
    }
    {
        // Each reader thread with its own cached handle (`reader()`).
        let snapshot = Snapshot::new(1, map(1));
        let source = snapshot.clone();
        let make = Arc::new(move || {
            let mut reader = source.reader();
            move || reader.load().get(black_box("key7")).copied().unwrap_or(0)
        });
        let _writer = Writer::start(move |v| {
            let _ = snapshot.store(v, map(v));
        });
        let overlap = &overlaps[1].1;
        group.bench_function("snapshot_reader", |b| {
            b.iter_custom(|iters| run_each(iters, &make, overlap))
        });
    }
    {
        let shared = Arc::new(RwLock::new(map(1)));
        let reader = Arc::clone(&shared);
        let read = Arc::new(move || {
            let guard = reader.read().unwrap_or_else(|e| e.into_inner());
            guard.get(black_box("key7")).copied().unwrap_or(0)
        });
        let _writer =
            Writer::start(move |v| *shared.write().unwrap_or_else(|e| e.into_inner()) = map(v));
        let overlap = &overlaps[2].1;
        group.bench_function("rwlock_hashmap", |b| {
            b.iter_custom(|iters| run(iters, &read, overlap))
        });
    }
    {
        let shared = Arc::new(RwLock::new(Arc::new(map(1))));
        let reader = Arc::clone(&shared);
        let read = Arc::new(move || {
            let current = Arc::clone(&reader.read().unwrap_or_else(|e| e.into_inner()));
            current.get(black_box("key7")).copied().unwrap_or(0)
        });
        let _writer = Writer::start(move |v| {
            *shared.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map(v));
        });
        let overlap = &overlaps[3].1;
        group.bench_function("rwlock_arc", |b| {
            b.iter_custom(|iters| run(iters, &read, overlap))
        });
    }
    group.finish();
    for (line, overlap) in &overlaps {
        overlap.report(line);
    }
}

criterion_group!(benches, reads);
criterion_main!(benches);
