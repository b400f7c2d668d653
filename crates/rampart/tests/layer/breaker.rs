use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rampart::breaker::{BreakerConfig, CircuitBreaker, SlidingWindow, State};
use rampart::clock::{Clock, Mock};
use rampart::layer::{CircuitBreakerLayer, Outcome};
use rampart::ErrorKind;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

use crate::{kind, Calls};

/// Opens after `consecutive` failures in a row, stays open 5 s, one probe.
fn breaker(consecutive: u32) -> (CircuitBreaker, Arc<Mock>) {
    let (clock, mock) = Clock::mock();
    let config = BreakerConfig {
        window: SlidingWindow::Count { calls: 100 },
        minimum_calls: 100,
        consecutive_failures: consecutive,
        open_wait: Duration::from_secs(5),
        half_open_probes: 1,
        ..BreakerConfig::default()
    };
    (CircuitBreaker::with_clock("dep", config, clock), mock)
}

/// An inner service that fails when asked to.
fn flaky(
    calls: Calls,
) -> impl Service<bool, Response = &'static str, Error = std::io::Error, Future: Send> + Clone {
    service_fn(move |fail: bool| {
        calls.hit();
        async move {
            if fail {
                Err(std::io::Error::other("down"))
            } else {
                Ok("up")
            }
        }
    })
}

#[tokio::test]
async fn passes_answers_through_and_opens_on_failures_without_calling_the_inner_service() {
    let (breaker, _mock) = breaker(3);
    let calls = Calls::default();
    let mut svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(flaky(calls.clone()));

    assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), "up");
    for _ in 0..3 {
        let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
        // The inner error comes through boxed as it was.
        assert!(err.downcast_ref::<std::io::Error>().is_some(), "{err}");
    }
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(calls.get(), 4);

    let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
    match kind(&err) {
        ErrorKind::BreakerOpen { name, retry_after } => {
            assert_eq!(&*name, "dep");
            assert_eq!(retry_after, Duration::from_secs(5));
        }
        other => panic!("expected BreakerOpen, got {other:?}"),
    }
    assert_eq!(
        calls.get(),
        4,
        "an open breaker must not call the inner service"
    );
}

#[tokio::test]
async fn a_classifier_decides_what_counts_as_a_failure() {
    let (breaker, _mock) = breaker(2);
    let layer = CircuitBreakerLayer::new(breaker.clone()).classify(
        |result: &Result<u16, std::io::Error>| match result {
            Ok(status) if *status >= 500 => Outcome::Failure,
            Ok(400..=499) => Outcome::Ignore,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        },
    );
    let mut svc = layer.layer(service_fn(|status: u16| async move {
        Ok::<_, std::io::Error>(status)
    }));
    // Ignored outcomes are not counted at all.
    for _ in 0..5 {
        assert_eq!(svc.ready().await.unwrap().call(404).await.unwrap(), 404);
    }
    assert_eq!(breaker.stats().calls, 0);
    svc.ready().await.unwrap().call(200).await.unwrap();
    assert_eq!(breaker.stats().calls, 1);
    // Two 503s in a row open it, although the inner service said `Ok`.
    svc.ready().await.unwrap().call(503).await.unwrap();
    svc.ready().await.unwrap().call(503).await.unwrap();
    assert_eq!(breaker.state(), State::Open);
}

/// A panic inside the inner future must count against the dependency, or
/// a service that panics on every call would never trip its breaker.
#[tokio::test]
async fn a_panic_in_the_inner_future_counts_as_a_failure_and_keeps_unwinding() {
    let (breaker, _mock) = breaker(1);
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(service_fn(|_: ()| async {
        if true {
            panic!("inner future panicked");
        }
        Ok::<(), std::io::Error>(())
    }));
    let future = svc.ready().await.unwrap().call(());
    let caught = AssertUnwindSafe(future).catch_unwind().await;
    assert!(caught.is_err(), "the panic must reach the caller");
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test]
async fn a_panic_in_the_inner_call_counts_as_a_failure() {
    let (breaker, _mock) = breaker(1);
    let mut svc = CircuitBreakerLayer::new(breaker.clone()).layer(service_fn(|_: ()| {
        if true {
            panic!("inner call panicked");
        }
        std::future::ready(Ok::<(), std::io::Error>(()))
    }));
    let ready = svc.ready().await.unwrap();
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| ready.call(())));
    assert!(caught.is_err());
    assert_eq!(breaker.state(), State::Open);
}

/// A cancelled call says nothing about the dependency; a cancelled
/// half-open probe must free its slot, or the breaker stays half-open with
/// every probe slot taken forever.
#[tokio::test]
async fn a_cancelled_call_reports_nothing_and_frees_its_probe_slot() {
    let (breaker, mock) = breaker(1);
    let calls = Calls::default();
    let hang = calls.clone();
    let mut svc =
        CircuitBreakerLayer::new(breaker.clone()).layer(service_fn(move |hang_up: bool| {
            hang.hit();
            async move {
                if hang_up {
                    std::future::pending::<()>().await;
                }
                Ok::<_, std::io::Error>("up")
            }
        }));

    // Closed: a dropped call is recorded as nothing.
    let pending = svc.ready().await.unwrap().call(true);
    assert!(pending.now_or_never_is_pending());
    assert_eq!(breaker.stats().calls, 0);

    // Open it, wait out `open_wait`: the next call is the one probe.
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.state(), State::Open);
    mock.increment(Duration::from_secs(5));
    let probe = svc.ready().await.unwrap().call(true);
    assert_eq!(breaker.state(), State::HalfOpen);
    // The slot is taken: a second caller is refused.
    let refused = svc.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(matches!(kind(&refused), ErrorKind::BreakerOpen { .. }));
    drop(probe);
    // ... and free again once the probe is cancelled: this one closes it.
    assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), "up");
    assert_eq!(breaker.state(), State::Closed);
}

trait NowOrNeverPending {
    fn now_or_never_is_pending(self) -> bool;
}

impl<F: Future> NowOrNeverPending for F {
    /// Polls once and drops the future (a cancelled call).
    fn now_or_never_is_pending(self) -> bool {
        self.now_or_never().is_none()
    }
}
