//! The tokio runtime's own metrics, read at scrape time from the runtime
//! that serves: workers, tasks alive, the global queue, and per worker its
//! busy time and parks. `rate(rampart_tokio_worker_busy_seconds_total[1m])`
//! is a worker's busy ratio (1 = never idle).
//!
//! Only tokio's stable metrics, plus one of rampart's own: the blocking
//! threads, counted by the runtime's thread start/stop hooks that `main`
//! installs ([`thread_counter`]; tokio itself reports them only under
//! `--cfg tokio_unstable`, which would change how every crate of the
//! workspace is built). The workers' local queue depths stay out for that
//! reason.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{CounterVec, IntCounterVec, IntGauge, Opts};
use tokio::runtime::Handle;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Threads the runtime has started and not yet stopped (workers and
/// blocking threads), when counted.
static THREADS: AtomicI64 = AtomicI64::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The runtime builder's `on_thread_start` and `on_thread_stop` hooks that
/// count its threads for `rampart_tokio_blocking_threads`.
pub fn thread_counter() -> (
    impl Fn() + Send + Sync + 'static,
    impl Fn() + Send + Sync + 'static,
) {
    COUNTING.store(true, Ordering::Relaxed);
    (
        || {
            THREADS.fetch_add(1, Ordering::Relaxed);
        },
        || {
            THREADS.fetch_sub(1, Ordering::Relaxed);
        },
    )
}

/// Reads `handle`'s metrics at each scrape.
#[derive(Clone)]
pub struct RuntimeCollector {
    handle: Handle,
    descs: Vec<Desc>,
}

const WORKERS: (&str, &str) = ("rampart_tokio_workers", "Tokio worker threads.");
const ALIVE_TASKS: (&str, &str) = ("rampart_tokio_alive_tasks", "Tokio tasks alive now.");
const GLOBAL_QUEUE: (&str, &str) = (
    "rampart_tokio_global_queue_depth",
    "Tasks waiting in the tokio runtime's global (injection) queue.",
);
const BUSY: (&str, &str) = (
    "rampart_tokio_worker_busy_seconds_total",
    "Time each tokio worker spent running tasks; its rate is the worker's busy ratio.",
);
const BLOCKING: (&str, &str) = (
    "rampart_tokio_blocking_threads",
    "Tokio blocking-pool threads alive (threads the runtime started, less its workers).",
);
const PARKS: (&str, &str) = (
    "rampart_tokio_worker_park_total",
    "Times each tokio worker parked (went idle).",
);

fn all() -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    vec![
        (WORKERS.0, WORKERS.1, &[]),
        (ALIVE_TASKS.0, ALIVE_TASKS.1, &[]),
        (GLOBAL_QUEUE.0, GLOBAL_QUEUE.1, &[]),
        (BLOCKING.0, BLOCKING.1, &[]),
        (BUSY.0, BUSY.1, &["worker"]),
        (PARKS.0, PARKS.1, &["worker"]),
    ]
}

impl RuntimeCollector {
    /// A collector for the runtime the caller runs on; `None` outside one.
    pub fn for_current() -> Option<RuntimeCollector> {
        let handle = Handle::try_current().ok()?;
        let descs = all()
            .into_iter()
            .map(|(name, help, labels)| {
                Desc::new(
                    name.to_owned(),
                    help.to_owned(),
                    labels.iter().map(|l| (*l).to_owned()).collect(),
                    std::collections::HashMap::new(),
                )
            })
            .collect::<prometheus::Result<Vec<Desc>>>()
            .ok()?;
        Some(RuntimeCollector { handle, descs })
    }
}

fn gauge(out: &mut Vec<MetricFamily>, (name, help): (&str, &str), value: usize) {
    if let Ok(gauge) = IntGauge::new(name, help) {
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        out.extend(gauge.collect());
    }
}

impl Collector for RuntimeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let m = self.handle.metrics();
        let mut out = Vec::new();
        gauge(&mut out, WORKERS, m.num_workers());
        gauge(&mut out, ALIVE_TASKS, m.num_alive_tasks());
        gauge(&mut out, GLOBAL_QUEUE, m.global_queue_depth());
        // Only where `main` counted the threads (not in a test's runtime).
        if COUNTING.load(Ordering::Relaxed) {
            let alive = usize::try_from(THREADS.load(Ordering::Relaxed)).unwrap_or(0);
            gauge(&mut out, BLOCKING, alive.saturating_sub(m.num_workers()));
        }
        let (Ok(busy), Ok(parks)) = (
            CounterVec::new(Opts::new(BUSY.0, BUSY.1), &["worker"]),
            IntCounterVec::new(Opts::new(PARKS.0, PARKS.1), &["worker"]),
        ) else {
            return out;
        };
        for worker in 0..m.num_workers() {
            let label = worker.to_string();
            busy.with_label_values(&[&label])
                .inc_by(m.worker_total_busy_duration(worker).as_secs_f64());
            parks
                .with_label_values(&[&label])
                .inc_by(m.worker_park_count(worker));
        }
        out.extend(busy.collect());
        out.extend(parks.collect());
        out
    }
}
