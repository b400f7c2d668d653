//! The defences every request passes through, in one layer, in this
//! order: request id → trace span → HTTP metrics → head limits (URI,
//! headers) → load shedding (bounded concurrency, never an unbounded
//! queue) → request timeout → panic isolation → the handler.
//!
//! hyper's own limits (its read buffer, 100 headers, 64 KiB of URI) stay
//! the outer bound, answered by hyper with an empty body; the documented
//! limits checked here are lower, so a client within hyper's bounds always
//! gets the JSON error.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};
use tracing::Instrument;

use crate::config::ServerConfig;
use crate::error::Error;
use crate::ops::logging::ACCESS_TARGET;
use crate::ops::metrics::HttpRoute;
use crate::state::AppState;

/// Wraps the routes in the defence layers.
///
/// The defences are one hand-written layer rather than a stack of tower
/// and `from_fn` layers: axum clones a route's whole service for every
/// request, and each `from_fn` layer clones and boxes what is inside it
/// again. One layer over one `Arc` costs one increment to clone, and the
/// checks that need no waiting (head limits, shedding) run before any
/// future is built (measured: BENCHMARKS.md, HTTP).
///
/// The cache's `GET /v1/r/{resource}/{key}` — nearly all of the traffic —
/// is dispatched before the router (see [`App`]): behind the same
/// defences, without the router's per-request work.
pub fn wrap(routes: Router, state: &AppState) -> App {
    let server = &state.config.server;
    let defences = Arc::new(Defences {
        state: state.clone(),
        limits: HeadLimits {
            max_uri_bytes: server.max_uri_bytes,
            max_header_bytes: server.max_header_bytes,
        },
        in_flight: AtomicUsize::new(0),
        timeout: server.request_timeout,
        next_id: AtomicU64::new(random_start()),
    });
    App {
        router: routes.layer(DefenceLayer(Arc::clone(&defences))),
        defences,
    }
}

/// The template of the route [`App`] dispatches itself.
pub const HOT_ROUTE: &str = "/v1/r/{resource}/{key}";

/// What a connection calls: the cache's GET route directly, every other
/// request through the router; both behind the one set of defences.
///
/// Why: through the router, a hit paid for matching, a map of URL
/// parameters (allocated), the matched path (an extension insert), and two
/// boxed route services cloned per request (the defended route, and the
/// handler's route inside it) — about a third of the user-space
/// instructions of a hit (callgrind, BENCHMARKS.md). The shape test in
/// [`is_hot`] is the router's own for this template (a test checks the two
/// agree on every kind of path); `HEAD` and every other method go to the
/// router.
#[derive(Clone)]
pub struct App {
    router: Router,
    defences: Arc<Defences>,
}

/// Whether `request` is `GET` on [`HOT_ROUTE`]: `/v1/r/`, a segment, `/`,
/// and a last, non-empty segment.
pub fn is_hot(method: &axum::http::Method, path: &str) -> bool {
    if method != axum::http::Method::GET {
        return false;
    }
    match path
        .strip_prefix("/v1/r/")
        .and_then(|rest| rest.split_once('/'))
    {
        // As the router: the resource may be empty (then unknown), the
        // key may not.
        Some((_resource, key)) => !key.is_empty() && !key.contains('/'),
        None => false,
    }
}

impl Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = futures_util::future::Either<
        Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>,
        <Router as Service<Request>>::Future,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both sides are always ready (the router's `poll_ready` is a
        // constant).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        use futures_util::future::Either;
        if is_hot(request.method(), request.uri().path()) {
            let state = self.defences.state.clone();
            Either::Left(
                self.defences
                    .run(request, HOT_ROUTE, move |request| async move {
                        Ok(crate::cache::routes::read_one(&state, request.uri().path()).await)
                    }),
            )
        } else {
            Either::Right(self.router.call(request))
        }
    }
}

/// What every request shares: the settings and the live counts.
struct Defences {
    state: AppState,
    limits: HeadLimits,
    in_flight: AtomicUsize,
    timeout: Duration,
    /// Request ids, unless the caller sent one: a counter from a random
    /// start, so ids are unique in the process and unlikely to repeat
    /// across instances and restarts, at one atomic add per request.
    next_id: AtomicU64,
}

#[derive(Clone)]
struct DefenceLayer(Arc<Defences>);

impl<S> Layer<S> for DefenceLayer {
    type Service = Defended<S>;

    fn layer(&self, inner: S) -> Defended<S> {
        Defended {
            inner,
            defences: Arc::clone(&self.0),
        }
    }
}

