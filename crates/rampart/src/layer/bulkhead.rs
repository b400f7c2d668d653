//! [`BulkheadLayer`]: every call in one of a [`Bulkhead`]'s slots.
//!
//! Why not tower's `ConcurrencyLimit`: it waits in `poll_ready` for as long
//! as it takes, with no bound on who waits; a bulkhead turns callers away
//! at once when its queue is full and after `max_wait` when a slot does
//! not free up — load shedding, not back-pressure. So the slot is taken in
//! `call`, and the layer does not hold up `poll_ready`.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tower::{Layer, Service};

use crate::limit::{Bulkhead, BulkheadPermit};
use crate::{BoxError, Error};

/// Wraps a service in a [`BulkheadService`]; see the
/// [module docs](crate::layer).
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// Calls run in `bulkhead`'s slots (a clone shares them).
    pub fn new(bulkhead: Bulkhead) -> Self {
        BulkheadLayer { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// A service whose calls each hold a [`Bulkhead`] slot from `call` until
/// the response future finishes, is dropped, or unwinds from a panic.
///
/// With a free slot the inner service is called at once. Otherwise the
/// call queues (refused with a boxed
/// [`ErrorKind::BulkheadFull`](crate::ErrorKind::BulkheadFull) when the
/// queue is full, or
/// [`ErrorKind::BulkheadTimeout`](crate::ErrorKind::BulkheadTimeout) after
/// `max_wait`) and the inner service is called once a slot is free — on a
/// clone of it, which is why `S: Clone`: the one `poll_ready` made ready is
/// the one that makes the call, and the service keeps the clone.
///
/// A call that queues must run inside a Tokio runtime with the time driver
/// (the queue wait is a Tokio timer).
#[derive(Clone, Debug)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S> BulkheadService<S> {
    /// The bulkhead the calls run in.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<BulkheadPermit, Error>> + Send>>;

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Ok(permit) = self.bulkhead.try_acquire() {
            // The uncontended path: no clone, no allocation.
            return ResponseFuture {
                future: Some(self.inner.call(req)),
                permit: Some(permit),
                waiting: None,
            };
        }
        let ready = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, ready);
        let bulkhead = self.bulkhead.clone();
        ResponseFuture {
            future: None,
            permit: None,
            waiting: Some(Waiting {
                acquire: Box::pin(async move { bulkhead.acquire().await }),
                inner: ready,
                req,
            }),
        }
    }
}

struct Waiting<S, Req> {
    acquire: Acquire,
    inner: S,
    req: Req,
}

pin_project_lite::pin_project! {
    /// The response future of [`BulkheadService`].
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        future: Option<S::Future>,
        // Dropped with the future: on completion, cancellation or unwind.
        permit: Option<BulkheadPermit>,
        waiting: Option<Waiting<S, Req>>,
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(waiting) = this.waiting.as_mut() {
            let permit = match ready!(waiting.acquire.as_mut().poll(cx)) {
                Ok(permit) => permit,
                Err(refused) => {
                    *this.waiting = None;
                    return Poll::Ready(Err(Box::new(refused)));
                }
            };
            if let Some(Waiting { mut inner, req, .. }) = this.waiting.take() {
                *this.permit = Some(permit);
                this.future.set(Some(inner.call(req)));
            }
        }
        match this.future.as_mut().as_pin_mut() {
            Some(future) => {
                let result = ready!(future.poll(cx));
                this.future.set(None);
                // The slot is free as soon as the call is, not when the
                // caller gets round to dropping this future.
                *this.permit = None;
                Poll::Ready(result.map_err(Into::into))
            }
            None => Poll::Ready(Err(
                "rampart: BulkheadService future polled after completion".into(),
            )),
        }
    }
}

impl<S: Service<Req>, Req> std::fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkheadFuture")
            .field("queued", &self.waiting.is_some())
            .finish_non_exhaustive()
    }
}
