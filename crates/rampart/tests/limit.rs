//! Tests for `rampart::limit`: bulkhead, retry budget, backoff.

mod support;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use rampart::clock::Clock;
use rampart::limit::{
    Backoff, Bulkhead, BulkheadConfig, BulkheadPermit, RetryBudget, RetryBudgetConfig,
};
use rampart::{Error, ErrorKind};

// ---------------------------------------------------------------- helpers

/// Counts calls running at the "source" and remembers the most at once.
#[derive(Default)]
struct HighWater {
    running: AtomicUsize,
    max: AtomicUsize,
}

impl HighWater {
    fn enter(&self) {
        // SeqCst: test-only; the strongest order keeps the reasoning trivial.
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }
    fn exit(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

fn config(max_concurrent: usize, max_queued: usize, max_wait: Duration) -> BulkheadConfig {
    BulkheadConfig {
        max_concurrent,
        max_queued,
        max_wait,
    }
}

/// Polls `fut` exactly once, with the test task's real waker.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.poll_unpin(cx))).await
}

/// Yields to the scheduler until `cond` holds (bounded, so a bug fails the
/// test instead of hanging it).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("timed out waiting until {what}");
}

fn expect_permit(result: Result<BulkheadPermit, Error>) -> BulkheadPermit {
    match result {
        Ok(permit) => permit,
        Err(err) => panic!("expected a permit, got {err:?}"),
    }
}

// --------------------------------------------------------------- bulkhead

/// 500 tasks through an 8-slot bulkhead: at most 8 ever run at the source at
/// once, the bound is actually reached (so the test could see a violation),
/// and every task gets through.
#[tokio::test(start_paused = true)]
async fn bulkhead_never_exceeds_max_concurrent() {
    let bulkhead = Bulkhead::new("db", config(8, 1_000, Duration::from_secs(3600)));
    let hw = Arc::new(HighWater::default());
    let mut rng = fastrand::Rng::with_seed(7);
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let (bulkhead, hw) = (bulkhead.clone(), Arc::clone(&hw));
            let hold = Duration::from_micros(rng.u64(0..5_000));
            tokio::spawn(async move {
                bulkhead
                    .run(async {
                        hw.enter();
                        tokio::time::sleep(hold).await;
                        tokio::task::yield_now().await;
                        hw.exit();
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await, Ok(Ok(()))));
    }
    assert_eq!(hw.max(), 8, "high-water mark");
    assert_eq!(bulkhead.in_flight(), 0);
    assert_eq!(bulkhead.queued(), 0);
}

/// With every slot taken and the queue full, `acquire` fails with
/// `BulkheadFull` on its first poll (no waiting), carrying the bounds;
/// `try_acquire` fails the same way and never queues.
#[tokio::test(start_paused = true)]
async fn bulkhead_full_queue_rejects_immediately() {
    let bulkhead = Bulkhead::new("db", config(1, 2, Duration::from_secs(60)));
    let held = expect_permit(bulkhead.try_acquire());
    assert_eq!(bulkhead.in_flight(), 1);

    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let bulkhead = bulkhead.clone();
            tokio::spawn(async move { bulkhead.acquire().await.map(drop) })
        })
        .collect();
    until("two callers queue", || bulkhead.queued() == 2).await;

    let before = tokio::time::Instant::now();
    match bulkhead
        .acquire()
        .now_or_never()
        .map(|r| r.map_err(Error::into_kind))
    {
        Some(Err(ErrorKind::BulkheadFull {
            name,
            max_concurrent,
            max_queued,
        })) => {
            assert_eq!(&*name, "db");
            assert_eq!((max_concurrent, max_queued), (1, 2));
        }
        other => panic!("expected an immediate BulkheadFull, got {other:?}"),
    }
    assert_eq!(
        tokio::time::Instant::now(),
        before,
        "rejection must not wait"
    );
    assert!(matches!(
        bulkhead.try_acquire().map_err(Error::into_kind),
        Err(ErrorKind::BulkheadFull { .. })
    ));
    assert_eq!(
        bulkhead.queued(),
        2,
        "rejected callers never join the queue"
    );

    drop(held);
    for waiter in waiters {
        assert!(matches!(waiter.await, Ok(Ok(()))));
    }
    assert_eq!((bulkhead.in_flight(), bulkhead.queued()), (0, 0));
}

