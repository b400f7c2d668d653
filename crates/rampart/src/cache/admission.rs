//! [`Admission`]: the hook that may refuse a miss before it costs anything.

use crate::Error;

/// Asked once per call that L1 (and the existence filter, if any) could not
/// answer, before L2, the lease or the source; never on a hit. A service
/// uses it for a per-caller miss budget: the caller is whoever is running
/// the call (a task-local, say), which the cache does not know.
///
/// An error is the call's answer (an expired value kept for
/// stale-if-error is answered instead, as for any refusal). Batch calls
/// ask once, with the number of keys they miss.
pub trait Admission: Send + Sync + 'static {
    /// `Ok` lets `misses` misses through; an error (typically
    /// [`ErrorKind::Throttled`](crate::ErrorKind::Throttled)) refuses them.
    fn admit(&self, misses: u32) -> Result<(), Error>;
}
