//! [`CircuitBreakerLayer`]: every call through a [`CircuitBreaker`].
//!
//! Why the breaker refuses in `call` rather than in `poll_ready`: an error
//! from `poll_ready` means "this service is broken for good" to tower's
//! `Buffer` and balancers, which then drop it; an open breaker is a
//! per-call answer that changes within seconds.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tower::{Layer, Service};

use crate::breaker::{CircuitBreaker, Permit};
use crate::{BoxError, Error};

/// What a finished call says about the dependency's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The dependency answered (a "not found" is a healthy answer).
    Success,
    /// The call failed in a way that counts against the dependency.
    Failure,
    /// The outcome says nothing about the dependency (the caller's own bad
    /// request, say): counted as neither.
    Ignore,
}

/// Decides the [`Outcome`] of a call from its result.
///
/// Any `Fn(&Result<Res, E>) -> Outcome` is one, so an HTTP client can count
/// 5xx answers as failures:
///
/// ```
/// use rampart::layer::Outcome;
/// let classify = |result: &Result<u16, std::io::Error>| match result {
///     Ok(status) if *status >= 500 => Outcome::Failure,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// };
/// # let _ = rampart::layer::CircuitBreakerLayer::new(
/// #     rampart::breaker::CircuitBreaker::new("x", Default::default())).classify(classify);
/// ```
pub trait Classify<Res, E> {
    /// The outcome of one finished call.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a success, `Err` a failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorsAreFailures;

impl<Res, E> Classify<Res, E> for ErrorsAreFailures {
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }
}

/// Wraps a service in a [`CircuitBreakerService`]; see the
/// [module docs](crate::layer).
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<C = ErrorsAreFailures> {
    breaker: CircuitBreaker,
    classify: C,
}

impl CircuitBreakerLayer {
    /// Calls go through `breaker` (a clone shares its state); `Err` results
    /// count as failures.
    pub fn new(breaker: CircuitBreaker) -> Self {
        CircuitBreakerLayer {
            breaker,
            classify: ErrorsAreFailures,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Judge results with `classify` instead (see [`Classify`]).
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// A service whose calls go through a [`CircuitBreaker`]: refused with a
/// boxed [`ErrorKind::BreakerOpen`](crate::ErrorKind::BreakerOpen) while it
/// is open, the inner service not called; otherwise called, and the result
/// reported as the classifier says.
///
/// A response future dropped before it finishes reports nothing (frees a
/// half-open probe slot); a panic in the inner service's `call` or future
/// counts as a failure and goes on unwinding.
#[derive(Clone, Debug)]
pub struct CircuitBreakerService<S, C = ErrorsAreFailures> {
    inner: S,
    breaker: CircuitBreaker,
    classify: C,
}

impl<S, C> CircuitBreakerService<S, C> {
    /// The breaker the calls go through.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_acquire() {
            Ok(permit) => {
                // Made before the inner call, so a panic in `call` itself
                // unwinds through the judge and counts as a failure.
                let judge = Judge {
                    permit: Some(permit),
                    classify: self.classify.clone(),
                    polling: false,
                };
                let future = self.inner.call(req);
                ResponseFuture {
                    state: State::Called { future, judge },
                }
            }
            Err(refused) => ResponseFuture {
                state: State::Refused {
                    error: Some(refused),
                },
            },
        }
    }
}

/// Holds the permit until the call's outcome is known.
struct Judge<C> {
    permit: Option<Permit>,
    classify: C,
    /// Set around each poll of the inner future: still set at drop means
    /// that poll never returned, it panicked. `thread::panicking()` alone
    /// misses that case when a `catch_unwind` around the response future
    /// (tower-http's `CatchPanicLayer`) drops it after the panic is caught.
    polling: bool,
}

impl<C> Drop for Judge<C> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            if self.polling || std::thread::panicking() {
                // The inner service panicked: it did not answer.
                permit.failure();
            }
            // Otherwise the caller dropped the future: the permit's own
            // drop counts it as neither.
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`CircuitBreakerService`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        state: State<F, C>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, C> {
        Called { #[pin] future: F, judge: Judge<C> },
        Refused { error: Option<Error> },
    }
}

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Classify<Res, E>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { future, judge } => {
                judge.polling = true;
                let result = future.poll(cx);
                judge.polling = false;
                let result = ready!(result);
                if let Some(permit) = judge.permit.take() {
                    match judge.classify.classify(&result) {
                        Outcome::Success => permit.success(),
                        Outcome::Failure => permit.failure(),
                        Outcome::Ignore => permit.ignore(),
                    }
                }
                Poll::Ready(result.map_err(Into::into))
            }
            StateProj::Refused { error } => Poll::Ready(Err(match error.take() {
                Some(refused) => Box::new(refused),
                None => "rampart: CircuitBreakerService future polled after completion".into(),
            })),
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerFuture")
            .finish_non_exhaustive()
    }
}