/// A queued caller gives up after exactly `max_wait` and reports it.
#[tokio::test(start_paused = true)]
async fn bulkhead_queue_wait_times_out() {
    let max_wait = Duration::from_millis(150);
    let bulkhead = Bulkhead::new("db", config(1, 4, max_wait));
    let _held = expect_permit(bulkhead.acquire().await);

    let start = tokio::time::Instant::now();
    match bulkhead.acquire().await.map_err(Error::into_kind) {
        Err(ErrorKind::BulkheadTimeout { name, waited }) => {
            assert_eq!(&*name, "db");
            assert_eq!(waited, max_wait);
        }
        other => panic!("expected BulkheadTimeout, got {other:?}"),
    }
    assert_eq!(start.elapsed(), max_wait);
    assert_eq!(bulkhead.queued(), 0, "a timed-out caller leaves the queue");
    assert_eq!(bulkhead.in_flight(), 1);
}

/// A waiter whose `acquire` future is dropped (or whose task is aborted)
/// gives its queue place back, so the next caller can queue instead of
/// being rejected.
#[tokio::test(start_paused = true)]
async fn bulkhead_cancelled_waiter_frees_its_queue_place() {
    let bulkhead = Bulkhead::new("db", config(1, 1, Duration::from_secs(60)));
    let held = expect_permit(bulkhead.try_acquire());

    // Dropped future.
    let mut waiting = Box::pin(bulkhead.acquire());
    assert!(poll_once(&mut waiting).await.is_pending());
    assert_eq!(bulkhead.queued(), 1);
    assert!(matches!(
        bulkhead
            .acquire()
            .now_or_never()
            .map(|r| r.map_err(Error::into_kind)),
        Some(Err(ErrorKind::BulkheadFull { .. }))
    ));
    drop(waiting);
    assert_eq!(bulkhead.queued(), 0);

    // Aborted task.
    let task = {
        let bulkhead = bulkhead.clone();
        tokio::spawn(async move { bulkhead.acquire().await.map(drop) })
    };
    until("the task queues", || bulkhead.queued() == 1).await;
    task.abort();
    match task.await {
        Err(err) => assert!(err.is_cancelled()),
        Ok(result) => panic!("aborted task finished: {result:?}"),
    }
    assert_eq!(bulkhead.queued(), 0);

    // The place is usable again, and the slot passes to the new waiter.
    let mut waiting = Box::pin(bulkhead.acquire());
    assert!(poll_once(&mut waiting).await.is_pending());
    assert_eq!(bulkhead.queued(), 1);
    drop(held);
    let _permit = expect_permit(waiting.await);
    assert_eq!((bulkhead.in_flight(), bulkhead.queued()), (1, 0));
}

/// A holder that panics (inside `run`, or holding a bare permit) releases
/// its slot during unwinding: the next acquire succeeds at once.
#[tokio::test(start_paused = true)]
async fn bulkhead_panicking_holder_releases_its_slot() {
    let bulkhead = Bulkhead::new("db", config(1, 0, Duration::ZERO));

    let task = {
        let bulkhead = bulkhead.clone();
        tokio::spawn(async move {
            let _permit = expect_permit(bulkhead.acquire().await);
            panic!("holder panics");
        })
    };
    assert!(matches!(task.await, Err(err) if err.is_panic()));
    assert_eq!(bulkhead.in_flight(), 0);
    drop(expect_permit(bulkhead.try_acquire()));

    let task = {
        let bulkhead = bulkhead.clone();
        tokio::spawn(async move { bulkhead.run(async { panic!("run panics") }).await })
    };
    assert!(matches!(task.await, Err(err) if err.is_panic()));
    assert_eq!(bulkhead.in_flight(), 0);
    assert!(matches!(
        bulkhead.acquire().now_or_never(),
        Some(Ok(_permit))
    ));
}

#[test]
fn bulkhead_validate_names_the_field() {
    assert_eq!(BulkheadConfig::default().validate(), Ok(()));
    let Err(msg) = config(0, 1, Duration::from_secs(1)).validate() else {
        panic!("max_concurrent 0 accepted");
    };
    assert!(msg.contains("max_concurrent"), "{msg}");
    let Err(msg) = config(usize::MAX, 1, Duration::from_secs(1)).validate() else {
        panic!("max_concurrent usize::MAX accepted");
    };
    assert!(msg.contains("max_concurrent"), "{msg}");
    // Zero queue and zero wait are meaningful ("reject rather than wait").
    assert_eq!(config(1, 0, Duration::ZERO).validate(), Ok(()));

    let bulkhead = Bulkhead::new("db", BulkheadConfig::default());
    assert_eq!(bulkhead.name(), "db");
    assert_eq!(bulkhead.config(), BulkheadConfig::default());
    // An out-of-range bound is clamped instead of panicking in `new`.
    let huge = Bulkhead::new("huge", config(usize::MAX, 1, Duration::ZERO));
    assert!(huge.config().max_concurrent < usize::MAX);
    assert_eq!(huge.in_flight(), 0);
}

