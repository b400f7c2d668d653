//! One HTTP/1.1 connection: hyper serves it, and a watchdog closes it when
//! the client takes too long.
//!
//! A connection is always in one of three phases, each with its deadline:
//!
//! | phase | from | deadline |
//! |---|---|---|
//! | head | accept, or the first byte of a later request | `header_read_timeout` |
//! | busy | the head parsed (the request handed to the service) | `request_timeout` + 10 s of slack to write the answer |
//! | idle | the response body done (kept alive) | `idle_timeout` |
//!
//! hyper's own `header_read_timeout` is not used: it counts from the moment
//! hyper waits for the next head, so on a kept-alive connection it bounds
//! idle time and header time together, and a 10 s header bound would close
//! every connection idle for 10 s. The busy bound catches a client that
//! never reads its response (hyper then never finishes writing it).
//!
//! Costs per request: two clock reads and a few uncontended atomics on the
//! connection's own state. The watchdog is one timer per connection, re-armed
//! when its deadline passes, not per request.

use std::cell::RefCell;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::http::layers::App;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::ops::metrics::Metrics;

/// The bounds one connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// The longest a request may be busy: the request timeout plus slack to
    /// write the answer.
    pub busy_timeout: Duration,
    /// hyper's read buffer: the outer bound on a request head. Heads past it
    /// get hyper's own (empty-bodied) 431; the JSON limits in `layers.rs`
    /// are lower.
    pub max_buf_size: usize,
}

/// Why the watchdog closed a connection (the `phase` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    Header,
    Idle,
    Busy,
}

impl Timeout {
    fn label(self) -> &'static str {
        match self {
            Timeout::Header => "header",
            Timeout::Idle => "idle",
            Timeout::Busy => "stuck",
        }
    }
}

/// What a connection is doing, written by the IO wrapper and the service,
/// read by the watchdog. Times are milliseconds since `origin`, plus one so
/// that 0 can mean "not set".
struct Activity {
    origin: Instant,
    /// When the current head's first byte came (head phase), or 0.
    head_since: AtomicU64,
    /// When the current request was handed to the service (busy phase), or 0.
    busy_since: AtomicU64,
    /// When the last response finished (idle phase).
    idle_since: AtomicU64,
    /// Milliseconds the current request may be busy past the busy bound
    /// (a long-poll's hold, see [`hold_busy`]); reset by each request.
    busy_extra: AtomicU64,
}

tokio::task_local! {
    /// The connection being served, for [`hold_busy`].
    static ACTIVITY: Arc<Activity>;
}

