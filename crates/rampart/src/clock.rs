//! One time source for every guard.
//!
//! Why not `std::time::Instant`: the cache's hit path reads the clock on
//! every call, and `clock_gettime` costs a noticeable fraction of an L1 hit.
//! quanta reads the TSC (a few ns), and in *coarse* mode a single atomic load
//! of a value its upkeep thread refreshes every millisecond. Why not
//! `tokio::time::Instant`: the guards also run outside a runtime. The mock
//! clock lets tests move time by hand, so TTLs, breaker windows and budgets
//! are tested without sleeping.

pub use quanta::{Instant, Mock};

use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A cheap monotonic clock: precise (TSC), coarse (1 ms, one atomic load) or
/// mocked. Cloning is cheap; clones share a mock.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: quanta::Clock,
    coarse: bool,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A precise clock.
    pub fn new() -> Self {
        Clock {
            inner: quanta::Clock::new(),
            coarse: false,
        }
    }

    /// A clock whose [`now`](Self::now) is at most ~1 ms behind, read with
    /// one atomic load. Starts quanta's process-wide upkeep thread on first
    /// use; if that thread cannot be started, falls back to a precise clock.
    pub fn coarse() -> Self {
        static UPKEEP: OnceLock<Option<quanta::Handle>> = OnceLock::new();
        let running = UPKEEP
            .get_or_init(|| quanta::Upkeep::new(Duration::from_millis(1)).start().ok())
            .is_some();
        Clock {
            inner: quanta::Clock::new(),
            coarse: running,
        }
    }

    /// A clock that only moves when the returned [`Mock`] is moved.
    pub fn mock() -> (Self, Arc<Mock>) {
        let (inner, mock) = quanta::Clock::mock();
        (
            Clock {
                inner,
                coarse: false,
            },
            mock,
        )
    }

    /// The current time (coarse or precise, as this clock was built).
    #[inline]
    pub fn now(&self) -> Instant {
        if self.coarse {
            self.inner.recent()
        } else {
            self.inner.now()
        }
    }

    /// The current time, always precise: for measuring how long a call took.
    #[inline]
    pub fn precise_now(&self) -> Instant {
        self.inner.now()
    }
}

/// Wall-clock milliseconds since the Unix epoch, derived from a [`Clock`] so
/// that mocked time moves it too. Used where time must mean the same thing
/// in several processes (entries in a shared L2).
#[derive(Clone, Debug)]
pub struct WallClock {
    clock: Clock,
    base: Instant,
    base_unix_ms: u64,
}

impl WallClock {
    /// Anchors `clock` to the system's wall clock now.
    pub fn new(clock: Clock) -> Self {
        let base_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let base = clock.precise_now();
        WallClock {
            clock,
            base,
            base_unix_ms,
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        let elapsed = self.clock.now().saturating_duration_since(self.base);
        self.base_unix_ms
            .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }

    /// The monotonic clock underneath.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}