/// Thousands of tasks on a multi-thread runtime with random hold times and
/// random cancellation. The bound holds, the gauges return to zero, and
/// nothing hangs. Reproduce with `RAMPART_STRESS_SEED=<seed>`.
#[test]
fn bulkhead_stress_random_holds_and_cancellation() {
    const TASKS: usize = 4_000;
    const MAX_CONCURRENT: usize = 8;
    let seed = support::stress_seed(0x5eed_b01d);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("runtime: {err}"),
    };
    let body = async {
        let bulkhead = Bulkhead::new(
            "stress",
            config(MAX_CONCURRENT, 16, Duration::from_millis(1)),
        );
        let hw = Arc::new(HighWater::default());
        let counts: Arc<[AtomicUsize; 4]> = Arc::new(Default::default());
        let mut rng = fastrand::Rng::with_seed(seed);
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (bulkhead, hw, counts) =
                    (bulkhead.clone(), Arc::clone(&hw), Arc::clone(&counts));
                // Arrivals spread over ~0.3 s so slots, queue, timeouts and
                // cancellations all see traffic, not one burst of rejections.
                let arrival = Duration::from_micros(rng.u64(0..300_000));
                let deadline = Duration::from_micros(rng.u64(100..6_000));
                let yields = rng.usize(0..20);
                let sleeps = rng.bool();
                tokio::spawn(async move {
                    tokio::time::sleep(arrival).await;
                    let work = async {
                        let _permit = bulkhead.acquire().await?;
                        hw.enter();
                        // Leaves the count even when the timeout below drops
                        // this future mid-hold.
                        struct Exit<'a>(&'a HighWater);
                        impl Drop for Exit<'_> {
                            fn drop(&mut self) {
                                self.0.exit();
                            }
                        }
                        let _exit = Exit(&hw);
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                        if sleeps {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Ok::<(), Error>(())
                    };
                    let slot = match tokio::time::timeout(deadline, work).await {
                        Ok(Ok(())) => 0,
                        Ok(Err(e)) if matches!(e.kind(), ErrorKind::BulkheadFull { .. }) => 1,
                        Ok(Err(e)) if matches!(e.kind(), ErrorKind::BulkheadTimeout { .. }) => 2,
                        Ok(Err(err)) => panic!("unexpected error {err:?}"),
                        Err(_cancelled) => 3,
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
        let counts: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        (hw.max(), bulkhead.in_flight(), bulkhead.queued(), counts)
    };
    let outcome =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(20), body).await });
    let Ok((max, in_flight, queued, counts)) = outcome else {
        panic!("stress test hung (seed {seed})");
    };
    println!("ok/full/timeout/cancelled = {counts:?}, high-water {max}");
    assert!(max <= MAX_CONCURRENT, "high-water {max} (seed {seed})");
    assert_eq!((in_flight, queued), (0, 0), "seed {seed}");
    assert_eq!(counts.iter().sum::<usize>(), TASKS);
    assert!(counts[0] > 0, "no task got through (seed {seed})");
}

// ----------------------------------------------------------- retry budget

fn budget(window_secs: u64, min_retries_per_sec: u32, retry_ratio: f64) -> RetryBudgetConfig {
    RetryBudgetConfig {
        window: Duration::from_secs(window_secs),
        min_retries_per_sec,
        retry_ratio,
    }
}

/// Withdraws until refused; returns how many were allowed.
fn drain(budget: &RetryBudget) -> u64 {
    let mut taken = 0;
    while budget.withdraw().is_ok() {
        taken += 1;
        assert!(taken <= 1_000_000, "budget never runs out");
    }
    taken
}

/// With no requests at all, exactly `min_retries_per_sec × window_secs`
/// retries are allowed, then `RetryBudgetExhausted`.
#[test]
fn retry_budget_floor_without_requests() {
    let (clock, _mock) = Clock::mock();
    let budget = RetryBudget::with_clock(budget(10, 10, 0.2), clock);
    assert_eq!(budget.available(), 100);
    for _ in 0..100 {
        assert!(budget.withdraw().is_ok());
    }
    assert!(matches!(
        budget.withdraw().map_err(Error::into_kind),
        Err(ErrorKind::RetryBudgetExhausted)
    ));
    assert_eq!(budget.available(), 0);
    // A refused withdrawal takes nothing: still refused, still zero.
    assert!(budget.withdraw().is_err());
    assert_eq!(budget.available(), 0);
}

