use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rampart::breaker::{BreakerConfig, CircuitBreaker, SlidingWindow, State};
use rampart::layer::{BulkheadLayer, CircuitBreakerLayer};
use rampart::limit::{Bulkhead, BulkheadConfig};
use rampart::ErrorKind;
use tokio::sync::Semaphore;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

use crate::{kind, Calls};

fn bulkhead(max_concurrent: usize, max_queued: usize) -> Bulkhead {
    Bulkhead::new(
        "dep",
        BulkheadConfig {
            max_concurrent,
            max_queued,
            max_wait: Duration::from_millis(100),
        },
    )
}

/// An inner service whose calls each wait for one permit of `gate`.
fn gated(
    calls: Calls,
    gate: Arc<Semaphore>,
) -> impl Service<u32, Response = u32, Error = std::io::Error, Future: Send> + Clone {
    service_fn(move |n: u32| {
        calls.hit();
        let gate = Arc::clone(&gate);
        async move {
            gate.acquire()
                .await
                .map_err(std::io::Error::other)?
                .forget();
            Ok(n)
        }
    })
}

#[tokio::test]
async fn a_full_bulkhead_refuses_at_once_without_calling_the_inner_service() {
    let bulkhead = bulkhead(1, 0);
    let calls = Calls::default();
    let gate = Arc::new(Semaphore::new(0));
    let mut svc = BulkheadLayer::new(bulkhead.clone()).layer(gated(calls.clone(), gate.clone()));

    let first = tokio::spawn(svc.ready().await.unwrap().call(1));
    tokio::task::yield_now().await;
    assert_eq!(bulkhead.in_flight(), 1);

    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert!(
        matches!(
            kind(&err),
            ErrorKind::BulkheadFull {
                max_concurrent: 1,
                max_queued: 0,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        calls.get(),
        1,
        "a refused call must not reach the inner service"
    );

    gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test]
async fn a_queued_call_runs_when_a_slot_frees_and_times_out_when_none_does() {
    let bulkhead = bulkhead(1, 1);
    let calls = Calls::default();
    let gate = Arc::new(Semaphore::new(0));
    let mut svc = BulkheadLayer::new(bulkhead.clone()).layer(gated(calls.clone(), gate.clone()));

    let first = tokio::spawn(svc.ready().await.unwrap().call(1));
    tokio::task::yield_now().await;
    let second = tokio::spawn(svc.ready().await.unwrap().call(2));
    tokio::task::yield_now().await;
    assert_eq!(bulkhead.queued(), 1);
    assert_eq!(calls.get(), 1, "the queued call waits before calling");

    gate.add_permits(2);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(second.await.unwrap().unwrap(), 2);
    assert_eq!(calls.get(), 2);
    assert_eq!((bulkhead.in_flight(), bulkhead.queued()), (0, 0));

    // Now nothing frees the slot: the queued call gives up after max_wait.
    let stuck = tokio::spawn(svc.ready().await.unwrap().call(3));
    tokio::task::yield_now().await;
    let err = svc.ready().await.unwrap().call(4).await.unwrap_err();
    assert!(
        matches!(kind(&err), ErrorKind::BulkheadTimeout { .. }),
        "{err}"
    );
    assert_eq!(calls.get(), 3);
    stuck.abort();
}

#[tokio::test]
async fn cancelled_calls_give_back_their_slot_and_their_queue_place() {
    let bulkhead = bulkhead(1, 1);
    let gate = Arc::new(Semaphore::new(0));
    let mut svc = BulkheadLayer::new(bulkhead.clone()).layer(gated(Calls::default(), gate));

    let mut running = Box::pin(svc.ready().await.unwrap().call(1));
    assert!((&mut running).now_or_never().is_none());
    let mut queued = Box::pin(svc.ready().await.unwrap().call(2));
    assert!((&mut queued).now_or_never().is_none());
    assert_eq!((bulkhead.in_flight(), bulkhead.queued()), (1, 1));

    drop(queued);
    assert_eq!(bulkhead.queued(), 0);
    drop(running);
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test]
async fn a_panic_in_the_inner_service_gives_back_the_slot() {
    let bulkhead = bulkhead(1, 0);
    let mut svc = BulkheadLayer::new(bulkhead.clone()).layer(service_fn(|_: ()| async {
        if true {
            panic!("inner future panicked");
        }
        Ok::<(), std::io::Error>(())
    }));
    let future = svc.ready().await.unwrap().call(());
    assert!(tokio::spawn(future).await.unwrap_err().is_panic());
    assert_eq!(bulkhead.in_flight(), 0);

    // Same for a panic in the inner `call` itself.
    let mut svc = BulkheadLayer::new(bulkhead.clone()).layer(service_fn(|_: ()| {
        if true {
            panic!("inner call panicked");
        }
        std::future::ready(Ok::<(), std::io::Error>(()))
    }));
    let ready = svc.ready().await.unwrap();
    assert!(std::panic::catch_unwind(AssertUnwindSafe(|| ready.call(()))).is_err());
    assert_eq!(bulkhead.in_flight(), 0);
}

/// Breaker outside the bulkhead (the module docs' order): a bulkhead that
/// cannot admit calls counts against the dependency, as in `Guarded`, and
/// once open the breaker refuses before anyone queues.
#[tokio::test]
async fn composed_with_a_breaker_bulkhead_refusals_open_it() {
    let breaker = CircuitBreaker::new(
        "dep",
        BreakerConfig {
            window: SlidingWindow::Count { calls: 10 },
            consecutive_failures: 2,
            ..BreakerConfig::default()
        },
    );
    let bulkhead = bulkhead(1, 0);
    let gate = Arc::new(Semaphore::new(0));
    let mut svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .layer(BulkheadLayer::new(bulkhead.clone()))
        .service(gated(Calls::default(), gate.clone()));

    let holder = tokio::spawn(svc.ready().await.unwrap().call(1));
    tokio::task::yield_now().await;
    for _ in 0..2 {
        let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
        assert!(
            matches!(kind(&err), ErrorKind::BulkheadFull { .. }),
            "{err}"
        );
    }
    assert_eq!(breaker.state(), State::Open);
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    assert!(matches!(kind(&err), ErrorKind::BreakerOpen { .. }), "{err}");

    gate.add_permits(1);
    assert_eq!(holder.await.unwrap().unwrap(), 1);
}
