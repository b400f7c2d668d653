//! Tests for `rampart::breaker`: every transition and threshold on a mock
//! clock (no sleeping), plus a seeded multi-thread stress test.
//!
//! Reproduce a stress failure with `RAMPART_STRESS_SEED=<seed printed> cargo
//! test -p rampart --test breaker stress -- --nocapture`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use rampart::breaker::{BreakerConfig, CircuitBreaker, Permit, SlidingWindow, State, Transition};
use rampart::clock::{Clock, Mock};
use rampart::{Error, ErrorKind};

// ---------------------------------------------------------------- helpers

fn breaker(config: BreakerConfig) -> (CircuitBreaker, Arc<Mock>) {
    let (clock, mock) = Clock::mock();
    (CircuitBreaker::with_clock("dep", config, clock), mock)
}

/// A count window of `calls`, judged from `minimum_calls`, failure threshold
/// 0.5, slow calls effectively off, 5 s open wait, 3 probes.
fn count_config(calls: u32, minimum_calls: u32) -> BreakerConfig {
    BreakerConfig {
        window: SlidingWindow::Count { calls },
        minimum_calls,
        failure_rate_threshold: 0.5,
        slow_call_duration: Duration::from_secs(60),
        slow_call_rate_threshold: 1.0,
        open_wait: Duration::from_secs(5),
        half_open_probes: 3,
        // The rate alone: the tests below count calls against it.
        consecutive_failures: 0,
    }
}

fn permit(b: &CircuitBreaker) -> Permit {
    match b.try_acquire() {
        Ok(p) => p,
        Err(e) => panic!("expected a permit in {:?}, got {e}", b.state()),
    }
}

fn succeed(b: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        permit(b).success();
    }
}

fn fail(b: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        permit(b).failure();
    }
}

/// Asserts that `try_acquire` is rejected and returns its `retry_after`.
fn rejection(b: &CircuitBreaker) -> Duration {
    match b.try_acquire().map_err(Error::into_kind) {
        Err(ErrorKind::BreakerOpen { name, retry_after }) => {
            assert_eq!(&*name, b.name());
            retry_after
        }
        Err(e) => panic!("expected BreakerOpen, got {e}"),
        Ok(p) => panic!("expected a rejection, got {p:?}"),
    }
}

/// Trips a `count_config` breaker (window >= 4, minimum <= 4) open.
fn trip(b: &CircuitBreaker) {
    fail(b, 4);
    assert_eq!(b.state(), State::Open);
}

fn record_transitions(b: &CircuitBreaker) -> Arc<Mutex<Vec<(State, State)>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    b.on_transition(move |t: &Transition| {
        assert_eq!(&*t.name, "dep");
        sink.lock().expect("log lock").push((t.from, t.to));
    });
    log
}

// ----------------------------------------------------------------- config