/// Each request earns `retry_ratio` retries, rounded down over the window
/// (not per request).
#[test]
fn retry_budget_ratio_adds_per_deposit() {
    let (clock, _mock) = Clock::mock();
    let budget = RetryBudget::with_clock(budget(10, 1, 0.2), clock);
    assert_eq!(budget.available(), 10);
    for _ in 0..4 {
        budget.deposit();
    }
    assert_eq!(budget.available(), 10, "4 × 0.2 = 0.8 rounds down");
    budget.deposit();
    assert_eq!(budget.available(), 11, "5 × 0.2 = 1");
    for _ in 0..95 {
        budget.deposit();
    }
    assert_eq!(budget.available(), 30, "10 + 100 × 0.2");
    assert_eq!(drain(&budget), 30);

    // Exact despite float error: 0.29 × 100 is 28.999… in f64.
    let (clock, _mock) = Clock::mock();
    let budget = RetryBudget::with_clock(budget_cfg_no_floor(0.29), clock);
    for _ in 0..100 {
        budget.deposit();
    }
    assert_eq!(budget.available(), 29);

    // 0.0157 is 0.015699999… in f64; truncating it to millionths would give
    // 156 here.
    let (clock, _mock) = Clock::mock();
    let budget = RetryBudget::with_clock(budget_cfg_no_floor(0.0157), clock);
    for _ in 0..10_000 {
        budget.deposit();
    }
    assert_eq!(budget.available(), 157);
}

fn budget_cfg_no_floor(retry_ratio: f64) -> RetryBudgetConfig {
    budget(10, 0, retry_ratio)
}

/// Requests and retries age out bucket by bucket as the window slides.
#[test]
fn retry_budget_old_buckets_age_out() {
    let (clock, mock) = Clock::mock();
    let budget = RetryBudget::with_clock(budget(10, 1, 0.5), clock);
    // t = 0 s: 20 requests (+10), all 20 retries spent.
    for _ in 0..20 {
        budget.deposit();
    }
    assert_eq!(drain(&budget), 20);
    // t = 5 s: 10 more requests (+5).
    mock.increment(Duration::from_secs(5));
    for _ in 0..10 {
        budget.deposit();
    }
    assert_eq!(budget.available(), 5);
    // t = 9.9 s: the t = 0 bucket is still inside the window.
    mock.increment(Duration::from_millis(4_900));
    assert_eq!(budget.available(), 5);
    // t = 10 s: it ages out, taking its 20 retries and 20 requests along.
    mock.increment(Duration::from_millis(100));
    assert_eq!(budget.available(), 10 + 5);
    // t = 15 s: the t = 5 s bucket ages out too.
    mock.increment(Duration::from_secs(5));
    assert_eq!(budget.available(), 10);
    // After a long idle gap (many windows), the budget is back to the floor.
    assert_eq!(drain(&budget), 10);
    mock.increment(Duration::from_secs(3_600));
    assert_eq!(budget.available(), 10);
}

/// Four threads racing to withdraw never take more than the budget in total
/// (and, with no time passing, take exactly all of it).
#[test]
fn retry_budget_concurrent_withdrawals_never_overspend() {
    let (clock, _mock) = Clock::mock();
    let budget = RetryBudget::with_clock(budget(10, 10, 0.2), clock);
    for _ in 0..1_000 {
        budget.deposit();
    }
    let allowed = budget.available();
    assert_eq!(allowed, 300);

    let taken = AtomicUsize::new(0);
    let barrier = Barrier::new(4);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                barrier.wait();
                for _ in 0..500 {
                    if budget.withdraw().is_ok() {
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                    // A deposit-free `available` read in the loop widens the
                    // window for a check-then-act race, were there one.
                    let _ = budget.available();
                }
            });
        }
    });
    assert_eq!(taken.load(Ordering::Relaxed) as u64, allowed);
    assert_eq!(budget.available(), 0);
}