/// One route's service behind the defences.
#[derive(Clone)]
struct Defended<S> {
    inner: S,
    defences: Arc<Defences>,
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl<S> Service<Request> for Defended<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let template = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str);
        // The template outlives the request: the route table is the
        // router's, and labels are interned by the metrics.
        let route = self.defences.state.metrics.http_route(template);
        // A watch holds its request up to config_center.max_wait, then
        // answers: the request timeout counts from there. Parked watchers
        // are bounded by config_center.max_watchers (in the handler), not
        // by the in-flight limit, which bounds work.
        let watch = crate::config_center::routes::is_watch(request.method(), template);
        // A watch's latency is how long it was parked, not how slow the
        // service is: counted, it would hold the warm-up back for as long
        // as anyone watches a namespace.
        let foreground = template.starts_with("/v1/") && !watch;
        // A profile samples for up to its own bound, then symbolises: the
        // request timeout of ordinary requests would cut it short.
        let timeout = if template.starts_with(crate::ops::profile::ROUTE_PREFIX) {
            crate::ops::profile::route_timeout(self.defences.timeout)
        } else if watch {
            self.defences.timeout + self.defences.state.config.config_center.max_wait
        } else {
            self.defences.timeout
        };
        let inner = &mut self.inner;
        self.defences
            .run_labelled(request, route, foreground, timeout, !watch, |request| {
                inner.call(request)
            })
    }
}

impl Defences {
    /// Runs `call` behind the defences for a request on the route
    /// `template` (see [`App`]).
    fn run<F>(
        self: &Arc<Self>,
        request: Request,
        template: &str,
        call: impl FnOnce(Request) -> F,
    ) -> Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>
    where
        F: Future<Output = Result<Response, Infallible>> + Send + 'static,
    {
        let route = self.state.metrics.http_route(template);
        let foreground = template.starts_with("/v1/");
        self.run_labelled(request, route, foreground, self.timeout, true, call)
    }

    /// The defences, in the module doc's order, around `call`. `route`
    /// labels the metrics; `foreground` requests (the API's own, not
    /// operators') feed the warm-up's back-off when they get slow;
    /// `timeout` is the request's deadline from its start; `counted`
    /// requests take a slot of the in-flight limit (shed past it).
    fn run_labelled<F>(
        self: &Arc<Self>,
        request: Request,
        route: HttpRoute,
        foreground: bool,
        timeout: Duration,
        counted: bool,
        call: impl FnOnce(Request) -> F,
    ) -> Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>
    where
        F: Future<Output = Result<Response, Infallible>> + Send + 'static,
    {
        let start = Instant::now();
        let defences = Arc::clone(self);
        let metrics = &defences.state.metrics;
        // Request id first: every answer below carries it.
        let request_id = match request.headers().get(X_REQUEST_ID) {
            Some(sent) => sent.clone(),
            None => defences.new_request_id(),
        };
        // Never headers in the span: they carry the admin token. Fields
        // are only evaluated when the span is enabled.
        let span = tracing::debug_span!(
            "request",
            method = %request.method(),
            uri = %request.uri(),
            version = ?request.version(),
            request_id = ?request_id,
        );
        // The access log's fields, taken only when its line will be
        // written: off (the default), this is one cached call-site test,
        // and the boxed future grows by one pointer.
        let access = if tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
            Some(Box::new((request.method().clone(), request.uri().clone())))
        } else {
            None
        };
        let early = if let Err(refused) = defences.limits.check(&request) {
            Err(refused.into_response())
        } else if let Some(permit) = if counted {
            defences.try_enter().map(Some)
        } else {
            Some(None)
        } {
            // Synchronous work inside `call` can panic too.
            match catch_unwind(AssertUnwindSafe(|| call(request))) {
                Ok(answer) => Ok((permit, answer)),
                Err(_) => Err(panic_response()),
            }
        } else {
            metrics.shed.inc();
            Err(Error::Overloaded.into_response())
        };
        Box::pin(
            async move {
                tracing::debug!("started processing request");
                let mut response = match early {
                    Err(response) => response,
                    Ok((permit, answer)) => {
                        let deadline = start + timeout;
                        let response = match guarded(answer, deadline).await {
                            Outcome::Answered(response) => response,
                            Outcome::TimedOut => {
                                defences.state.metrics.timeouts.inc();
                                Error::Timeout.into_response()
                            }
                            Outcome::Panicked => panic_response(),
                        };
                        drop(permit);
                        response
                    }
                };
                let elapsed = start.elapsed();
                let metrics = &defences.state.metrics;
                let status = response.status();
                metrics.observe_http(&route, status.as_str(), elapsed.as_secs_f64());
                if foreground {
                    defences.state.pressure.foreground.record(elapsed);
                }
                if response.extensions().get::<PanicContained>().is_some() {
                    metrics.count_panic(&route);
                }
                // 5xx answers are counted in metrics and explained in their
                // bodies; logging each above debug would flood logs during
                // an outage (or while /readyz says "warming").
                tracing::debug!(
                    ?elapsed,
                    status = status.as_u16(),
                    "finished processing request"
                );
                if let Some(access) = access {
                    let (method, uri) = *access;
                    tracing::info!(
                        target: ACCESS_TARGET,
                        %method,
                        %uri,
                        status = status.as_u16(),
                        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                        request_id = request_id.to_str().unwrap_or("<not text>"),
                        "access"
                    );
                }
                response
                    .headers_mut()
                    .entry(X_REQUEST_ID)
                    .or_insert(request_id);
                Ok(response)
            }
            .instrument(span),
        )
    }

    fn new_request_id(&self) -> HeaderValue {
        // Relaxed: uniqueness needs only atomicity, not ordering.
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        // 16 lower-case hex digits, written without a formatter.
        let mut text = [0u8; 16];
        for (i, digit) in text.iter_mut().enumerate() {
            let nibble = (n >> (60 - 4 * i)) & 0xf;
            *digit = b"0123456789abcdef"[nibble as usize];
        }
        match HeaderValue::from_bytes(&text) {
            Ok(value) => value,
            // Hex digits are always a valid header value.
            Err(_) => HeaderValue::from_static("0"),
        }
    }

    /// A slot among the requests in flight, or `None` when all are taken
    /// (the request is shed).
    fn try_enter(self: &Arc<Self>) -> Option<InFlight> {
        // Relaxed: the count is its own only datum; no other memory is
        // published through it.
        let before = self.in_flight.fetch_add(1, Ordering::Relaxed);
        // The limit (`server.max_concurrent_requests`, all routes
        // together) is live: past it a request is shed, never queued.
        if before >= self.state.reload.max_in_flight() {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(InFlight(Arc::clone(self)))
    }
}

