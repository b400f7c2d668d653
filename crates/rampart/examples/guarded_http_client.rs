//! A circuit breaker, a bulkhead and a retry budget around an outgoing HTTP
//! call, as one tower stack over hyper's client.
//!
//! `cargo run -p rampart --example guarded_http_client`
//!
//! Starts a local "upstream" whose behaviour the example switches (healthy,
//! flaky, slow, down), calls it through the stack below, prints what each
//! guard did, and exits. Copy `guarded_client` into your own service.
//!
//! ```text
//! retry (RetryPolicy: budget + jittered back-off; 5xx and errors, never a refusal)
//!   └ circuit breaker (5xx and errors count as failures)
//!       └ bulkhead (4 calls at once, 4 waiting, 1 s wait at most)
//!           └ timeout (2 s)
//!               └ hyper client
//! ```

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rampart::breaker::{BreakerConfig, CircuitBreaker, SlidingWindow};
use rampart::layer::{BulkheadLayer, CircuitBreakerLayer, Outcome, RetryPolicy};
use rampart::limit::{Backoff, Bulkhead, BulkheadConfig, RetryBudget, RetryBudgetConfig};
use rampart::BoxError;
use tower::retry::RetryLayer;
use tower::timeout::TimeoutLayer;
use tower::util::BoxCloneService;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

/// What the client gets back: the status and the whole body.
type Answer = (StatusCode, Bytes);

/// A call's result as the guards see it.
fn counts_as_failure(result: &Result<Answer, BoxError>) -> bool {
    match result {
        Ok((status, _)) => status.is_server_error(),
        Err(_) => true,
    }
}

/// True when a guard refused the call (the breaker is open, the bulkhead
/// is full): retrying that only adds load to what is shedding it.
fn refused(error: &BoxError) -> bool {
    error
        .downcast_ref::<rampart::Error>()
        .is_some_and(rampart::Error::is_rejection)
}

/// The guarded client: `Uri` in, `(status, body)` out. Requests are `Uri`s
/// rather than `http::Request`s because a retry re-sends a clone.
fn guarded_client(
    breaker: CircuitBreaker,
    bulkhead: Bulkhead,
    budget: RetryBudget,
) -> impl Service<Uri, Response = Answer, Error = BoxError, Future: Send> + Clone {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let http = service_fn(move |uri: Uri| {
        let client = client.clone();
        async move {
            let response = client.get(uri).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((status, body))
        }
    });
    let retry = RetryPolicy::new(budget, Backoff::default())
        .max_attempts(3)
        .retry_if(
            |_uri: &Uri, result: &Result<Answer, BoxError>| match result {
                Err(error) if refused(error) => false,
                other => counts_as_failure(other),
            },
        );
    ServiceBuilder::new()
        .layer(RetryLayer::new(retry))
        .layer(
            CircuitBreakerLayer::new(breaker).classify(|result: &Result<Answer, BoxError>| {
                if counts_as_failure(result) {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            }),
        )
        .layer(BulkheadLayer::new(bulkhead))
        .layer(TimeoutLayer::new(Duration::from_secs(2)))
        .service(http)
}

// ------------------------------------------------------------ the upstream

const HEALTHY: u8 = 0;
const FLAKY: u8 = 1;
const SLOW: u8 = 2;
const DOWN: u8 = 3;

#[derive(Clone, Default)]
struct Upstream {
    mode: Arc<AtomicU8>,
    requests: Arc<AtomicU32>,
}

async fn price(State(up): State<Upstream>) -> (StatusCode, &'static str) {
    let n = up.requests.fetch_add(1, Ordering::Relaxed);
    match up.mode.load(Ordering::Relaxed) {
        FLAKY if n % 2 == 0 => (StatusCode::SERVICE_UNAVAILABLE, "try again"),
        SLOW => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            (StatusCode::OK, "42")
        }
        DOWN => (StatusCode::INTERNAL_SERVER_ERROR, "down"),
        _ => (StatusCode::OK, "42"),
    }
}

// ------------------------------------------------------------ the scenes

/// One call through the stack, and how long it took.
async fn timed(
    client: BoxCloneService<Uri, Answer, BoxError>,
    uri: Uri,
) -> (Result<Answer, BoxError>, Duration) {
    let started = Instant::now();
    let result = client.oneshot(uri).await;
    (result, started.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let upstream = Upstream::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let uri: Uri = format!("http://{}/price", listener.local_addr()?).parse()?;
    let app = Router::new()
        .route("/price", get(price))
        .with_state(upstream.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let breaker = CircuitBreaker::new(
        "prices",
        BreakerConfig {
            window: SlidingWindow::Count { calls: 20 },
            minimum_calls: 10,
            consecutive_failures: 8,
            open_wait: Duration::from_millis(500),
            ..BreakerConfig::default()
        },
    );
    let bulkhead = Bulkhead::new(
        "prices",
        BulkheadConfig {
            max_concurrent: 4,
            max_queued: 4,
            max_wait: Duration::from_secs(1),
        },
    );
    let budget = RetryBudget::new(RetryBudgetConfig::default());
    let client = guarded_client(breaker.clone(), bulkhead, budget);

    let scene = |name: &str, mode: u8| {
        upstream.mode.store(mode, Ordering::Relaxed);
        upstream.requests.store(0, Ordering::Relaxed);
        println!("\n== {name}");
    };
    // Each scene starts from a closed breaker with an empty window, so one
    // scene's failures do not decide the next one (an operator's `reset`).
    let fresh = |name: &str, mode: u8| {
        breaker.reset();
        scene(name, mode);
    };
    let client = BoxCloneService::new(client);
    let call = |client: &BoxCloneService<Uri, Answer, BoxError>| timed(client.clone(), uri.clone());
    let show = |result: &Result<Answer, BoxError>, took: Duration| match result {
        Ok((status, body)) => format!("{status} {:?} in {took:.1?}", body),
        Err(error) => format!("refused/failed in {took:.1?}: {error}"),
    };

    fresh("healthy: every call answered", HEALTHY);
    for _ in 0..3 {
        let (result, took) = call(&client).await;
        println!("  {}", show(&result, took));
    }

    fresh("flaky (every other request 503): the retry hides it", FLAKY);
    for _ in 0..4 {
        let (result, took) = call(&client).await;
        println!("  {}", show(&result, took));
    }
    println!(
        "  upstream saw {} requests for 4 calls",
        upstream.requests.load(Ordering::Relaxed)
    );

    fresh("slow (200 ms), 12 calls at once: 4 run, 4 wait, 4 refused at once\n   (a bulkhead refusal counts against the breaker: the dependency is not keeping up)", SLOW);
    let burst: Vec<_> = (0..12).map(|_| tokio::spawn(call(&client))).collect();
    for task in burst {
        let (result, took) = task.await?;
        println!("  {}", show(&result, took));
    }

    fresh(
        "down (500): the breaker opens, then refuses without calling",
        DOWN,
    );
    for _ in 0..6 {
        let (result, took) = call(&client).await;
        println!("  {} [breaker {}]", show(&result, took), breaker.state());
    }
    println!(
        "  upstream saw {} requests for 6 calls",
        upstream.requests.load(Ordering::Relaxed)
    );

    scene(
        "recovered: after open_wait, probes close the breaker",
        HEALTHY,
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..4 {
        let (result, took) = call(&client).await;
        println!("  {} [breaker {}]", show(&result, took), breaker.state());
    }

    server.abort();
    Ok(())
}
