//! One time source for every guard.
//!
//! Why not `std::time::Instant`: the cache's hit path reads the clock on
//! every call, and `clock_gettime` costs a noticeable fraction of an L1 hit.
//! quanta reads the TSC (a few ns) and, with an upkeep thread running, its
//! `recent()` is a single atomic load. Why not `tokio::time::Instant`: the
//! guards also run outside a runtime. quanta's mock clock lets tests move
//! time by hand, so TTLs, breaker windows and budgets are tested without
//! sleeping.

pub use quanta::{Clock, Instant, Mock};

use std::sync::OnceLock;
use std::time::Duration;

/// Starts (once per process) quanta's upkeep thread, which refreshes
/// [`Clock::recent`] every millisecond, and returns whether it is running.
///
/// Guards call `recent()` on hot paths; without the upkeep thread that falls
/// back to a full `now()`, which is correct, only slower.
pub fn start_upkeep() -> bool {
    static HANDLE: OnceLock<Option<quanta::Handle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| quanta::Upkeep::new(Duration::from_millis(1)).start().ok())
        .is_some()
}
