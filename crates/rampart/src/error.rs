//! The crate's one error type.
//!
//! Every variant is cheap to clone (`Arc` inside) because single-flight hands
//! one load's error to every caller that waited on it.

use std::sync::Arc;
use std::time::Duration;

/// A boxed error from user code (a loader, a tier), as tower spells it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong inside a guard.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source of truth (a [`Loader`](crate::Loader)) failed.
    #[error("source failed: {0}")]
    Source(Arc<dyn std::error::Error + Send + Sync + 'static>),

    /// A circuit breaker is open (or forced open) and rejected the call
    /// without trying it.
    #[error("circuit breaker `{name}` is open; retry after {retry_after:?}")]
    BreakerOpen {
        /// The breaker's name (the dependency it guards).
        name: Arc<str>,
        /// How long until the breaker lets a probe through.
        retry_after: Duration,
    },

    /// A bulkhead had no free slot and its wait queue was full.
    #[error("bulkhead `{name}` is full: {max_concurrent} running and {max_queued} waiting")]
    BulkheadFull {
        /// The bulkhead's name.
        name: Arc<str>,
        /// Its concurrency bound.
        max_concurrent: usize,
        /// Its queue bound.
        max_queued: usize,
    },

    /// A bulkhead slot did not free up within the allowed queue wait.
    #[error("bulkhead `{name}`: no slot within {waited:?}")]
    BulkheadTimeout {
        /// The bulkhead's name.
        name: Arc<str>,
        /// How long the caller waited.
        waited: Duration,
    },

    /// A retry was refused because the retry budget is spent.
    #[error("retry budget exhausted")]
    RetryBudgetExhausted,

    /// The load this call was waiting on panicked. The panic was contained;
    /// the key is free for the next call.
    #[error("the load panicked: {0}")]
    LoadPanicked(Arc<str>),

    /// Another holder of the key's lease did not publish a value in time.
    #[error("timed out after {0:?} waiting for another holder's load of this key")]
    LeaseWaitTimeout(Duration),

    /// The source did not answer within the configured load timeout.
    #[error("source did not answer within {0:?}")]
    LoadTimeout(Duration),

    /// A guard or cache was built with an invalid setting; the message names
    /// the field.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A cache tier (L2) failed.
    #[error("cache tier failed: {0}")]
    Tier(Arc<dyn std::error::Error + Send + Sync + 'static>),
}

impl Error {
    /// Wraps a loader's error.
    pub fn source(err: impl Into<BoxError>) -> Self {
        Error::Source(Arc::from(err.into()))
    }

    /// Wraps a tier's error.
    pub fn tier(err: impl Into<BoxError>) -> Self {
        Error::Tier(Arc::from(err.into()))
    }

    /// Builds the error for a caught panic payload.
    pub(crate) fn from_panic(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_owned()
        };
        Error::LoadPanicked(Arc::from(message))
    }

    /// True when the error means "a guard refused the call" rather than "the
    /// call was made and failed": callers map these to 503 with `Retry-After`.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Error::BreakerOpen { .. }
                | Error::BulkheadFull { .. }
                | Error::BulkheadTimeout { .. }
                | Error::RetryBudgetExhausted
                | Error::LeaseWaitTimeout(_)
        )
    }

    /// How long a rejected caller should wait before trying again, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::BreakerOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}
