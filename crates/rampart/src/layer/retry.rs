//! [`RetryPolicy`]: a tower retry [`Policy`] whose retries are paid for out
//! of a [`RetryBudget`] and spaced by a full-jitter [`Backoff`].
//!
//! Why a budget and not just `max_attempts`: per-call retry limits multiply
//! the load on a failing dependency exactly when it can least take it; a
//! budget caps retries at a fraction of real traffic (see
//! [`RetryBudget`]). `max_attempts` still bounds one call's latency.

use std::any::Any;
use std::sync::Arc;

use tower::retry::Policy;

use crate::limit::{Backoff, RetryBudget};
use crate::BoxError;

/// Decides whether a failed attempt is worth retrying.
///
/// Any `Fn(&Req, &Result<Res, E>) -> bool` is one (true = retry).
pub trait Retryable<Req, Res, E> {
    /// True when `result` (the answer to `req`) should be retried.
    fn retryable(&self, req: &Req, result: &Result<Res, E>) -> bool;
}

impl<F, Req, Res, E> Retryable<Req, Res, E> for F
where
    F: Fn(&Req, &Result<Res, E>) -> bool,
{
    fn retryable(&self, req: &Req, result: &Result<Res, E>) -> bool {
        self(req, result)
    }
}

/// The default: retry errors, except a guard's refusal (a boxed
/// [`Error`](crate::Error) for which
/// [`is_rejection`](crate::Error::is_rejection) holds). Retrying an open
/// breaker or a full bulkhead only adds load to what is already shedding
/// it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryErrors;

impl<Req, Res, E: 'static> Retryable<Req, Res, E> for RetryErrors {
    fn retryable(&self, _req: &Req, result: &Result<Res, E>) -> bool {
        let Err(error) = result else {
            return false;
        };
        // The refusal is a `rampart::Error`, boxed by the layers or bare;
        // any other error type is a plain failure.
        let error: &dyn Any = error;
        let refusal = match error.downcast_ref::<BoxError>() {
            Some(boxed) => boxed.downcast_ref::<crate::Error>(),
            None => error.downcast_ref::<crate::Error>(),
        };
        !refusal.is_some_and(crate::Error::is_rejection)
    }
}

/// A tower retry [`Policy`]: for `tower::retry::RetryLayer::new(policy)`.
///
/// * Each original request deposits into the budget; each retry withdraws
///   one, and none is made when the budget is spent.
/// * At most `max_attempts` attempts in all (the first included).
/// * Before retry `n` (0 for the first), waits [`Backoff::delay`]`(n)`.
/// * Requests are retried by cloning them, so `Req: Clone`; a service
///   whose requests cannot be cloned (a streaming body) is not retried.
///
/// One policy value serves every request: tower clones it into each
/// response future, and the budget inside is shared between the clones.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use rampart::layer::RetryPolicy;
/// use rampart::limit::{Backoff, RetryBudget, RetryBudgetConfig};
/// use tower::{retry::RetryLayer, service_fn, ServiceBuilder, ServiceExt};
///
/// let tries = Arc::new(AtomicU32::new(0));
/// let counted = Arc::clone(&tries);
/// let policy = RetryPolicy::new(RetryBudget::new(RetryBudgetConfig::default()), Backoff::default());
/// let flaky = ServiceBuilder::new()
///     .layer(RetryLayer::new(policy))
///     .service(service_fn(move |_req: ()| {
///         let first = counted.fetch_add(1, Ordering::Relaxed) == 0;
///         async move { if first { Err(rampart::BoxError::from("blip")) } else { Ok("ok") } }
///     }));
/// assert_eq!(flaky.oneshot(()).await.ok(), Some("ok"));
/// assert_eq!(tries.load(Ordering::Relaxed), 2);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RetryPolicy<R = RetryErrors> {
    budget: Arc<RetryBudget>,
    backoff: Backoff,
    max_attempts: u32,
    retryable: R,
    /// Retries made for this request so far (each response future has its
    /// own clone of the policy).
    attempt: u32,
}

/// The default `max_attempts`: the first attempt and two retries.
const DEFAULT_MAX_ATTEMPTS: u32 = 3;

impl RetryPolicy {
    /// Retries errors (not guard refusals: [`RetryErrors`]) while `budget`
    /// allows, at most 3 attempts in all, spaced by `backoff`.
    pub fn new(budget: RetryBudget, backoff: Backoff) -> Self {
        RetryPolicy {
            budget: Arc::new(budget),
            backoff,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retryable: RetryErrors,
            attempt: 0,
        }
    }
}

impl<R> RetryPolicy<R> {
    /// At most `attempts` attempts per request, the first included (so 1
    /// means never retry; 0 is taken as 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Decide what to retry with `retryable` instead (see [`Retryable`]).
    pub fn retry_if<R2>(self, retryable: R2) -> RetryPolicy<R2> {
        RetryPolicy {
            budget: self.budget,
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            retryable,
            attempt: self.attempt,
        }
    }

    /// The budget the retries are paid from.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }
}

impl<R, Req, Res, E> Policy<Req, Res, E> for RetryPolicy<R>
where
    R: Retryable<Req, Res, E>,
    Req: Clone,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if self.attempt.saturating_add(1) >= self.max_attempts
            || !self.retryable.retryable(req, result)
            || self.budget.withdraw().is_err()
        {
            return None;
        }
        let delay = self.backoff.delay(self.attempt);
        self.attempt += 1;
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        // tower calls this on the service's own policy for each new request
        // (attempt 0), then on the response future's clone before each
        // retry: only the first is real traffic.
        if self.attempt == 0 {
            self.budget.deposit();
        }
        Some(req.clone())
    }
}
