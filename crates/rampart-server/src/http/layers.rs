//! The defences every request passes through, as tower layers, outermost
//! first: request id → trace → HTTP metrics → head limits (URI, headers)
//! → load shedding (bounded concurrency, never an unbounded queue) →
//! request timeout → panic isolation → the handler.
//!
//! hyper's own limits (its read buffer, 100 headers, 64 KiB of URI) stay
//! the outer bound, answered by hyper with an empty body; the documented
//! limits checked here are lower, so a client within hyper's bounds always
//! gets the JSON error.

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
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, TraceLayer};
use tracing::Level;

use crate::config::ServerConfig;
use crate::error::Error;
use crate::ops::metrics::Metrics;
use crate::state::AppState;

/// Wraps the routes in the defence layers.
pub fn wrap(routes: Router, state: &AppState) -> Router {
    let server = &state.config.server;
    let metrics = Arc::clone(&state.metrics);
    let on_panic = |_: Box<dyn Any + Send + 'static>| panic_response();
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
    let head_limits = HeadLimits {
        max_uri_bytes: server.max_uri_bytes,
        max_header_bytes: server.max_header_bytes,
    };
    routes
        .layer(CatchPanicLayer::custom(on_panic))
        .layer(shed_and_timeout)
        .layer(middleware::from_fn_with_state(head_limits, check_head))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(
            TraceLayer::new_for_http()
                // Never headers: they carry the admin token.
                .make_span_with(DefaultMakeSpan::new().include_headers(false))
                // 5xx answers are counted in metrics and explained in their
                // bodies; logging each one at error level would flood logs
                // during an outage (or while /readyz says "warming").
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
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

/// Marks a response as a contained panic, for `observe` to count by route.
#[derive(Clone, Copy)]
struct PanicContained;

/// The answer to a contained panic. Neither logged nor counted here: the
/// panic hook logs (rate-limited), and `observe`, which knows the route,
/// counts.
fn panic_response() -> Response {
    let mut response = Error::Panic.into_response();
    response.extensions_mut().insert(PanicContained);
    response
}

/// The documented limits on a request head, checked before routing's
/// handlers run (`server.max_uri_bytes`, `server.max_header_bytes`).
#[derive(Clone, Copy)]
struct HeadLimits {
    max_uri_bytes: usize,
    max_header_bytes: usize,
}

/// hyper's read buffer: room for a head at both documented limits plus
/// the request line and slack, so every head within them reaches
/// `check_head`; much larger ones get hyper's own 431.
pub fn hyper_max_buf_size(server: &ServerConfig) -> usize {
    (server.max_uri_bytes + server.max_header_bytes + 16 * 1024).max(8 * 1024)
}

/// 414 past the URI limit, 431 past the header limit, as JSON.
async fn check_head(State(limits): State<HeadLimits>, request: Request, next: Next) -> Response {
    let uri = request.uri();
    let uri_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, str::len);
    if uri_len > limits.max_uri_bytes {
        return Error::UriTooLong {
            len: uri_len,
            max: limits.max_uri_bytes,
        }
        .into_response();
    }
    // As on the wire: "name: value\r\n".
    let header_len: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_len > limits.max_header_bytes {
        return Error::HeadersTooLarge {
            len: header_len,
            max: limits.max_header_bytes,
        }
        .into_response();
    }
    next.run(request).await
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
    if response.extensions().get::<PanicContained>().is_some() {
        state
            .metrics
            .panics
            .with_label_values(&[route.as_str()])
            .inc();
    }
    response
}