/// Lets the request being served on this connection be busy `hold` longer
/// than the busy bound before the watchdog calls it stuck: a long-poll
/// that parks on purpose. The request's own timeout (`layers.rs`) still
/// bounds it; outside a connection (a test calling the router) this does
/// nothing.
pub fn hold_busy(hold: Duration) {
    let ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
    let _ = ACTIVITY.try_with(|activity| activity.busy_extra.store(ms, Ordering::Relaxed));
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            // Accepted: the first head is due within the header timeout.
            head_since: AtomicU64::new(1),
            busy_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(1),
            busy_extra: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// Bytes were read: if the connection was idle, a head has begun.
    fn on_read(&self) {
        // Relaxed: a stale view only delays the head phase to the next
        // read; the watchdog re-reads before it closes anything.
        if self.busy_since.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(self.now(), Ordering::Relaxed);
        }
    }

    /// A head was parsed and handed to the service.
    fn on_request(&self) {
        self.busy_extra.store(0, Ordering::Relaxed);
        self.busy_since.store(self.now(), Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
    }

    /// The response body is done (or dropped): kept-alive idle from now.
    fn on_response_done(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
        // Release: the watchdog that sees "not busy" sees the idle time too.
        self.busy_since.store(0, Ordering::Release);
    }

    /// The current phase's deadline.
    fn deadline(&self, limits: &Limits) -> (Instant, Timeout) {
        let at = |since: u64, bound: Duration| {
            self.origin + Duration::from_millis(since.saturating_sub(1)) + bound
        };
        let busy = self.busy_since.load(Ordering::Acquire);
        if busy != 0 {
            let extra = Duration::from_millis(self.busy_extra.load(Ordering::Relaxed));
            return (at(busy, limits.busy_timeout + extra), Timeout::Busy);
        }
        let head = self.head_since.load(Ordering::Relaxed);
        if head != 0 {
            return (at(head, limits.header_read_timeout), Timeout::Header);
        }
        let idle = self.idle_since.load(Ordering::Relaxed);
        (at(idle, limits.idle_timeout), Timeout::Idle)
    }

    /// Resolves when the current phase's deadline has passed. Wakes at
    /// least every `header_read_timeout` outside the head phase, so a head
    /// begun during a long idle wait is still held to its own bound.
    async fn expired(&self, limits: &Limits) -> Timeout {
        loop {
            let (deadline, phase) = self.deadline(limits);
            if deadline <= Instant::now() {
                return phase;
            }
            let wake = if phase == Timeout::Header {
                deadline
            } else {
                deadline.min(Instant::now() + limits.header_read_timeout)
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// The TCP stream, telling [`Activity`] when bytes arrive.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A response body that marks the connection idle when it is done with.
struct TrackedBody {
    inner: Body,
    /// Held only for its `Drop`.
    _done: ResponseDone,
}

/// Marks the response done when dropped: after the last frame, or when
/// hyper drops an unfinished body (the connection is going away).
struct ResponseDone(Arc<Activity>);

impl Drop for ResponseDone {
    fn drop(&mut self) {
        self.0.on_response_done();
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one accepted connection until the client closes it, the
/// watchdog does, or `stop` asks for a graceful end (in-flight requests
/// finish, then the connection closes).
pub async fn serve(
    stream: TcpStream,
    app: App,
    limits: Limits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    // This connection's own token: the select below polls it on every
    // wake of the connection (each request, each read), and polling the
    // server's token itself locks one mutex that every connection shares.
    // A child is cancelled with its parent and locks only its own node.
    let stop = stop.child_token();
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        stream,
        activity: Arc::clone(&activity),
    });
    // One app per connection, called in place: cloning it per request
    // (as `oneshot` would) is an increment and a decrement on one counter
    // that every connection's requests share. hyper calls the service with
    // `&self`, hence the cell; HTTP/1 serves one request at a time, and the
    // borrow ends before `call` returns, so it is never contended.
    let app = RefCell::new(app);
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            activity.on_request();
            let done = ResponseDone(Arc::clone(&activity));
            // `App` is always ready (its `poll_ready` is a constant).
            let answer = app.borrow_mut().call(request.map(Body::new));
            async move {
                // `done` moves into the body; if this future is dropped
                // first (the connection closed), it is dropped with it.
                let response = answer.await?;
                Ok::<_, Infallible>(response.map(|inner| TrackedBody { inner, _done: done }))
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size(limits.max_buf_size)
        // See the module doc: the watchdog bounds heads and idle time.
        .header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    // The handlers run inside the connection's polls: they see ACTIVITY.
    let scope = Arc::clone(&activity);
    ACTIVITY.scope(scope, async move {
    tokio::pin!(connection);
    // Biased, the connection first: it is the branch that is ready on
    // nearly every wake, and an unbiased select draws a random number per
    // wake to pick the order.
    tokio::select! {
        biased;
        result = connection.as_mut() => log_end(result),
        phase = activity.expired(&limits) => {
            metrics.connection_timeouts.with_label_values(&[phase.label()]).inc();
            tracing::debug!(phase = phase.label(), "closing a connection past its deadline");
            // Returning drops the connection, which closes the socket.
        }
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                biased;
                result = connection.as_mut() => log_end(result),
                phase = activity.expired(&limits) => {
                    metrics.connection_timeouts.with_label_values(&[phase.label()]).inc();
                }
            }
        }
    }
    })
    .await;
}

/// Connection errors are the client's business (a reset, a malformed
/// request hyper answered 400): debug level, or a flood could fill logs.
fn log_end(result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        tracing::debug!(%err, "connection ended with an error");
    }
}
