//! Loom models of the circuit breaker's half-open accounting.
//!
//! Run with:
//! `RUSTFLAGS="--cfg rampart_loom" cargo test --release -p rampart --test loom_breaker`
//! (`scripts/test.sh` does). Under that cfg the breaker's state word, open
//! deadline and lock are loom's, so every interleaving of probes acquiring,
//! finishing, being cancelled and an operator's reset is explored.
#![cfg(rampart_loom)]

use std::time::Duration;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use rampart::breaker::{BreakerConfig, CircuitBreaker, SlidingWindow, State};
use rampart::clock::Clock;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// A breaker that opened on one failure, with its open wait already over:
/// the next `try_acquire` turns it half-open. One probe at a time.
fn half_open_soon() -> CircuitBreaker {
    let (clock, mock) = Clock::mock();
    let breaker = CircuitBreaker::with_clock(
        "db",
        BreakerConfig {
            window: SlidingWindow::Count { calls: 1 },
            minimum_calls: 1,
            open_wait: Duration::from_secs(1),
            half_open_probes: 1,
            ..BreakerConfig::default()
        },
        clock,
    );
    breaker.try_acquire().expect("closed").failure();
    assert_eq!(breaker.state(), State::Open);
    mock.increment(Duration::from_secs(2));
    breaker
}

/// Two callers race for the single probe slot; one is cancelled (drops its
/// permit unrecorded), the other succeeds. In every interleaving: never more
/// probes in flight than allowed, and the breaker never ends wedged
/// half-open with no slot free.
#[test]
fn a_cancelled_probe_frees_its_slot_and_never_exceeds_the_bound() {
    model(|| {
        let breaker = half_open_soon();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let cancelled = {
            let (breaker, in_flight) = (breaker.clone(), in_flight.clone());
            thread::spawn(move || {
                if let Ok(permit) = breaker.try_acquire() {
                    assert!(in_flight.fetch_add(1, Ordering::SeqCst) < 1, "two probes");
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                }
            })
        };
        if let Ok(permit) = breaker.try_acquire() {
            assert!(in_flight.fetch_add(1, Ordering::SeqCst) < 1, "two probes");
            in_flight.fetch_sub(1, Ordering::SeqCst);
            permit.success();
        }
        cancelled.join().expect("thread");
        match breaker.state() {
            State::Closed => {}
            State::HalfOpen => {
                let probe = breaker.try_acquire().expect("a probe slot is free");
                probe.success();
                assert_eq!(breaker.state(), State::Closed);
            }
            other => panic!("ended {other:?}"),
        }
    });
}

/// A probe in flight while an operator resets the breaker: its late
/// failure belongs to an earlier generation and must not reopen the reset
/// breaker, nor count as a probe that was never issued.
#[test]
fn a_probe_outliving_a_reset_is_ignored() {
    model(|| {
        let breaker = half_open_soon();
        let probe = breaker.try_acquire().expect("probe");
        let operator = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.reset())
        };
        probe.failure();
        operator.join().expect("thread");
        // Either order: the reset wins in the end, or the failure reopened
        // first and the reset closed it after. Never open after the reset.
        assert_eq!(breaker.state(), State::Closed);
        let next = breaker.try_acquire().expect("closed admits calls");
        next.success();
    });
}