#[test]
fn defaults_are_the_documented_ones_and_valid() {
    let c = BreakerConfig::default();
    assert_eq!(c.window, SlidingWindow::Time { seconds: 10 });
    assert_eq!(c.minimum_calls, 20);
    assert_eq!(c.failure_rate_threshold, 0.5);
    assert_eq!(c.slow_call_duration, Duration::from_secs(2));
    assert_eq!(c.slow_call_rate_threshold, 1.0);
    assert_eq!(c.open_wait, Duration::from_secs(5));
    assert_eq!(c.half_open_probes, 3);
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn validate_names_the_bad_field() {
    type Mutation = fn(&mut BreakerConfig);
    let cases: &[(Mutation, &str)] = &[
        (
            |c| c.window = SlidingWindow::Count { calls: 0 },
            "window.calls",
        ),
        (
            |c| c.window = SlidingWindow::Count { calls: 2_000_000 },
            "window.calls",
        ),
        (
            |c| c.window = SlidingWindow::Time { seconds: 0 },
            "window.seconds",
        ),
        (
            |c| c.window = SlidingWindow::Time { seconds: 100_000 },
            "window.seconds",
        ),
        (|c| c.minimum_calls = 0, "minimum_calls"),
        (|c| c.failure_rate_threshold = 0.0, "failure_rate_threshold"),
        (
            |c| c.failure_rate_threshold = -0.1,
            "failure_rate_threshold",
        ),
        (
            |c| c.failure_rate_threshold = f64::NAN,
            "failure_rate_threshold",
        ),
        (
            |c| c.slow_call_duration = Duration::ZERO,
            "slow_call_duration",
        ),
        (
            |c| c.slow_call_rate_threshold = 1.01,
            "slow_call_rate_threshold",
        ),
        (
            |c| c.slow_call_rate_threshold = f64::NAN,
            "slow_call_rate_threshold",
        ),
        (|c| c.open_wait = Duration::ZERO, "open_wait"),
        (|c| c.half_open_probes = 0, "half_open_probes"),
    ];
    for (mutate, field) in cases {
        let mut c = BreakerConfig::default();
        mutate(&mut c);
        let err = c.validate().expect_err(field);
        assert!(err.starts_with(field), "{field}: {err}");
    }
    let c = BreakerConfig {
        failure_rate_threshold: 1.5,
        ..BreakerConfig::default()
    };
    assert_eq!(
        c.validate(),
        Err("failure_rate_threshold must be in (0, 1], got 1.5".to_owned())
    );
    // The edges of the valid ranges pass.
    let c = BreakerConfig {
        window: SlidingWindow::Count { calls: 1 },
        minimum_calls: 1,
        failure_rate_threshold: 1.0,
        slow_call_rate_threshold: 1e-9,
        half_open_probes: 1,
        ..BreakerConfig::default()
    };
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn an_invalid_config_is_clamped_not_panicked_on() {
    let bad = BreakerConfig {
        window: SlidingWindow::Count { calls: 0 },
        minimum_calls: 0,
        failure_rate_threshold: f64::NAN,
        half_open_probes: 0,
        ..BreakerConfig::default()
    };
    let (b, _mock) = breaker(bad);
    assert_eq!(b.config().window, SlidingWindow::Count { calls: 1 });
    assert_eq!(b.config().failure_rate_threshold, 0.5);
    assert_eq!(b.config().half_open_probes, 1);
    fail(&b, 1);
    assert_eq!(b.state(), State::Open);
}

// ----------------------------------------------------------------- closed

#[test]
fn count_window_opens_when_failure_rate_reaches_threshold() {
    let (b, _mock) = breaker(count_config(10, 10));
    succeed(&b, 5);
    fail(&b, 4);
    assert_eq!(b.state(), State::Closed, "9 calls < minimum_calls");
    fail(&b, 1); // 5 / 10 = 0.5 >= 0.5
    assert_eq!(b.state(), State::Open);
}

#[test]
fn failure_rate_below_threshold_stays_closed() {
    let (b, _mock) = breaker(count_config(10, 10));
    succeed(&b, 6);
    fail(&b, 4);
    let s = b.stats();
    assert_eq!(s.state, State::Closed);
    assert_eq!((s.calls, s.failures), (10, 4));
    assert!((s.failure_rate - 0.4).abs() < 1e-9);
}

#[test]
fn minimum_calls_is_respected() {
    let (b, _mock) = breaker(count_config(100, 5));
    fail(&b, 4);
    assert_eq!(b.state(), State::Closed, "100% failures, but only 4 calls");
    fail(&b, 1);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn minimum_calls_is_capped_at_the_count_window() {
    // Otherwise a window of 4 could never hold the 20 calls needed to judge.
    let (b, _mock) = breaker(count_config(4, 20));
    fail(&b, 4);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn count_window_forgets_the_oldest_outcome() {
    let (b, _mock) = breaker(count_config(4, 4));
    succeed(&b, 1);
    fail(&b, 1);
    succeed(&b, 2); // S F S S: 1/4
    succeed(&b, 2); // F S S S, then S S S S: the failure slid out
    let s = b.stats();
    assert_eq!((s.calls, s.failures), (4, 0));
    fail(&b, 1); // S S S F
    assert_eq!(b.state(), State::Closed);
    // S S F F = 0.5. Counting every outcome ever (3 of 8) would stay closed.
    fail(&b, 1);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn time_window_expires_old_buckets() {
    let config = BreakerConfig {
        window: SlidingWindow::Time { seconds: 10 },
        minimum_calls: 4,
        ..count_config(1, 1)
    };
    let (b, mock) = breaker(config);
    mock.increment(Duration::from_millis(500));
    fail(&b, 3); // in second 0
    mock.increment(Duration::from_millis(9_400)); // t = 9.9 s: second 9
    assert_eq!(b.stats().calls, 3, "still inside the window");
    succeed(&b, 1); // second 9
    assert_eq!(b.state(), State::Open, "3 / 4 failures");

    let (b, mock) = breaker(BreakerConfig {
        window: SlidingWindow::Time { seconds: 10 },
        minimum_calls: 4,
        ..count_config(1, 1)
    });
    mock.increment(Duration::from_millis(500));
    fail(&b, 3); // second 0
    mock.increment(Duration::from_millis(9_500)); // t = 10.0 s: second 0 is out
    let s = b.stats();
    assert_eq!((s.calls, s.failures), (0, 0));
    fail(&b, 1);
    succeed(&b, 3);
    // Without expiry this would be 4 failures of 7 and open.
    let s = b.stats();
    assert_eq!(s.state, State::Closed);
    assert_eq!((s.calls, s.failures), (4, 1));
}

#[test]
fn time_window_evicts_bucket_by_bucket() {
    let (b, mock) = breaker(BreakerConfig {
        window: SlidingWindow::Time { seconds: 3 },
        minimum_calls: 100,
        ..count_config(1, 1)
    });
    for _ in 0..3 {
        fail(&b, 1);
        mock.increment(Duration::from_secs(1));
    }
    // t = 3 s: second 0 is out, seconds 1 and 2 remain.
    assert_eq!(b.stats().calls, 2);
    mock.increment(Duration::from_secs(1));
    assert_eq!(b.stats().calls, 1);
    mock.increment(Duration::from_secs(60));
    assert_eq!(b.stats().calls, 0);
}

#[test]
fn slow_call_rate_opens_the_breaker() {
    let (b, mock) = breaker(BreakerConfig {
        slow_call_duration: Duration::from_secs(1),
        slow_call_rate_threshold: 0.5,
        ..count_config(4, 4)
    });
    let slow = |d: Duration| {
        let p = permit(&b);
        mock.increment(d);
        p.success();
    };
    slow(Duration::from_millis(999)); // not slow
    slow(Duration::from_secs(1)); // slow: duration >= slow_call_duration
    succeed(&b, 1);
    let s = b.stats();
    assert_eq!((s.calls, s.failures, s.slow), (3, 0, 1));
    assert_eq!(s.state, State::Closed);
    slow(Duration::from_secs(5)); // 2 slow of 4, no failures
    assert_eq!(b.state(), State::Open);
}

#[test]
fn ignored_and_dropped_permits_count_as_neither() {
    let (b, _mock) = breaker(count_config(4, 4));
    fail(&b, 3);
    permit(&b).ignore();
    drop(permit(&b));
    let s = b.stats();
    assert_eq!((s.calls, s.failures), (3, 3));
    assert_eq!(s.state, State::Closed);
}

// ------------------------------------------------------------------- open

#[test]
fn open_rejects_with_the_time_left_as_retry_after() {
    let (b, mock) = breaker(count_config(4, 4));
    trip(&b);
    assert_eq!(rejection(&b), Duration::from_secs(5));
    mock.increment(Duration::from_millis(2_000));
    assert_eq!(rejection(&b), Duration::from_secs(3));
    mock.increment(Duration::from_millis(2_999));
    assert_eq!(rejection(&b), Duration::from_millis(1));
    let err = b.try_acquire().expect_err("still open");
    assert!(err.is_rejection());
    assert_eq!(err.retry_after(), Some(Duration::from_millis(1)));
    assert_eq!(b.stats().rejected, 4);
}

#[test]
fn half_open_is_entered_lazily_after_open_wait() {
    let (b, mock) = breaker(count_config(4, 4));
    trip(&b);
    mock.increment(Duration::from_secs(5) - Duration::from_nanos(1));
    // retry_after is rounded up to the millisecond: never "retry now" while
    // the breaker would still reject.
    assert_eq!(rejection(&b), Duration::from_millis(1));
    mock.increment(Duration::from_nanos(1));
    assert_eq!(b.state(), State::Open, "no timer: nothing moved it yet");
    let probe = permit(&b);
    assert_eq!(probe.state(), State::HalfOpen);
    assert_eq!(b.state(), State::HalfOpen);
}

// -------------------------------------------------------------- half-open

fn half_open(config: BreakerConfig) -> (CircuitBreaker, Arc<Mock>) {
    let (b, mock) = breaker(config);
    trip(&b);
    mock.increment(b.config().open_wait);
    (b, mock)
}

#[test]
fn half_open_admits_exactly_half_open_probes() {
    let (b, _mock) = half_open(count_config(4, 4));
    let probes: Vec<Permit> = (0..3).map(|_| permit(&b)).collect();
    assert!(probes.iter().all(|p| p.state() == State::HalfOpen));
    // The verdict waits on the probes: retry after about a slow call's time.
    assert_eq!(rejection(&b), Duration::from_secs(5));
    assert_eq!(b.stats().rejected, 1);
    drop(probes);
}

#[test]
fn half_open_waits_for_every_probe_to_finish() {
    let (b, _mock) = half_open(count_config(4, 4));
    let [a, b2, c] = [permit(&b), permit(&b), permit(&b)];
    a.success();
    b2.success();
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.stats().calls, 2);
    rejection(&b); // the finished probes' slots are not handed out again
    c.success();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn probes_that_succeed_close_with_a_fresh_window() {
    let (b, _mock) = half_open(count_config(4, 4));
    succeed(&b, 3);
    let s = b.stats();
    assert_eq!(s.state, State::Closed);
    assert_eq!((s.calls, s.failures), (0, 0), "fresh window");
    // The window must fill up to minimum_calls again before judging.
    fail(&b, 3);
    assert_eq!(b.state(), State::Closed);
    fail(&b, 1);
    assert_eq!(b.state(), State::Open);
}

#[test]
fn a_probe_failure_above_threshold_reopens() {
    let (b, mock) = half_open(BreakerConfig {
        failure_rate_threshold: 0.3,
        ..count_config(4, 4)
    });
    succeed(&b, 2);
    mock.increment(Duration::from_secs(1));
    fail(&b, 1); // 1 / 3 >= 0.3
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        rejection(&b),
        Duration::from_secs(5),
        "a full open_wait from the reopening"
    );
}

#[test]
fn a_probe_failure_below_threshold_closes() {
    let (b, _mock) = half_open(count_config(4, 4));
    succeed(&b, 2);
    fail(&b, 1); // 1 / 3 < 0.5
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn slow_probes_reopen() {
    let (b, mock) = half_open(BreakerConfig {
        slow_call_duration: Duration::from_secs(1),
        slow_call_rate_threshold: 0.5,
        ..count_config(4, 4)
    });
    succeed(&b, 1);
    for _ in 0..2 {
        let p = permit(&b);
        mock.increment(Duration::from_secs(1));
        p.success();
    }
    assert_eq!(b.state(), State::Open);
}

#[test]
fn a_dropped_or_ignored_probe_frees_its_slot() {
    let (b, _mock) = half_open(count_config(4, 4));
    let mut probes: Vec<Permit> = (0..3).map(|_| permit(&b)).collect();
    rejection(&b);
    drop(probes.pop());
    probes.push(permit(&b));
    rejection(&b);
    probes.pop().expect("a probe").ignore();
    probes.push(permit(&b));
    rejection(&b);
    assert_eq!(b.stats().calls, 0, "neither counted as a probe outcome");
    for p in probes {
        p.success();
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn a_cancelled_call_frees_its_probe_slot() {
    let (b, _mock) = half_open(count_config(4, 4));
    for _ in 0..5 {
        // Poll once (it never finishes), then drop the call: cancelled.
        let call = b.call(std::future::pending::<Result<(), ()>>(), |_| true);
        assert!(call.now_or_never().is_none());
    }
    let probes: Vec<Permit> = (0..3).map(|_| permit(&b)).collect();
    rejection(&b);
    drop(probes);
}

// ---------------------------------------------------------- stale permits

#[test]
fn a_closed_permit_finishing_after_the_breaker_opened_is_ignored() {
    let (b, mock) = breaker(count_config(4, 4));
    let slow_closed = permit(&b);
    trip(&b);
    mock.increment(Duration::from_secs(5));
    let probe = permit(&b);
    assert_eq!(probe.state(), State::HalfOpen);
    // Started while closed: must not count as one of the 3 probes.
    slow_closed.failure();
    let s = b.stats();
    assert_eq!((s.state, s.calls, s.failures), (State::HalfOpen, 0, 0));
    let others: Vec<Permit> = (0..2).map(|_| permit(&b)).collect();
    probe.success();
    others.into_iter().for_each(Permit::success);
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn a_closed_permit_from_before_a_reset_is_ignored() {
    let (b, _mock) = breaker(count_config(4, 4));
    let old: Vec<Permit> = (0..4).map(|_| permit(&b)).collect();
    fail(&b, 3);
    b.reset();
    old.into_iter().for_each(Permit::failure);
    let s = b.stats();
    assert_eq!((s.state, s.calls), (State::Closed, 0));
}

#[test]
fn a_stale_probe_does_not_touch_the_next_half_open() {
    let (b, mock) = half_open(count_config(4, 4));
    let [s1, s2, s3] = [permit(&b), permit(&b), permit(&b)];
    b.reset();
    trip(&b);
    mock.increment(Duration::from_secs(5));
    let fresh: Vec<Permit> = (0..3).map(|_| permit(&b)).collect();
    // Dropping a stale probe must not free a slot of the new half-open...
    drop(s1);
    rejection(&b);
    // ...and recording stale ones must not count as its probes.
    s2.failure();
    s3.failure();
    assert_eq!(b.stats().calls, 0);
    assert_eq!(b.state(), State::HalfOpen);
    fresh.into_iter().for_each(Permit::success);
    assert_eq!(b.state(), State::Closed);
}

// --------------------------------------------------------------- operator

#[test]
fn force_open_rejects_until_reset() {
    let (b, mock) = breaker(count_config(4, 4));
    b.force_open();
    assert_eq!(b.state(), State::ForcedOpen);
    assert_eq!(rejection(&b), Duration::from_secs(5), "open_wait as a hint");
    mock.increment(Duration::from_secs(3600));
    rejection(&b);
    assert_eq!(b.state(), State::ForcedOpen, "never half-opens by itself");
    b.reset();
    assert_eq!(b.state(), State::Closed);
    succeed(&b, 1);
}

#[test]
fn disable_allows_everything_and_records_nothing() {
    let (b, _mock) = breaker(count_config(4, 4));
    b.disable();
    fail(&b, 100);
    let s = b.stats();
    assert_eq!((s.state, s.calls, s.failures), (State::Disabled, 0, 0));
    b.reset();
    fail(&b, 3);
    assert_eq!(b.state(), State::Closed, "disabled failures were not kept");
}

#[test]
fn operators_override_open_and_half_open() {
    let (b, _mock) = half_open(count_config(4, 4));
    let probe = permit(&b);
    b.disable();
    assert_eq!(permit(&b).state(), State::Disabled);
    probe.failure(); // stale
    assert_eq!(b.state(), State::Disabled);
    b.force_open();
    rejection(&b);
    b.reset();
    let s = b.stats();
    assert_eq!((s.state, s.calls), (State::Closed, 0));
}

#[test]
fn reset_while_closed_empties_the_window() {
    let (b, _mock) = breaker(count_config(4, 4));
    fail(&b, 3);
    b.reset();
    assert_eq!(b.stats().calls, 0);
    fail(&b, 3);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().transitions, 0, "closed → closed is no transition");
}

// -------------------------------------------------------------- listeners

#[test]
fn listeners_see_each_transition_exactly_once() {
    let (b, mock) = breaker(count_config(4, 4));
    let log = record_transitions(&b);
    let second = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&second);
    b.on_transition(move |_| {
        count.fetch_add(1, Ordering::Relaxed);
    });
    trip(&b); // Closed → Open
    rejection(&b);
    mock.increment(Duration::from_secs(5));
    succeed(&b, 3); // Open → HalfOpen → Closed
    trip(&b); // Closed → Open
    mock.increment(Duration::from_secs(5));
    fail(&b, 3); // Open → HalfOpen → Open
    b.force_open();
    b.force_open(); // no-op
    b.disable();
    b.disable(); // no-op
    b.reset();
    b.reset(); // no transition
    use State::*;
    let expected = vec![
        (Closed, Open),
        (Open, HalfOpen),
        (HalfOpen, Closed),
        (Closed, Open),
        (Open, HalfOpen),
        (HalfOpen, Open),
        (Open, ForcedOpen),
        (ForcedOpen, Disabled),
        (Disabled, Closed),
    ];
    assert_eq!(*log.lock().expect("log lock"), expected);
    assert_eq!(second.load(Ordering::Relaxed), expected.len() as u64);
    assert_eq!(b.stats().transitions, expected.len() as u64);
}

#[test]
fn a_listener_may_call_back_into_the_breaker() {
    let (b, _mock) = breaker(count_config(4, 4));
    let log = record_transitions(&b);
    let handle = b.clone();
    b.on_transition(move |t| {
        // No lock is held: reading and even transitioning works.
        let _ = handle.stats();
        if t.to == State::Open {
            handle.force_open();
        }
    });
    fail(&b, 4);
    assert_eq!(
        *log.lock().expect("log lock"),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::ForcedOpen)
        ]
    );
    assert_eq!(b.state(), State::ForcedOpen);
}

#[test]
fn listeners_get_racing_transitions_in_order() {
    use std::sync::Barrier;
    let (b, _mock) = breaker(count_config(4, 4));
    let log = record_transitions(&b);
    let (entered, go) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let (e, g) = (Arc::clone(&entered), Arc::clone(&go));
    b.on_transition(move |t| {
        if t.to == State::Open {
            // Hold up delivery of the first transition...
            e.wait();
            g.wait();
        }
    });
    std::thread::scope(|s| {
        let tripper = s.spawn(|| fail(&b, 4));
        entered.wait();
        // ...while this thread makes the second one.
        b.force_open();
        let seen_meanwhile = log.lock().expect("log lock").len();
        go.wait();
        tripper.join().expect("tripper");
        assert_eq!(seen_meanwhile, 1, "the second transition waits its turn");
    });
    assert_eq!(
        *log.lock().expect("log lock"),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::ForcedOpen)
        ]
    );
}

// ------------------------------------------------------------------- call

#[tokio::test]
async fn call_runs_records_and_rejects() {
    let (b, _mock) = breaker(count_config(4, 4));
    #[derive(Debug, PartialEq)]
    enum E {
        NotFound,
        Down,
    }
    let is_failure = |e: &E| *e == E::Down;
    assert_eq!(
        b.call(async { Ok::<_, E>(1) }, is_failure).await.ok(),
        Some(Ok(1))
    );
    let r = b
        .call(async { Err::<(), _>(E::NotFound) }, is_failure)
        .await;
    assert_eq!(r.ok(), Some(Err(E::NotFound)));
    let r = b.call(async { Err::<(), _>(E::Down) }, is_failure).await;
    assert_eq!(r.ok(), Some(Err(E::Down)));
    let s = b.stats();
    assert_eq!((s.calls, s.failures), (3, 1), "NotFound counts as success");

    b.force_open();
    let polled = AtomicBool::new(false);
    let r = b
        .call(
            async {
                polled.store(true, Ordering::Relaxed);
                Ok::<_, E>(())
            },
            is_failure,
        )
        .await;
    assert!(matches!(
        r.map_err(Error::into_kind),
        Err(ErrorKind::BreakerOpen { .. })
    ));
    assert!(!polled.load(Ordering::Relaxed), "rejected calls never run");
}

#[test]
fn call_futures_and_permits_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<CircuitBreaker>();
    assert_send_sync::<Permit>();
    let (b, _mock) = breaker(count_config(4, 4));
    let call = b.call(async { Ok::<(), ()>(()) }, |_| true);
    assert_send(&call);
}

// ----------------------------------------------------------------- stress

fn stress_seed() -> u64 {
    support::stress_seed(0x5EED_B4EA)
}

/// Workers acquire, hold, and finish permits at random (success, failure,
/// ignore, drop) while one of them moves the mock clock, so the breaker
/// cycles through every automatic state many times.
fn stress(window: SlidingWindow, seed: u64) -> usize {
    const WORKERS: u64 = 4;
    const ITERATIONS: usize = 4_000;
    const PROBES: u32 = 3;
    let config = BreakerConfig {
        window,
        minimum_calls: 10,
        failure_rate_threshold: 0.5,
        slow_call_duration: Duration::from_millis(40),
        slow_call_rate_threshold: 0.8,
        open_wait: Duration::from_millis(20),
        half_open_probes: PROBES,
        consecutive_failures: 0,
    };
    let (b, mock) = breaker(config.clone());
    let log: Arc<Mutex<Vec<Transition>>> = Arc::default();
    let sink = Arc::clone(&log);
    b.on_transition(move |t| sink.lock().expect("log lock").push(t.clone()));

    // Probe permits held by the test: incremented after a probe is
    // acquired, decremented before it is released, so it never exceeds the
    // breaker's own count.
    let probes_held = AtomicI64::new(0);
    let max_probes_held = AtomicI64::new(0);
    let rejected = AtomicU64::new(0);
    let acquired = AtomicU64::new(0);
    let count_window = match window {
        SlidingWindow::Count { calls } => Some(u64::from(calls)),
        SlidingWindow::Time { .. } => None,
    };

    std::thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (b, probes_held, max_probes_held, rejected, acquired) =
                    (&b, &probes_held, &max_probes_held, &rejected, &acquired);
                let (config, mock) = (&config, &mock);
                s.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(w));
                    let mut held: Vec<Permit> = Vec::new();
                    let release = |p: Permit, rng: &mut fastrand::Rng| {
                        if p.state() == State::HalfOpen {
                            probes_held.fetch_sub(1, Ordering::SeqCst);
                        }
                        // The dependency alternates between healthy (10 %
                        // failures) and sick (80 %) every 300 ms of mock time.
                        let sick = (mock.value() / 300_000_000) % 2 == 1;
                        let failure_pct = if sick { 80 } else { 10 };
                        match rng.u32(0..100) {
                            0..=4 => p.ignore(),
                            5..=9 => drop(p),
                            n if n < 10 + failure_pct * 9 / 10 => p.failure(),
                            _ => p.success(),
                        }
                    };
                    for i in 0..ITERATIONS {
                        if w == 0 {
                            // Worker 0 drives the clock, so mock time moves
                            // with the work however the OS schedules it.
                            mock.increment(Duration::from_micros(rng.u64(0..2_000)));
                        }
                        if rng.u32(0..100) < 55 && held.len() < 4 {
                            match b.try_acquire() {
                                Ok(p) => {
                                    acquired.fetch_add(1, Ordering::Relaxed);
                                    if p.state() == State::HalfOpen {
                                        let n = probes_held.fetch_add(1, Ordering::SeqCst) + 1;
                                        max_probes_held.fetch_max(n, Ordering::Relaxed);
                                        assert!(
                                            n <= i64::from(PROBES),
                                            "{n} probes held at once (seed {seed})"
                                        );
                                    }
                                    held.push(p);
                                }
                                Err(e) if matches!(e.kind(), ErrorKind::BreakerOpen { .. }) => {
                                    rejected.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(e) => panic!("unexpected error {e}"),
                            }
                        } else if !held.is_empty() {
                            let p = held.swap_remove(rng.usize(0..held.len()));
                            release(p, &mut rng);
                        }
                        if i % 16 == 0 {
                            check_stats(b, config, count_window, seed);
                        }
                    }
                    for p in held {
                        release(p, &mut rng);
                    }
                })
            })
            .collect();
        for w in workers {
            if let Err(panic) = w.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });

    let stats = b.stats();
    let log = log.lock().expect("log lock");
    println!(
        "seed {seed}: {} transitions, {} acquired, {} rejected, max {} probes held",
        log.len(),
        acquired.load(Ordering::Relaxed),
        rejected.load(Ordering::Relaxed),
        max_probes_held.load(Ordering::Relaxed),
    );
    assert_eq!(stats.rejected, rejected.load(Ordering::Relaxed));
    assert_eq!(stats.transitions, log.len() as u64);
    // Delivered once each, in order: the log is one unbroken chain.
    let mut state = State::Closed;
    for t in log.iter() {
        assert_eq!(t.from, state, "transition chain broken (seed {seed})");
        assert_ne!(t.from, t.to);
        state = t.to;
    }
    assert_eq!(state, stats.state);
    assert!(max_probes_held.load(Ordering::Relaxed) >= 1);
    log.iter().filter(|t| t.to == State::HalfOpen).count()
}

