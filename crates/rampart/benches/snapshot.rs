//! Read throughput of a hot-swapped configuration map, three ways, side by
//! side in one run: `Snapshot<HashMap>` (one lock-free load), the bare
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

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Runs `read` `iters` times on each reader thread at once; their wall time.
fn run<R>(iters: u64, read: &Arc<R>) -> Duration
where
    R: Fn() -> u64 + Send + Sync + 'static,
{
    let threads = readers();
    let start = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (read, start) = (Arc::clone(read), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let mut sum = 0u64;
                for _ in 0..iters {
                    sum = sum.wrapping_add(read());
                }
                black_box(sum);
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
    {
        let snapshot = Snapshot::new(1, map(1));
        let reader = snapshot.clone();
        let read = Arc::new(move || reader.load().get(black_box("key7")).copied().unwrap_or(0));
        let _writer = Writer::start(move |v| {
            let _ = snapshot.store(v, map(v));
        });
        group.bench_function("snapshot", |b| b.iter_custom(|iters| run(iters, &read)));
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
        group.bench_function("rwlock_hashmap", |b| {
            b.iter_custom(|iters| run(iters, &read))
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
        group.bench_function("rwlock_arc", |b| b.iter_custom(|iters| run(iters, &read)));
    }
    group.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
