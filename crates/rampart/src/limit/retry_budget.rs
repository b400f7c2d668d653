//! A retry budget: retries are allowed as a fraction of recent requests,
//! plus a small floor per second, as in tower's `TpsBudget` and Envoy's
//! retry budgets.
//!
//! Why a budget rather than "retry each call up to N times": when a
//! dependency is down, per-call retry limits multiply the load on it by N
//! exactly when it can least take it. A budget caps retries at (say) 20% of
//! real traffic, so a total outage costs at most 1.2× the normal load, while
//! the floor still lets a quiet service retry its occasional failure.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, Instant};
use crate::sync::Mutex;
use crate::{Error, ErrorKind};

/// Buckets in the sliding window. Ten, as tower uses: the window slides in
/// steps of a tenth of its length, so the budget never forgets a whole
/// window's history at once, and summing ten counters is trivially cheap.
const BUCKETS: usize = 10;

/// Budget arithmetic is done in millionths of a retry, in integers, so
/// `retry_ratio × requests` is exact (to the ratio's sixth decimal) instead
/// of carrying float error into a floor (0.29 × 100 is 28.999… in `f64`).
const UNITS_PER_RETRY: u128 = 1_000_000;

/// How big a [`RetryBudget`] is.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudgetConfig {
    /// How far back requests and retries are remembered. Default 10 s (as
    /// tower): long enough to smooth bursts, short enough that the budget
    /// recovers soon after traffic returns.
    pub window: Duration,
    /// Retries allowed per second of `window` even with no requests at all.
    /// Default 10 (as tower): a service with little traffic can still retry
    /// its occasional failure.
    pub min_retries_per_sec: u32,
    /// Retries earned per request in the window. Default 0.2 (Envoy's and
    /// tower's 20%): a full outage adds at most 20% to the dependency's load.
    pub retry_ratio: f64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            window: Duration::from_secs(10),
            min_retries_per_sec: 10,
            retry_ratio: 0.2,
        }
    }
}

impl RetryBudgetConfig {
    /// Checks the config, naming the first bad field.
    ///
    /// [`RetryBudget::new`] never panics on a bad config (see there); call
    /// this where configs are loaded to reject them instead.
    pub fn validate(&self) -> Result<(), String> {
        if self.window < Duration::from_millis(1) {
            return Err(format!("window must be >= 1ms, got {:?}", self.window));
        }
        if !(self.retry_ratio.is_finite() && (0.0..=1000.0).contains(&self.retry_ratio)) {
            return Err(format!(
                "retry_ratio must be a finite number in 0.0..=1000.0, got {}",
                self.retry_ratio
            ));
        }
        Ok(())
    }
}

/// Allows retries as a fraction of recent requests plus a floor.
///
/// Call [`deposit`](Self::deposit) once per original request and
/// [`withdraw`](Self::withdraw) before each retry. Within the sliding
/// `window`, the retries allowed are
/// `min_retries_per_sec × window_secs + retry_ratio × requests_in_window`
/// (rounded down), less the retries already withdrawn in the window. Both
/// requests and retries age out of the window as time moves.
///
/// Cloning is cheap and every clone shares the same budget.
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    config: RetryBudgetConfig,
    clock: Clock,
    /// Time zero for bucket numbering.
    start: Instant,
    /// Width of one bucket, in nanoseconds; never 0.
    bucket_nanos: u128,
    /// `min_retries_per_sec × window_secs`, in units.
    floor_units: u128,
    /// `retry_ratio`, in units per request.
    ratio_units: u128,
    /// Why a mutex and not atomics: `withdraw` must check the window's total
    /// and record the retry as one step, or two threads could both see one
    /// retry left and both take it. That check spans ten buckets plus the
    /// ring's rotation, more than one word a CAS can cover. The critical
    /// section is a few dozen instructions, never awaits and runs no user
    /// code, so an uncontended lock is one CAS and a contended one is a
    /// short spin.
    state: Mutex<Window>,
}

/// The ring of buckets.
struct Window {
    /// Number of the bucket `now` falls in, counted from `Inner::start`;
    /// it lives at `buckets[slot % BUCKETS]`.
    slot: u128,
    buckets: [Bucket; BUCKETS],
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    requests: u64,
    retries: u64,
}

impl RetryBudget {
    /// Creates a budget on a precise real clock ([`Clock::new`]): one TSC
    /// read per call, and no upkeep thread started behind the caller's back.
    /// Pass [`Clock::coarse`] to [`with_clock`](Self::with_clock) to trade
    /// that read for an atomic load; 1 ms of lag is nothing next to a
    /// bucket a tenth of the window wide.
    ///
    /// Never panics: a `window` under 1 ns per bucket is treated as 1 ns per
    /// bucket, and a `retry_ratio` that is NaN, negative or above 1000 is
    /// treated as 0, 0 and 1000. [`RetryBudgetConfig::validate`] rejects
    /// all of these.
    pub fn new(config: RetryBudgetConfig) -> Self {
        Self::with_clock(config, Clock::new())
    }