/// Runs the stress until one run went through at least three half-open
/// rounds (every run's invariants are checked either way). How many rounds
/// a run gets depends on how the OS schedules the workers against the one
/// that drives the clock: on a loaded 2-core box a seed now and then
/// spends its run open, which says nothing about the breaker.
fn stress_until_exercised(window: SlidingWindow, first_seed: u64) {
    let mut rounds = 0;
    for attempt in 0..5 {
        rounds = stress(window, first_seed.wrapping_add(attempt * 1_000));
        if rounds >= 3 {
            return;
        }
    }
    panic!("no run had three half-open rounds (last: {rounds}, first seed {first_seed})");
}

fn check_stats(b: &CircuitBreaker, config: &BreakerConfig, count_window: Option<u64>, seed: u64) {
    let s = b.stats();
    assert!(
        s.failures <= s.calls && s.slow <= s.calls,
        "{s:?} (seed {seed})"
    );
    if s.calls > 0 {
        assert!((s.failure_rate - s.failures as f64 / s.calls as f64).abs() < 1e-12);
        assert!((s.slow_rate - s.slow as f64 / s.calls as f64).abs() < 1e-12);
    }
    match s.state {
        State::HalfOpen => assert!(
            s.calls < u64::from(config.half_open_probes),
            "half-open should have decided: {s:?} (seed {seed})"
        ),
        State::Open => assert_eq!(s.calls, 0, "{s:?} (seed {seed})"),
        State::Closed => {
            if let Some(size) = count_window {
                assert!(s.calls <= size, "{s:?} (seed {seed})");
                // Judged on every record, so a closed count window can never
                // sit past a threshold. (A time window can: eviction alone
                // may raise a rate, and rates are judged on record.)
                let judged = s.calls >= u64::from(config.minimum_calls).min(size);
                assert!(
                    !(judged
                        && (s.failure_rate >= config.failure_rate_threshold
                            || s.slow_rate >= config.slow_call_rate_threshold)),
                    "closed past a threshold: {s:?} (seed {seed})"
                );
            }
        }
        State::ForcedOpen | State::Disabled => panic!("nobody forced {s:?}"),
    }
}