#[test]
fn retry_budget_validate_names_the_field() {
    assert_eq!(RetryBudgetConfig::default().validate(), Ok(()));
    let bad_window = RetryBudgetConfig {
        window: Duration::ZERO,
        ..RetryBudgetConfig::default()
    };
    let Err(msg) = bad_window.validate() else {
        panic!("zero window accepted");
    };
    assert!(msg.contains("window"), "{msg}");
    for ratio in [f64::NAN, -0.1, f64::INFINITY, 1_000.5] {
        let Err(msg) = budget(10, 10, ratio).validate() else {
            panic!("retry_ratio {ratio} accepted");
        };
        assert!(msg.contains("retry_ratio"), "{msg}");
    }
    // `new` tolerates what `validate` rejects instead of panicking.
    let (clock, _mock) = Clock::mock();
    let lenient = RetryBudget::with_clock(
        RetryBudgetConfig {
            window: Duration::ZERO,
            min_retries_per_sec: 10,
            retry_ratio: f64::NAN,
        },
        clock,
    );
    lenient.deposit();
    assert_eq!(lenient.available(), 0);
    assert!(lenient.withdraw().is_err());
}

// ---------------------------------------------------------------- backoff

#[test]
fn backoff_defaults_are_envoys() {
    let backoff = Backoff::default();
    assert_eq!(backoff.base, Duration::from_millis(25));
    assert_eq!(backoff.cap, Duration::from_millis(250));
}

/// Every delay lies in `[0, min(cap, base × 2^attempt)]`; the ceiling
/// doubles per attempt up to the cap; the delays themselves grow with it.
#[test]
fn backoff_full_jitter_within_bounds_and_growing() {
    let backoff = Backoff::default();
    let ms = Duration::from_millis;
    let ceilings: Vec<_> = (0..6).map(|a| backoff.max_delay(a)).collect();
    assert_eq!(
        ceilings,
        [ms(25), ms(50), ms(100), ms(200), ms(250), ms(250)]
    );

    let mut rng = fastrand::Rng::with_seed(42);
    let mut means = Vec::new();
    for attempt in 0..6 {
        let samples: Vec<_> = (0..2_000)
            .map(|_| backoff.delay_with(attempt, &mut rng))
            .collect();
        assert!(samples.iter().all(|d| *d <= backoff.max_delay(attempt)));
        let max = samples.iter().max().copied().unwrap_or_default();
        let min = samples.iter().min().copied().unwrap_or_default();
        // Full jitter spans the whole range, not just its top half.
        assert!(
            max > backoff.max_delay(attempt) * 9 / 10,
            "attempt {attempt}: max {max:?}"
        );
        assert!(
            min < backoff.max_delay(attempt) / 10,
            "attempt {attempt}: min {min:?}"
        );
        means.push(samples.iter().sum::<Duration>() / 2_000);
    }
    for pair in means[..5].windows(2) {
        assert!(
            pair[0] < pair[1],
            "means should grow up to the cap: {means:?}"
        );
    }
    // The unseeded `delay` jitters over the whole range too.
    let unseeded: Vec<_> = (0..1_000).map(|_| backoff.delay(3)).collect();
    assert!(unseeded.iter().all(|d| *d <= ms(200)));
    assert!(unseeded.iter().any(|d| *d < ms(20)), "never low");
    assert!(unseeded.iter().any(|d| *d > ms(180)), "never high");
}

/// Huge attempt numbers and huge durations saturate at the cap instead of
/// overflowing (which would panic in debug builds).
#[test]
fn backoff_no_overflow() {
    let backoff = Backoff::default();
    for attempt in [31, 32, 33, 63, 64, 1_000, u32::MAX] {
        assert_eq!(backoff.max_delay(attempt), backoff.cap);
        assert!(backoff.delay(attempt) <= backoff.cap);
    }
    let huge = Backoff {
        base: Duration::MAX,
        cap: Duration::MAX,
    };
    assert_eq!(huge.max_delay(u32::MAX), Duration::MAX);
    let mut rng = fastrand::Rng::with_seed(1);
    let _ = huge.delay_with(u32::MAX, &mut rng);
    let _ = huge.delay(0);
    let zero = Backoff {
        base: Duration::ZERO,
        cap: Duration::from_millis(250),
    };
    assert_eq!(zero.delay(u32::MAX), Duration::ZERO);
}

/// The same seed gives the same delays; a different seed does not.
#[test]
fn backoff_seeded_determinism() {
    let backoff = Backoff::default();
    let run = |seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..20)
            .map(|attempt| backoff.delay_with(attempt, &mut rng))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

// ------------------------------------------------------- live settings

