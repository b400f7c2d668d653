use std::time::Duration;

use rampart::breaker::{BreakerConfig, CircuitBreaker};
use rampart::layer::{CircuitBreakerLayer, RetryPolicy};
use rampart::limit::{Backoff, RetryBudget, RetryBudgetConfig};
use rampart::{BoxError, ErrorKind};
use tower::retry::RetryLayer;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

use crate::{kind, Calls};

/// A service that fails its first `failures` calls.
fn fails_first(
    failures: usize,
    calls: Calls,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(move |n: u32| {
        let call = calls.hit();
        async move {
            if call <= failures {
                Err(BoxError::from(format!("failure {call}")))
            } else {
                Ok(n)
            }
        }
    })
}

fn budget(min_retries_per_sec: u32, retry_ratio: f64) -> RetryBudget {
    RetryBudget::new(RetryBudgetConfig {
        window: Duration::from_secs(10),
        min_retries_per_sec,
        retry_ratio,
    })
}

fn no_wait() -> Backoff {
    Backoff {
        base: Duration::ZERO,
        cap: Duration::ZERO,
    }
}

#[tokio::test]
async fn retries_until_success_within_max_attempts() {
    let calls = Calls::default();
    let policy = RetryPolicy::new(budget(10, 0.2), no_wait()).max_attempts(3);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(fails_first(2, calls.clone()));
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
    assert_eq!(calls.get(), 3);

    // One failure too many: the third attempt's error comes back.
    let calls = Calls::default();
    let policy = RetryPolicy::new(budget(10, 0.2), no_wait()).max_attempts(3);
    let svc = RetryLayer::new(policy).layer_service(fails_first(3, calls.clone()));
    let err = svc.oneshot(7).await.unwrap_err();
    assert_eq!(err.to_string(), "failure 3");
    assert_eq!(calls.get(), 3);
}

/// The point of a budget: with the dependency down, retries are bounded by
/// a fraction of the requests, not by requests × max_attempts.
#[tokio::test]
async fn a_spent_budget_stops_retrying_and_requests_earn_it_back() {
    // No floor; each request earns half a retry.
    let policy = RetryPolicy::new(budget(0, 0.5), no_wait()).max_attempts(10);
    let calls = Calls::default();
    let down = fails_first(usize::MAX, calls.clone());
    let mut svc = RetryLayer::new(policy.clone()).layer_service(down);
    for _ in 0..10 {
        svc.ready().await.unwrap().call(1).await.unwrap_err();
    }
    // 10 requests earned 5 retries in all (not 9 per request).
    assert_eq!(calls.get(), 10 + 5);
    assert_eq!(policy.budget().available(), 0);
}

#[tokio::test]
async fn a_guards_refusal_is_not_retried() {
    let breaker = CircuitBreaker::new("dep", BreakerConfig::default());
    breaker.force_open();
    let calls = Calls::default();
    let policy = RetryPolicy::new(budget(10, 0.2), no_wait()).max_attempts(5);
    let budget_before = policy.budget().available();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(policy.clone()))
        .layer(CircuitBreakerLayer::new(breaker))
        .service(fails_first(0, calls.clone()));
    let err = svc.oneshot(1).await.unwrap_err();
    assert!(matches!(kind(&err), ErrorKind::BreakerOpen { .. }));
    assert_eq!(calls.get(), 0);
    assert_eq!(policy.budget().available(), budget_before);
}

#[tokio::test]
async fn retry_if_decides_what_is_retried() {
    let calls = Calls::default();
    let policy = RetryPolicy::new(budget(10, 0.2), no_wait()).retry_if(
        |_req: &u32, result: &Result<u32, BoxError>| {
            result.as_ref().is_err_and(|e| e.to_string() != "failure 1")
        },
    );
    let svc = RetryLayer::new(policy).layer_service(fails_first(1, calls.clone()));
    assert_eq!(svc.oneshot(1).await.unwrap_err().to_string(), "failure 1");
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn retries_wait_out_the_backoff() {
    let calls = Calls::default();
    let backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(1),
    };
    let policy = RetryPolicy::new(budget(10, 0.2), backoff).max_attempts(2);
    let svc = RetryLayer::new(policy).layer_service(fails_first(1, calls.clone()));
    let mut call = tokio::spawn(svc.oneshot(1));
    // Full jitter: the delay is anywhere in [0, 1 s], so just past 1 s the
    // retry has certainly been made; before the first call nothing is.
    tokio::time::sleep(Duration::from_millis(1001)).await;
    assert_eq!((&mut call).await.unwrap().unwrap(), 1);
    assert_eq!(calls.get(), 2);
}

trait LayerService<S> {
    type Service;
    fn layer_service(self, inner: S) -> Self::Service;
}

impl<S, L: tower::Layer<S>> LayerService<S> for L {
    type Service = L::Service;
    fn layer_service(self, inner: S) -> L::Service {
        self.layer(inner)
    }
}

/// A caller that gives up while the policy waits out its back-off stops
/// the retrying: no attempt is made after the drop.
#[tokio::test(start_paused = true)]
async fn a_cancelled_request_makes_no_more_attempts() {
    let calls = Calls::default();
    let backoff = Backoff {
        base: Duration::from_secs(10),
        cap: Duration::from_secs(10),
    };
    let policy = RetryPolicy::new(budget(10, 0.2), backoff).max_attempts(5);
    let svc = RetryLayer::new(policy).layer_service(fails_first(usize::MAX, calls.clone()));
    let call = tokio::spawn(svc.oneshot(1));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(calls.get(), 1);
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(calls.get(), 1, "an attempt was made after the caller left");
}

/// tower's `Retry` does not catch panics, and neither does the policy: a
/// panicking inner service panics the caller (put a catch-panic layer
/// outside), and spends nothing from the budget.
#[tokio::test]
async fn a_panic_in_the_inner_service_reaches_the_caller_and_spends_no_retry() {
    let policy = RetryPolicy::new(budget(10, 0.2), no_wait()).max_attempts(5);
    let before = policy.budget().available();
    let calls = Calls::default();
    let counted = calls.clone();
    let svc = RetryLayer::new(policy.clone()).layer_service(service_fn(move |_: u32| {
        counted.hit();
        async {
            if true {
                panic!("inner future panicked");
            }
            Ok::<u32, BoxError>(0)
        }
    }));
    let joined = tokio::spawn(svc.oneshot(1)).await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(calls.get(), 1);
    assert_eq!(policy.budget().available(), before);
}
