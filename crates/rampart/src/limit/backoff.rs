//! Exponential backoff with full jitter.
//!
//! Why full jitter (a uniformly random delay in `[0, ceiling]`) rather than
//! a fixed exponential delay or "equal jitter": clients that failed together
//! would otherwise retry together, and the synchronised wave fails again.
//! AWS's analysis ("Exponential Backoff And Jitter") found full jitter does
//! the least total work to get every client through; Envoy uses it too.

use std::time::Duration;

/// Full-jitter exponential backoff: the delay before retry `attempt` is
/// uniformly random in `[0, min(cap, base × 2^attempt)]`.
///
/// The defaults are Envoy's: `base` 25 ms, `cap` 250 ms (ten times the
/// base), so the ceiling reaches the cap by the fourth retry and a retry
/// never waits long enough to outlast a typical request deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling for attempt 0; it doubles with each attempt.
    pub base: Duration,
    /// The largest ceiling (and so the largest delay) for any attempt.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(25),
            cap: Duration::from_millis(250),
        }
    }
}

impl Backoff {
    /// The delay before retry `attempt` (0 for the first retry), drawn from
    /// fastrand's thread-local generator.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.draw(attempt, |max| fastrand::u64(0..=max))
    }

    /// Like [`delay`](Self::delay), drawing from `rng`: seed it for
    /// reproducible delays in tests and simulations.
    pub fn delay_with(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        self.draw(attempt, |max| rng.u64(0..=max))
    }

    /// The largest delay [`delay`](Self::delay) can return for `attempt`:
    /// `min(cap, base × 2^attempt)`, computed without overflow for any
    /// attempt (the doubling saturates at `cap`).
    pub fn max_delay(&self, attempt: u32) -> Duration {
        if self.base.is_zero() {
            // 0 × 2^attempt is 0 however large the attempt; the overflow
            // fallback below would wrongly give `cap`.
            return Duration::ZERO;
        }
        1u32.checked_shl(attempt)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.cap, |ceiling| ceiling.min(self.cap))
    }

    fn draw(&self, attempt: u32, uniform_up_to: impl FnOnce(u64) -> u64) -> Duration {
        // Durations beyond u64 nanoseconds (584 years) are drawn as if they
        // were 584 years: no one waits that long anyway.
        let max = u64::try_from(self.max_delay(attempt).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(uniform_up_to(max))
    }
}
