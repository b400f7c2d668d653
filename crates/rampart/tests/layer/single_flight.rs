use std::sync::Arc;

use futures_util::FutureExt;
use rampart::layer::SingleFlightLayer;
use rampart::ErrorKind;
use tokio::sync::Semaphore;
use tower::{service_fn, Layer, Service, ServiceExt};

use crate::{kind, Calls};

/// Requests `(read, key)`: reads are merged by key, writes never.
type Req = (bool, u32);

fn key(req: &Req) -> Option<u32> {
    req.0.then_some(req.1)
}

/// An inner service whose calls wait for one permit of `gate`, then answer
/// `"value {key} #{call}"`, fail (key 13) or panic (key 66).
fn gated(
    calls: Calls,
    gate: Arc<Semaphore>,
) -> impl Service<Req, Response = String, Error = std::io::Error, Future: Send> + Clone + Send + 'static
{
    service_fn(move |(_, k): Req| {
        let call = calls.hit();
        let gate = Arc::clone(&gate);
        async move {
            gate.acquire()
                .await
                .map_err(std::io::Error::other)?
                .forget();
            match k {
                13 => Err(std::io::Error::other("thirteen")),
                66 => panic!("key 66"),
                _ => Ok(format!("value {k} #{call}")),
            }
        }
    })
}

#[tokio::test]
async fn concurrent_reads_of_one_key_share_one_call() {
    let calls = Calls::default();
    let gate = Arc::new(Semaphore::new(0));
    let mut svc = SingleFlightLayer::new(key).layer(gated(calls.clone(), gate.clone()));
    let mut waiting = Vec::new();
    for _ in 0..10 {
        waiting.push(tokio::spawn(svc.ready().await.unwrap().call((true, 7))));
    }
    tokio::task::yield_now().await;
    assert_eq!(svc.in_flight(), 1);
    gate.add_permits(1);
    for answer in waiting {
        assert_eq!(answer.await.unwrap().unwrap(), "value 7 #1");
    }
    assert_eq!(calls.get(), 1);
    assert_eq!(svc.in_flight(), 0);

    // Nothing is cached: the next read makes a new call.
    gate.add_permits(1);
    let again = svc.ready().await.unwrap().call((true, 7)).await.unwrap();
    assert_eq!(again, "value 7 #2");
}

#[tokio::test]
async fn requests_without_a_key_pass_through() {
    let calls = Calls::default();
    let gate = Arc::new(Semaphore::new(3));
    let mut svc = SingleFlightLayer::new(key).layer(gated(calls.clone(), gate));
    let writes = (0..3).map(|_| {
        svc.ready()
            .now_or_never()
            .unwrap()
            .unwrap()
            .call((false, 7))
    });
    let writes: Vec<_> = writes.collect();
    for write in writes {
        write.await.unwrap();
    }
    assert_eq!(calls.get(), 3);
}

/// The leader's caller gives up (a timeout, a client gone): a waiter takes
/// over with its own call instead of hanging.
#[tokio::test]
async fn a_cancelled_leader_hands_over_to_a_waiter() {
    let calls = Calls::default();
    let gate = Arc::new(Semaphore::new(0));
    let mut svc = SingleFlightLayer::new(key).layer(gated(calls.clone(), gate.clone()));
    let mut leader = svc.ready().await.unwrap().call((true, 7));
    assert!((&mut leader).now_or_never().is_none());
    let follower = tokio::spawn(svc.ready().await.unwrap().call((true, 7)));
    tokio::task::yield_now().await;
    assert_eq!(calls.get(), 1);

    drop(leader);
    gate.add_permits(1);
    assert_eq!(follower.await.unwrap().unwrap(), "value 7 #2");
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn an_error_or_a_panic_reaches_every_waiter_and_frees_the_key() {
    let calls = Calls::default();
    let gate = Arc::new(Semaphore::new(0));
    let mut svc = SingleFlightLayer::new(key).layer(gated(calls.clone(), gate.clone()));

    for (k, expect_panic) in [(13, false), (66, true)] {
        let waiting: Vec<_> = (0..3)
            .map(|_| tokio::spawn(svc.ready().now_or_never().unwrap().unwrap().call((true, k))))
            .collect();
        tokio::task::yield_now().await;
        gate.add_permits(1);
        for answer in waiting {
            let err = answer.await.expect("the panic is contained").unwrap_err();
            match kind(&err) {
                ErrorKind::LoadPanicked(message) if expect_panic => {
                    assert_eq!(&*message, "key 66")
                }
                ErrorKind::Source(source) if !expect_panic => {
                    assert_eq!(source.to_string(), "thirteen")
                }
                other => panic!("key {k}: unexpected {other:?}"),
            }
        }
        assert_eq!(svc.in_flight(), 0);
    }
    assert_eq!(calls.get(), 2);
    gate.add_permits(1);
    assert_eq!(
        svc.ready()
            .await
            .unwrap()
            .call((true, 66 + 1))
            .await
            .unwrap(),
        "value 67 #3"
    );
}
