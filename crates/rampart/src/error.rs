//! The crate's one error type.
//!
//! [`Error`] is one pointer (an `Arc` of its [`ErrorKind`]): cheap to clone,
//! because single-flight hands one load's error to every caller that waited
//! on it, and small, because the cache's hit path returns
//! `Result<Lookup, Error>` and a wide `Err` side made every hit move a wide
//! value (a 40-byte error cost a tenth of the hit path's throughput:
//! BENCHMARKS.md). Errors are the slow path; the allocation is paid there.

use std::sync::Arc;
use std::time::Duration;

/// A boxed error from user code (a loader, a tier), as tower spells it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong inside a guard; see [`ErrorKind`] for the cases.
#[derive(Clone)]
pub struct Error(Arc<ErrorKind>);

/// The cases of [`Error`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
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

    /// The caller's miss budget is spent: it asked for more misses per
    /// second than it is allowed (see [`Admission`](crate::cache::Admission)).
    #[error("miss budget spent; retry after {retry_after:?}")]
    Throttled {
        /// How long until the budget lets the next miss through.
        retry_after: Duration,
    },

    /// A cache tier (L2) failed.
    #[error("cache tier failed: {0}")]
    Tier(Arc<dyn std::error::Error + Send + Sync + 'static>),
}

impl Error {
    /// Which case this is.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// The case, owned (cloned if other callers share this error).
    pub fn into_kind(self) -> ErrorKind {
        Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone())
    }

    /// Wraps a loader's error.
    pub fn source(err: impl Into<BoxError>) -> Self {
        ErrorKind::Source(Arc::from(err.into())).into()
    }

    /// Wraps a tier's error.
    pub fn tier(err: impl Into<BoxError>) -> Self {
        ErrorKind::Tier(Arc::from(err.into())).into()
    }

    /// A setting is invalid; `message` names the field.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        ErrorKind::InvalidConfig(message.into()).into()
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
        ErrorKind::LoadPanicked(Arc::from(message)).into()
    }

    /// True when the error means "a guard refused the call" rather than "the
    /// call was made and failed": callers map these to 503 with `Retry-After`.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::BreakerOpen { .. }
                | ErrorKind::BulkheadFull { .. }
                | ErrorKind::BulkheadTimeout { .. }
                | ErrorKind::RetryBudgetExhausted
                | ErrorKind::LeaseWaitTimeout(_)
        )
    }

    /// How long a rejected caller should wait before trying again, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind() {
            ErrorKind::BreakerOpen { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error(Arc::new(kind))
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.kind(), f)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.kind(), f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_one_pointer_and_a_hit_result_two_words() {
        // The hit path's throughput depends on these sizes (BENCHMARKS.md).
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
        assert_eq!(
            std::mem::size_of::<Result<crate::cache::Lookup<Arc<str>>, Error>>(),
            2 * std::mem::size_of::<usize>()
        );
    }
}