/// `set_limits`: growing admits waiters at once; shrinking below the slots
/// held retires them as they come back, never interrupting a holder.
#[tokio::test(start_paused = true)]
async fn bulkhead_set_limits_grows_and_shrinks_live() {
    let bulkhead = Bulkhead::new("db", config(1, 4, Duration::from_secs(10)));
    let first = expect_permit(bulkhead.try_acquire());
    let mut waiting = Box::pin(bulkhead.acquire());
    assert!(poll_once(&mut waiting).await.is_pending());
    bulkhead
        .set_limits(config(3, 4, Duration::from_secs(10)))
        .expect("valid");
    let second = expect_permit(waiting.await);
    let third = expect_permit(bulkhead.try_acquire());
    assert_eq!(bulkhead.in_flight(), 3);
    // Shrink to 1 with 3 held: nobody is interrupted, nobody new gets in.
    bulkhead
        .set_limits(config(1, 4, Duration::from_secs(10)))
        .expect("valid");
    assert_eq!(bulkhead.in_flight(), 3);
    assert!(bulkhead.try_acquire().is_err());
    drop(first);
    drop(second);
    assert_eq!(bulkhead.in_flight(), 1);
    assert!(bulkhead.try_acquire().is_err(), "the limit is 1, 1 held");
    drop(third);
    assert_eq!(bulkhead.in_flight(), 0);
    let only = expect_permit(bulkhead.try_acquire());
    assert!(bulkhead.try_acquire().is_err(), "exactly one slot left");
    drop(only);
    // Grow back while nothing is owed; an invalid limit is refused.
    assert!(bulkhead
        .set_limits(config(0, 4, Duration::from_secs(10)))
        .is_err());
    assert_eq!(bulkhead.config().max_concurrent, 1, "kept");
    bulkhead
        .set_limits(config(2, 4, Duration::from_secs(10)))
        .expect("valid");
    let _a = expect_permit(bulkhead.try_acquire());
    let _b = expect_permit(bulkhead.try_acquire());
    assert!(bulkhead.try_acquire().is_err());
}

/// `set_limits` racing holders that come and go: whatever the interleaving
/// of resizes and releases, once everyone is gone the bulkhead admits
/// exactly its last limit (no slot leaked by a shrink that met a release,
/// none lost by a grow that paid a debt), and no moment ever saw more
/// holders than the largest limit set. Reproduce with
/// `RAMPART_STRESS_SEED=<seed>`.
#[test]
fn bulkhead_stress_set_limits_against_holders() {
    let seed = support::stress_seed(0x11_5e75);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("runtime: {err}"),
    };
    let body = async {
        let bulkhead = Bulkhead::new("resize", config(4, 64, Duration::from_millis(2)));
        let hw = Arc::new(HighWater::default());
        let mut rng = fastrand::Rng::with_seed(seed);
        let holders: Vec<_> = (0..2_000)
            .map(|_| {
                let (bulkhead, hw) = (bulkhead.clone(), Arc::clone(&hw));
                let arrival = Duration::from_micros(rng.u64(0..200_000));
                let yields = rng.usize(0..10);
                tokio::spawn(async move {
                    tokio::time::sleep(arrival).await;
                    if let Ok(_permit) = bulkhead.acquire().await {
                        hw.enter();
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                        hw.exit();
                    }
                })
            })
            .collect();
        let resizer = {
            let bulkhead = bulkhead.clone();
            let limits: Vec<usize> = (0..200).map(|_| rng.usize(1..=8)).collect();
            tokio::spawn(async move {
                for limit in &limits {
                    bulkhead
                        .set_limits(config(*limit, 64, Duration::from_millis(2)))
                        .expect("valid");
                    tokio::time::sleep(Duration::from_micros(900)).await;
                }
                *limits.last().expect("limits")
            })
        };
        for holder in holders {
            holder.await.expect("holder");
        }
        let last = resizer.await.expect("resizer");
        (bulkhead, hw.max(), last)
    };
    let outcome =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(20), body).await });
    let Ok((bulkhead, max, last)) = outcome else {
        panic!("stress test hung (seed {seed})");
    };
    assert!(max <= 8, "high-water {max} above every limit (seed {seed})");
    assert_eq!(bulkhead.in_flight(), 0, "seed {seed}");
    let held: Vec<_> = std::iter::from_fn(|| bulkhead.try_acquire().ok())
        .take(100)
        .collect();
    assert_eq!(
        held.len(),
        last,
        "slots after the last resize to {last} (seed {seed})"
    );
}