#[test]
fn stress_count_window() {
    stress_until_exercised(SlidingWindow::Count { calls: 20 }, stress_seed());
}

#[test]
fn stress_time_window() {
    stress_until_exercised(
        SlidingWindow::Time { seconds: 1 },
        stress_seed().wrapping_add(1),
    );
}

/// A window full of successes from before an outage dilutes its failures;
/// a run of `consecutive_failures` opens the breaker anyway, and a success
/// inside the run starts the count again.
#[test]
fn a_run_of_failures_opens_whatever_the_window_rate() {
    let (b, _mock) = breaker(BreakerConfig {
        consecutive_failures: 20,
        ..count_config(1_000, 20)
    });
    for _ in 0..300 {
        permit(&b).success();
    }
    for _ in 0..19 {
        permit(&b).failure();
    }
    permit(&b).success();
    for _ in 0..19 {
        permit(&b).failure();
    }
    assert_eq!(
        b.state(),
        State::Closed,
        "no run of 20 yet, rate far below 0.5"
    );
    permit(&b).failure();
    assert_eq!(b.state(), State::Open, "20 failures in a row");
}

// ------------------------------------------------------- live settings

/// `set_config`: a lower threshold judges the next outcome; a new window
/// size starts an empty window; an invalid config is refused and kept out.
#[test]
fn set_config_changes_thresholds_live_and_refuses_an_invalid_one() {
    let (b, _mock) = breaker(count_config(10, 10));
    fail(&b, 5); // 5 of 5: below minimum_calls, stays closed
    assert_eq!(b.state(), State::Closed);
    let refused = b.set_config(BreakerConfig {
        minimum_calls: 0,
        ..count_config(10, 10)
    });
    assert!(refused.is_err(), "minimum_calls 0 is refused");
    assert_eq!(b.config().minimum_calls, 10, "the running config stays");
    // Same window: the counts are kept and judged by the new minimum.
    b.set_config(count_config(10, 5)).expect("valid");
    assert_eq!(b.state(), State::Closed, "judged at the next outcome");
    fail(&b, 1);
    assert_eq!(
        b.state(),
        State::Open,
        "6 failures of 6 past the new minimum"
    );
    b.reset();
    fail(&b, 4);
    // A new window size: the old counts do not carry over.
    b.set_config(count_config(20, 5)).expect("valid");
    fail(&b, 4);
    assert_eq!(b.state(), State::Closed, "4 in the new window, minimum 5");
    fail(&b, 1);
    assert_eq!(b.state(), State::Open);
}