    /// Creates a budget on `clock` (a [`Clock::mock`] in tests).
    pub fn with_clock(config: RetryBudgetConfig, clock: Clock) -> Self {
        let bucket_nanos = (config.window.as_nanos() / BUCKETS as u128).max(1);
        // `min × window_nanos / 1e9` retries, i.e. `min × window_nanos / 1e3`
        // units; below 2^128 for any u32 and Duration, saturating anyway.
        let floor_units = u128::from(config.min_retries_per_sec)
            .saturating_mul(config.window.as_nanos())
            / (1_000_000_000 / UNITS_PER_RETRY);
        let ratio = if config.retry_ratio.is_nan() {
            0.0
        } else {
            config.retry_ratio.clamp(0.0, 1000.0)
        };
        // In 0..=1e9 after the clamp, so the cast is exact and cannot wrap.
        let ratio_units = (ratio * UNITS_PER_RETRY as f64).round() as u128;
        let start = clock.now();
        RetryBudget {
            inner: Arc::new(Inner {
                config,
                clock,
                start,
                bucket_nanos,
                floor_units,
                ratio_units,
                state: Mutex::new(Window {
                    slot: 0,
                    buckets: [Bucket::default(); BUCKETS],
                }),
            }),
        }
    }

    /// Records one original request (not a retry): earns `retry_ratio`
    /// retries for the next `window`.
    pub fn deposit(&self) {
        let mut window = self.inner.lock_now();
        let bucket = window.current();
        bucket.requests = bucket.requests.saturating_add(1);
    }

    /// Takes one retry from the budget, or fails with
    /// [`ErrorKind::RetryBudgetExhausted`] (and takes nothing) when it is spent.
    /// Call it before each retry, and skip the retry on `Err`.
    pub fn withdraw(&self) -> Result<(), Error> {
        let mut window = self.inner.lock_now();
        if self.inner.available(&window) == 0 {
            return Err(ErrorKind::RetryBudgetExhausted.into());
        }
        let bucket = window.current();
        bucket.retries = bucket.retries.saturating_add(1);
        Ok(())
    }

    /// Retries that [`withdraw`](Self::withdraw) would allow right now.
    /// Only a snapshot: other threads may withdraw meanwhile.
    pub fn available(&self) -> u64 {
        let window = self.inner.lock_now();
        self.inner.available(&window)
    }

    /// The config this budget was created with.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.inner.config
    }
}

impl Inner {
    /// Locks the window and rotates it to the current time.
    fn lock_now(&self) -> impl std::ops::DerefMut<Target = Window> + '_ {
        let elapsed = self.clock.now().saturating_duration_since(self.start);
        let slot = elapsed.as_nanos() / self.bucket_nanos;
        let mut window = self.state.lock();
        window.advance_to(slot);
        window
    }

    /// Retries allowed by `window` (already rotated to now).
    fn available(&self, window: &Window) -> u64 {
        let (requests, retries) =
            window
                .buckets
                .iter()
                .fold((0u64, 0u64), |(requests, retries), bucket| {
                    (
                        requests.saturating_add(bucket.requests),
                        retries.saturating_add(bucket.retries),
                    )
                });
        let earned = self
            .floor_units
            .saturating_add(u128::from(requests).saturating_mul(self.ratio_units));
        let allowed = earned / UNITS_PER_RETRY;
        u64::try_from(allowed.saturating_sub(u128::from(retries))).unwrap_or(u64::MAX)
    }
}

impl Window {
    /// Moves the window forward to bucket number `slot`, emptying every
    /// bucket it passes over (they held the oldest tenth of the window).
    fn advance_to(&mut self, slot: u128) {
        // A clock that did not move (or, for a mock, moved back) keeps
        // counting into the current bucket.
        let Some(steps) = slot.checked_sub(self.slot).filter(|&s| s > 0) else {
            return;
        };
        if steps >= BUCKETS as u128 {
            self.buckets = [Bucket::default(); BUCKETS];
        } else {
            for step in 1..=steps {
                self.buckets[((self.slot + step) % BUCKETS as u128) as usize] = Bucket::default();
            }
        }
        self.slot = slot;
    }

    fn current(&mut self) -> &mut Bucket {
        &mut self.buckets[(self.slot % BUCKETS as u128) as usize]
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.inner.config)
            .field("available", &self.available())
            .finish()
    }
}
