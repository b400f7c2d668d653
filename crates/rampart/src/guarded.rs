//! [`Guarded`]: one call to a dependency behind a breaker, a bulkhead and a
//! timeout, with a panic inside it contained, and the outcome reported to
//! the breaker. The cache's loads and `rampart-redis`'s Redis calls both go
//! through it, so "what counts as a failure" is decided in one place.
//!
//! ```
//! # tokio_test_block_on(async {
//! use std::time::Duration;
//! use rampart::breaker::{BreakerConfig, CircuitBreaker};
//! use rampart::guarded::Guarded;
//! use rampart::Error;
//!
//! let breaker = CircuitBreaker::new("db", BreakerConfig::default());
//! let guarded = Guarded::new(Duration::from_millis(200)).breaker(&breaker);
//! let answer: Result<u32, Error> = guarded
//!     .call(async { Ok::<_, Error>(42) }, |waited| Error::source(format!("no answer in {waited:?}")))
//!     .await;
//! assert_eq!(answer.ok(), Some(42));
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;

use crate::breaker::CircuitBreaker;
use crate::limit::Bulkhead;
use crate::Error;

/// The guards around one call. Cheap: borrows the guards.
#[derive(Clone, Copy)]
pub struct Guarded<'a> {
    breaker: Option<&'a CircuitBreaker>,
    bulkhead: Option<&'a Bulkhead>,
    timeout: Duration,
}

impl<'a> Guarded<'a> {
    /// A call bounded by `timeout`, with no breaker and no bulkhead yet.
    pub fn new(timeout: Duration) -> Self {
        Guarded {
            breaker: None,
            bulkhead: None,
            timeout,
        }
    }

    /// Judge the call's outcome with `breaker` (and be refused while open).
    pub fn breaker(mut self, breaker: &'a CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Same, when the breaker is optional.
    pub fn maybe_breaker(mut self, breaker: Option<&'a CircuitBreaker>) -> Self {
        self.breaker = breaker;
        self
    }

    /// Run the call in one of `bulkhead`'s slots.
    pub fn maybe_bulkhead(mut self, bulkhead: Option<&'a Bulkhead>) -> Self {
        self.bulkhead = bulkhead;
        self
    }

    /// Runs `call` behind the guards. `timed_out(timeout)` builds the error
    /// for a call that did not answer in time.
    ///
    /// In this order, each for a reason:
    /// 1. the breaker first: when the dependency is down, refuse at once
    ///    instead of queueing in the bulkhead for a call that would be
    ///    refused anyway;
    /// 2. the bulkhead: a caller it refuses counts as a failure of the
    ///    dependency only when the dependency is [stalled](Bulkhead::stalled)
    ///    (every slot held and no call answered for a whole `max_wait`).
    ///    Without this a stalled dependency opens the breaker only after
    ///    its stuck calls run into the timeout (measured: ~10 s at 200
    ///    req/s); with it, within about one bulkhead wait. A refusal while
    ///    calls are being answered is load, not failure, and reports
    ///    nothing: counted, the burst of misses after an outage re-opened
    ///    the breaker that had just closed;
    /// 3. the call, bounded by the timeout, a panic caught and reported as
    ///    [`ErrorKind::LoadPanicked`](crate::ErrorKind::LoadPanicked);
    /// 4. success or failure reported to the breaker. A cancelled call
    ///    reports nothing (dropping the permit frees a half-open probe),
    ///    and neither does a panic: it is this process's bug on one input
    ///    (a poison row), not the dependency failing, and counted it opened
    ///    the breaker on every other key once the healthy ones were cached
    ///    and the panicking ones were most of the loads (`rampart drill
    ///    scenario panic-storm`: 14 % of the requests for keys that never
    ///    panic failed in 30 s, nearly all refused by the breaker).
    ///    A panic stays contained to its own call.
    pub async fn call<T>(
        self,
        call: impl Future<Output = Result<T, Error>>,
        timed_out: impl FnOnce(Duration) -> Error,
    ) -> Result<T, Error> {
        let permit = match self.breaker {
            Some(breaker) => Some(breaker.try_acquire()?),
            None => None,
        };
        let slot = match self.bulkhead {
            Some(bulkhead) => match bulkhead.acquire().await {
                Ok(slot) => Some(slot),
                Err(rejected) => {
                    // Not stalled: the permit is dropped unjudged (a
                    // half-open probe's place is freed).
                    if let Some(permit) = permit.filter(|_| bulkhead.stalled()) {
                        permit.failure();
                    }
                    return Err(rejected);
                }
            },
            None => None,
        };
        let outcome =
            tokio::time::timeout(self.timeout, AssertUnwindSafe(call).catch_unwind()).await;
        let result = match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => return Err(Error::from_panic(&*panic)),
            Err(_) => Err(timed_out(self.timeout)),
        };
        if let Some(slot) = slot.filter(|_| result.is_ok()) {
            slot.answered();
        }
        if let Some(permit) = permit {
            if result.is_ok() {
                permit.success();
            } else {
                permit.failure();
            }
        }
        result
    }
}
