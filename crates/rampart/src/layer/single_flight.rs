//! [`SingleFlightLayer`]: concurrent identical requests share one call.
//!
//! For idempotent requests only (reads): the key function says which
//! requests are "the same", and returns `None` for those that must never
//! be merged (writes), which then pass straight through.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::flight::Flight;
use crate::{BoxError, Error};

/// Wraps a service in a [`SingleFlightService`]; see the
/// [module docs](crate::layer).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rampart::BoxError> {
/// use rampart::layer::SingleFlightLayer;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// // GETs of one path share a call; everything else passes through.
/// let fetch = ServiceBuilder::new()
///     .layer(SingleFlightLayer::new(|req: &(&'static str, String)| {
///         (req.0 == "GET").then(|| req.1.clone())
///     }))
///     .service(service_fn(|req: (&'static str, String)| async move {
///         Ok::<_, std::io::Error>(format!("{} {}", req.0, req.1))
///     }));
/// assert_eq!(fetch.oneshot(("GET", "/users/7".into())).await?, "GET /users/7");
/// # Ok(()) }
/// ```
pub struct SingleFlightLayer<Req, K, F> {
    key: F,
    _types: PhantomData<fn(&Req) -> K>,
}

impl<Req, K, F> SingleFlightLayer<Req, K, F>
where
    F: Fn(&Req) -> Option<K>,
{
    /// Requests for which `key` gives the same `Some(k)` share one call
    /// while it runs; `None` means "never merge this one".
    pub fn new(key: F) -> Self {
        SingleFlightLayer {
            key,
            _types: PhantomData,
        }
    }
}

impl<Req, K, F: Clone> Clone for SingleFlightLayer<Req, K, F> {
    fn clone(&self) -> Self {
        SingleFlightLayer {
            key: self.key.clone(),
            _types: PhantomData,
        }
    }
}

impl<Req, K, F> fmt::Debug for SingleFlightLayer<Req, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleFlightLayer").finish_non_exhaustive()
    }
}

impl<S, Req, K, F> Layer<S> for SingleFlightLayer<Req, K, F>
where
    S: Service<Req>,
    F: Clone,
{
    type Service = SingleFlightService<S, Req, K, F>;

    /// Each call of `layer` starts a fresh group; the service's clones
    /// share it.
    fn layer(&self, inner: S) -> Self::Service {
        SingleFlightService {
            inner,
            key: self.key.clone(),
            flight: Arc::new(Flight::default()),
        }
    }
}

/// A service that merges concurrent requests with the same key into one
/// call of the inner service, whose result every one of them gets
/// (`S::Response: Clone`).
///
/// * The call is made by the first request (the leader) with its own
///   request; the others wait. If the leader is cancelled, one waiting
///   request takes over and makes its own call, so nobody hangs.
/// * An inner error reaches every waiter as a boxed [`Error`] of kind
///   [`ErrorKind::Source`](crate::ErrorKind::Source) (one error shared by
///   all; its `source()` is the inner error).
/// * A panic in the inner service is caught and becomes
///   [`ErrorKind::LoadPanicked`](crate::ErrorKind::LoadPanicked) for the
///   leader and every waiter; the key is free for the next call.
/// * Nothing is cached: once the call finishes, the next request for the
///   key makes a new one.
///
/// Like [`BulkheadService`](super::BulkheadService) it calls a clone of
/// the inner service (a waiter may make the call later, after taking
/// over), so `S: Clone`. The response future is boxed.
pub struct SingleFlightService<S: Service<Req>, Req, K, F> {
    inner: S,
    key: F,
    flight: Arc<Flight<K, S::Response>>,
}

impl<S: Service<Req>, Req, K, F> SingleFlightService<S, Req, K, F> {
    /// Keys with a call running now.
    pub fn in_flight(&self) -> usize
    where
        K: Hash + Eq + Clone,
        S::Response: Clone,
    {
        self.flight.in_flight()
    }
}

impl<S, Req, K, F> Clone for SingleFlightService<S, Req, K, F>
where
    S: Service<Req> + Clone,
    F: Clone,
{
    fn clone(&self) -> Self {
        SingleFlightService {
            inner: self.inner.clone(),
            key: self.key.clone(),
            flight: Arc::clone(&self.flight),
        }
    }
}

impl<S: Service<Req>, Req, K, F> fmt::Debug for SingleFlightService<S, Req, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleFlightService")
            .finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Req, K, F> Service<Req> for SingleFlightService<S, Req, K, F>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Response: Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Req: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: Fn(&Req) -> Option<K>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(key) = (self.key)(&req) else {
            let future = self.inner.call(req);
            return Box::pin(async move { future.await.map_err(Into::into) });
        };
        let ready = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, ready);
        let flight = Arc::clone(&self.flight);
        Box::pin(async move {
            let (result, _role) = flight
                .run(key, move || {
                    let call = ready.call(req);
                    async move { call.await.map_err(|e| Error::source(e.into())) }
                })
                .await;
            result.map_err(|e| Box::new(e) as BoxError)
        })
    }
}