/// A random start for the request-id counter; the clock if the system
/// has no randomness to give (ids stay unique within the process).
fn random_start() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// A request's slot in flight, given back on drop (also when the request's
/// future is dropped: the client went away).
struct InFlight(Arc<Defences>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a handler's future ended.
enum Outcome {
    Answered(Response),
    TimedOut,
    Panicked,
}

/// A handler's future held to the request deadline, with panics caught.
/// The handler is polled first and the timer is only made when it has to
/// wait: a cache hit answers on its first poll and never touches the
/// runtime's timer wheel.
async fn guarded<F>(answer: F, deadline: Instant) -> Outcome
where
    F: Future<Output = Result<Response, Infallible>>,
{
    let mut answer = std::pin::pin!(answer);
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    std::future::poll_fn(|cx| {
        match catch_unwind(AssertUnwindSafe(|| answer.as_mut().poll(cx))) {
            Ok(Poll::Ready(Ok(response))) => return Poll::Ready(Outcome::Answered(response)),
            Ok(Poll::Ready(Err(never))) => match never {},
            Err(_) => return Poll::Ready(Outcome::Panicked),
            Ok(Poll::Pending) => {}
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Outcome::TimedOut),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Marks a response as a contained panic, for the metrics to count by
/// route.
#[derive(Clone, Copy)]
struct PanicContained;

/// The answer to a contained panic. Not logged here: the panic hook logs
/// (rate-limited).
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

impl HeadLimits {
    /// 414 past the URI limit, 431 past the header limit, as JSON.
    fn check(&self, request: &Request) -> Result<(), Error> {
        let uri = request.uri();
        let uri_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len())
            + uri.scheme_str().map_or(0, str::len);
        if uri_len > self.max_uri_bytes {
            return Err(Error::UriTooLong {
                len: uri_len,
                max: self.max_uri_bytes,
            });
        }
        // As on the wire: "name: value\r\n".
        let header_len: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        if header_len > self.max_header_bytes {
            return Err(Error::HeadersTooLarge {
                len: header_len,
                max: self.max_header_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Method;
    use axum::routing::on;
    use tower::ServiceExt;

    /// The router's own answer to "which template does this path match",
    /// for every route the service has.
    async fn matched(method: Method, path: &str) -> Option<String> {
        let mut router = Router::new();
        for route in crate::ops::openapi::routes() {
            let filter = match route.method {
                "get" => axum::routing::MethodFilter::GET,
                "post" => axum::routing::MethodFilter::POST,
                "put" => axum::routing::MethodFilter::PUT,
                "patch" => axum::routing::MethodFilter::PATCH,
                "delete" => axum::routing::MethodFilter::DELETE,
                other => panic!("a method this test does not know: {other}"),
            };
            router = router.route(
                route.path,
                on(filter, |path: MatchedPath| async move {
                    path.as_str().to_owned()
                }),
            );
        }
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("request");
        let response = router.oneshot(request).await.expect("infallible");
        if !response.status().is_success() {
            return None;
        }
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .expect("body");
        Some(String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_hot_dispatch_takes_exactly_what_the_router_gives_its_route() {
        let paths = [
            "/v1/r/users/42",
            "/v1/r/users/a%2Fb",
            "/v1/r/users/..",
            "/v1/r/users/.",
            "/v1/r/users/",
            "/v1/r/users",
            "/v1/r//42",
            "/v1/r//",
            "/v1/r/users/42/",
            "/v1/r/users/42/invalidate",
            "/v1/r/users/42/x/y",
            "/v1/r/%FF/1",
            "/v1/rr/users/42",
            "/v1/r/users/42?x=1",
            "/healthz",
            "/",
        ];
        for path in paths {
            for method in [Method::GET, Method::POST, Method::HEAD] {
                let router_says = matched(method.clone(), path).await.as_deref() == Some(HOT_ROUTE)
                    && method == Method::GET;
                let uri: axum::http::Uri = path.parse().expect("uri");
                assert_eq!(is_hot(&method, uri.path()), router_says, "{method} {path}");
            }
        }
    }
}
