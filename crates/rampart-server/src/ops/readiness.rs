//! The readiness gate behind `/readyz`: warm-up progress, the Redis notice
//! subscription, the existence filters' first builds (each for at most its
//! `ready_wait`), and a deadline that ends the wait whatever is missing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rampart::warm::WarmProgress;

/// The readiness gate: ready once the warm-up has done its fraction of the
/// expected keys (or finished, or is off) and the Redis notices are heard,
/// or once the deadline passed — whichever first. Once ready, always ready
/// (a flapping gate would bounce traffic; a later subscription loss shows
/// in `/readyz`'s detail and in metrics, and clears L1).
pub struct Readiness {
    fraction: f64,
    deadline: Duration,
    started: Instant,
    warmed: AtomicBool,
    ready: AtomicBool,
}

impl Readiness {
    pub fn new(fraction: f64, deadline: Duration) -> Self {
        Readiness {
            fraction,
            deadline,
            started: Instant::now(),
            warmed: AtomicBool::new(false),
            ready: AtomicBool::new(false),
        }
    }

    /// The warm-up finished (or is off): the rest of the gate still applies.
    pub fn warmed(&self) {
        // Release/Acquire: a reader that sees `true` also sees what the
        // warm-up did before declaring it.
        self.warmed.store(true, Ordering::Release);
    }

    /// Time since the gate started waiting.
    pub fn waited(&self) -> Duration {
        self.started.elapsed()
    }

    fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Ready once the warm-up has done its part and, with Redis, the notice
    /// subscription is up (an instance that cannot hear invalidations would
    /// serve rows other instances dropped); or once the deadline passed,
    /// whatever is missing (a dead Redis must not keep every instance out
    /// of the load balancer: the source still answers).
    pub fn is_ready<'a>(
        &self,
        progress: impl Iterator<Item = &'a WarmProgress>,
        subscribed: bool,
        filters_built: bool,
    ) -> bool {
        if self.ready.load(Ordering::Acquire) {
            return true;
        }
        let (mut done, mut expected, mut all_finished) = (0u64, 0u64, true);
        for p in progress {
            done += p.keys_done();
            expected += p.expected().unwrap_or(0);
            all_finished &= p.is_finished();
        }
        let reached = expected > 0 && done as f64 >= self.fraction * expected as f64;
        let warm = self.warmed.load(Ordering::Acquire) || all_finished || reached;
        if (warm && subscribed && filters_built) || self.started.elapsed() >= self.deadline {
            self.set_ready();
            return true;
        }
        false
    }
}
