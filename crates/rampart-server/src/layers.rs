//! The defences every request passes through, as tower layers, outermost
//! first: request id → trace → HTTP metrics → load shedding (bounded
//! concurrency, never an unbounded queue) → request timeout → panic
//! isolation → the handler.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Level;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Wraps the routes in the defence layers.
pub fn wrap(routes: Router, state: &AppState) -> Router {
    let server = &state.config.server;
    let metrics = Arc::clone(&state.metrics);
    let on_panic = {
        let metrics = Arc::clone(&metrics);
        move |panic: Box<dyn Any + Send + 'static>| panic_response(&metrics, &*panic)
    };
    let on_overload = {
        let metrics = Arc::clone(&metrics);
        move |err: BoxError| {
            let metrics = Arc::clone(&metrics);
            async move { overload_response(&metrics, &err) }
        }
    };
    let shed_and_timeout = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(on_overload))
        // Shed instead of queueing: when all slots are busy the request is
        // answered 503 at once rather than waiting in an unbounded queue.
        // The limit is global: axum clones route layers per route, and the
        // global layer shares one semaphore across the clones.
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(
            server.max_concurrent_requests,
        ))
        .timeout(server.request_timeout);
    routes
        .layer(CatchPanicLayer::custom(on_panic))
        .layer(shed_and_timeout)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        // 5xx answers are counted in metrics and explained in their bodies;
        // logging each one at error level would flood logs during an
        // outage (or while /readyz says "warming").
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(Level::DEBUG)))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(NextRequestId::default()))
}

/// Request ids: a process-unique counter, unless the caller sent one.
#[derive(Clone, Default)]
struct NextRequestId(Arc<AtomicU64>);

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        // Relaxed: uniqueness needs only atomicity, not ordering.
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{n:016x}"))
            .ok()
            .map(RequestId::new)
    }
}

fn panic_response(metrics: &Metrics, panic: &(dyn Any + Send)) -> Response {
    metrics.panics.inc();
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into());
    tracing::error!(%message, "handler panicked; contained to this request");
    Error::Panic.into_response()
}

fn overload_response(metrics: &Metrics, err: &BoxError) -> Response {
    if err.is::<tower::timeout::error::Elapsed>() {
        metrics.timeouts.inc();
        Error::Timeout.into_response()
    } else {
        // `Overloaded` from load shedding, or anything else a layer raised.
        metrics.shed.inc();
        Error::Overloaded.into_response()
    }
}

/// Records HTTP latency by route template and status, and feeds foreground
/// latency to the warm-up's pressure signal.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let start = Instant::now();
    let response = next.run(request).await;
    let elapsed = start.elapsed();
    state
        .metrics
        .http_duration
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .observe(elapsed.as_secs_f64());
    if route.starts_with("/v1/") {
        state.pressure.foreground.record(elapsed);
    }
    response
}
