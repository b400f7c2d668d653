//! Breaker + bulkhead layers over a real inner service on a multi-thread
//! runtime: random arrivals, hold times, cancellations (a caller timeout)
//! and panics inside the inner future. Reproduce a failure with
//! `RAMPART_STRESS_SEED=<seed> cargo test -p rampart --test layer stress -- --nocapture`.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rampart::breaker::{BreakerConfig, CircuitBreaker, SlidingWindow};
use rampart::layer::{BulkheadLayer, CircuitBreakerLayer};
use rampart::limit::{Bulkhead, BulkheadConfig};
use rampart::ErrorKind;
use tower::{service_fn, ServiceBuilder, ServiceExt};

const PLANNED: &str = "stress: planned panic";

/// Calls inside the inner service now, and the most ever seen.
#[derive(Default)]
struct HighWater {
    now: AtomicUsize,
    max: AtomicUsize,
}

struct Inside<'a>(&'a HighWater);

impl<'a> Inside<'a> {
    fn enter(hw: &'a HighWater) -> Self {
        let now = hw.now.fetch_add(1, Ordering::SeqCst) + 1;
        hw.max.fetch_max(now, Ordering::SeqCst);
        Inside(hw)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The planned panics are expected by the thousand; any other panic still
/// goes to the default hook.
fn quiet_planned_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&PLANNED) {
            default(info);
        }
    }));
}

/// The bound holds inside the inner service (the slot covers the whole
/// call), every slot and queue place comes back, and the breaker saw
/// exactly the calls that finished or panicked — successes as successes,
/// refusals and panics as failures, cancellations not at all.
#[test]
fn breaker_and_bulkhead_layers_under_random_cancellation_and_panics() {
    const TASKS: usize = 3_000;
    const MAX_CONCURRENT: usize = 6;
    let seed = crate::support::stress_seed(0x1a7e_5eed);
    quiet_planned_panics();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("runtime: {err}"),
    };
    // Never opens: the point is the accounting, not the tripping.
    let breaker = CircuitBreaker::new(
        "stress",
        BreakerConfig {
            window: SlidingWindow::Count { calls: 1_000_000 },
            minimum_calls: 1_000_000,
            consecutive_failures: 0,
            ..BreakerConfig::default()
        },
    );
    let bulkhead = Bulkhead::new(
        "stress",
        BulkheadConfig {
            max_concurrent: MAX_CONCURRENT,
            max_queued: 12,
            max_wait: Duration::from_millis(1),
        },
    );
    let hw = Arc::new(HighWater::default());
    let inner_hw = Arc::clone(&hw);
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .layer(BulkheadLayer::new(bulkhead.clone()))
        .service(service_fn(
            move |(yields, sleeps, panics): (usize, bool, bool)| {
                let hw = Arc::clone(&inner_hw);
                async move {
                    let _inside = Inside::enter(&hw);
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                    if sleeps {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    if panics {
                        std::panic::panic_any(PLANNED);
                    }
                    Ok::<_, std::io::Error>(())
                }
            },
        ));

    // ok, full, queue timeout, cancelled, panicked
    let body = async {
        let counts: Arc<[AtomicUsize; 5]> = Arc::new(Default::default());
        let mut rng = fastrand::Rng::with_seed(seed);
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let svc = svc.clone();
                let counts = Arc::clone(&counts);
                let arrival = Duration::from_micros(rng.u64(0..250_000));
                let deadline = Duration::from_micros(rng.u64(100..5_000));
                let request = (rng.usize(0..20), rng.bool(), rng.u8(0..20) == 0);
                tokio::spawn(async move {
                    tokio::time::sleep(arrival).await;
                    // Caught here, as tower-http's CatchPanicLayer would:
                    // the call's future is dropped after the unwinding.
                    let call = tokio::time::timeout(deadline, svc.oneshot(request));
                    let slot = match AssertUnwindSafe(call).catch_unwind().await {
                        Ok(Ok(Ok(()))) => 0,
                        Ok(Ok(Err(error))) => match error.downcast_ref::<rampart::Error>() {
                            Some(e) if matches!(e.kind(), ErrorKind::BulkheadFull { .. }) => 1,
                            Some(e) if matches!(e.kind(), ErrorKind::BulkheadTimeout { .. }) => 2,
                            _ => panic!("unexpected error {error}"),
                        },
                        Ok(Err(_elapsed)) => 3,
                        Err(_panic) => 4,
                    };
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        for task in tasks {
            if let Err(err) = task.await {
                panic!("task failed: {err}");
            }
        }
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    };
    let outcome =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), body).await });
    let Ok(counts) = outcome else {
        panic!("stress test hung (seed {seed})");
    };
    let [ok, full, timeout, cancelled, panicked] = counts[..] else {
        unreachable!()
    };
    let stats = breaker.stats();
    println!(
        "ok/full/timeout/cancelled/panicked = {counts:?}, high-water {}, breaker {}/{}",
        hw.max.load(Ordering::SeqCst),
        stats.calls,
        stats.failures
    );
    assert!(
        hw.max.load(Ordering::SeqCst) <= MAX_CONCURRENT,
        "seed {seed}"
    );
    assert_eq!(
        (bulkhead.in_flight(), bulkhead.queued()),
        (0, 0),
        "seed {seed}"
    );
    assert_eq!(hw.now.load(Ordering::SeqCst), 0, "seed {seed}");
    assert_eq!(counts.iter().sum::<usize>(), TASKS);
    assert!(
        ok > 0 && panicked > 0 && cancelled > 0,
        "seed {seed}: {counts:?}"
    );
    assert_eq!(
        stats.calls as usize,
        ok + full + timeout + panicked,
        "seed {seed}"
    );
    assert_eq!(
        stats.failures as usize,
        full + timeout + panicked,
        "seed {seed}"
    );
}
