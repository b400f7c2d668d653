//! The cross-process half of single-flight: one lease holder per key loads
//! from the source; the others wait for it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;

use crate::Error;

/// Grants at most one holder per key at a time.
#[async_trait]
pub trait Lease<K>: Send + Sync + 'static
where
    K: Send + Sync + 'static,
{
    /// Tries to take the key's lease without waiting.
    async fn acquire(&self, key: &K) -> Result<Acquired, Error>;
}

/// The outcome of [`Lease::acquire`].
pub enum Acquired {
    /// This caller holds the lease until the guard is dropped.
    Won(LeaseGuard),
    /// Another caller holds it; the future resolves when it lets go. It was
    /// armed before `acquire` returned, so a release in between is not
    /// missed. Callers bound the wait themselves.
    Lost(LeaseWait),
}

/// A held lease. Dropping it releases the lease.
pub struct LeaseGuard {
    fence: u64,
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl LeaseGuard {
    /// A guard with `fence` that runs `release` when dropped.
    pub fn new(fence: u64, release: impl FnOnce() + Send + 'static) -> Self {
        LeaseGuard {
            fence,
            release: Some(Box::new(release)),
        }
    }

    /// A number that grows with every lease granted for the key's store: a
    /// fill presents it, and the store refuses one older than what it has
    /// (so a holder that outlived its lease cannot overwrite newer data).
    pub fn fence(&self) -> u64 {
        self.fence
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// Resolves when the current holder of a lease lets go.
pub struct LeaseWait(Pin<Box<dyn Future<Output = ()> + Send>>);

impl LeaseWait {
    /// Wraps the future that resolves on release.
    pub fn new(wait: impl Future<Output = ()> + Send + 'static) -> Self {
        LeaseWait(Box::pin(wait))
    }
}

impl Future for LeaseWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}
