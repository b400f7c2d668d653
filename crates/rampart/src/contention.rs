//! How long callers waited for the locks on the guards' shared paths: the
//! single-flight map (every miss), the generation stripes (every fill and
//! invalidation) and each breaker's core (every outcome reported). A lock
//! that is free costs what it did (one `try_lock`); only an acquisition
//! that had to wait reads the clock and lands in its lock's histogram, so
//! the histograms count contended acquisitions, and their waits.
//!
//! ```
//! for waits in rampart::contention::lock_waits() {
//!     println!("{}: {} waits, {:?} in all", waits.lock, waits.count, waits.sum);
//! }
//! ```

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the histogram's buckets (a last one is unbounded).
pub const BUCKETS: [Duration; 7] = [
    Duration::from_micros(1),
    Duration::from_micros(10),
    Duration::from_micros(100),
    Duration::from_millis(1),
    Duration::from_millis(10),
    Duration::from_millis(100),
    Duration::from_secs(1),
];

/// The waits for one class of lock (all its instances together).
pub(crate) struct LockWaits {
    name: &'static str,
    /// Per bucket (the last unbounded), not cumulative.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LockWaits {
    const fn new(name: &'static str) -> Self {
        LockWaits {
            name,
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn record(&self, waited: Duration) {
        let bucket = BUCKETS
            .iter()
            .position(|bound| waited <= *bound)
            .unwrap_or(BUCKETS.len());
        // Relaxed: statistics, read whole only by a scrape.
        self.buckets[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    fn snapshot(&self) -> LockWaitStats {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS.len());
        for (bound, count) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += count.load(Relaxed);
            buckets.push((*bound, cumulative));
        }
        let count = cumulative + self.buckets[BUCKETS.len()].load(Relaxed);
        LockWaitStats {
            lock: self.name,
            buckets,
            count,
            sum: Duration::from_nanos(self.sum_nanos.load(Relaxed)),
        }
    }
}

/// The single-flight map ([`Flight`](crate::flight::Flight)).
pub(crate) static FLIGHT: LockWaits = LockWaits::new("flight");
/// The cache's generation stripes.
pub(crate) static GENERATIONS: LockWaits = LockWaits::new("generations");
/// A circuit breaker's core (window and state changes).
pub(crate) static BREAKER: LockWaits = LockWaits::new("breaker");

/// A snapshot of one lock class's waits.
#[derive(Debug, Clone, PartialEq)]
pub struct LockWaitStats {
    /// The lock class: `flight`, `generations` or `breaker`.
    pub lock: &'static str,
    /// (upper bound, acquisitions that waited at most that long),
    /// cumulative, one per [`BUCKETS`] entry.
    pub buckets: Vec<(Duration, u64)>,
    /// Acquisitions that had to wait.
    pub count: u64,
    /// Their waits, summed.
    pub sum: Duration,
}

/// Every lock class's waits since the process started.
pub fn lock_waits() -> Vec<LockWaitStats> {
    [&FLIGHT, &GENERATIONS, &BREAKER]
        .iter()
        .map(|waits| waits.snapshot())
        .collect()
}

/// Locks parking_lot's `mutex`, timing the wait into `waits` if it was
/// held. Every lock outside loom builds, and the ones loom does not model
/// (the generation stripes) in them.
#[inline]
pub(crate) fn lock_timed<'a, T>(
    mutex: &'a parking_lot::Mutex<T>,
    waits: &LockWaits,
) -> parking_lot::MutexGuard<'a, T> {
    if let Some(guard) = mutex.try_lock() {
        return guard;
    }
    let began = std::time::Instant::now();
    let guard = mutex.lock();
    waits.record(began.elapsed());
    guard
}

/// Locks one of [`crate::sync`]'s mutexes, timing a wait.
#[cfg(not(rampart_loom))]
pub(crate) use lock_timed as lock;

/// Under loom: the lock alone (the models are about order, not time).
#[cfg(rampart_loom)]
pub(crate) fn lock<'a, T>(
    mutex: &'a crate::sync::Mutex<T>,
    _waits: &LockWaits,
) -> loom::sync::MutexGuard<'a, T> {
    mutex.lock()
}

#[cfg(all(test, not(rampart_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_wait_lands_in_its_bucket_and_the_buckets_are_cumulative() {
        let waits = LockWaits::new("test");
        waits.record(Duration::from_nanos(500));
        waits.record(Duration::from_micros(50));
        waits.record(Duration::from_secs(3));
        let stats = waits.snapshot();
        assert_eq!(stats.count, 3);
        assert_eq!(stats.buckets[0], (Duration::from_micros(1), 1));
        assert_eq!(stats.buckets[1], (Duration::from_micros(10), 1));
        assert_eq!(stats.buckets[2], (Duration::from_micros(100), 2));
        assert_eq!(stats.buckets[6], (Duration::from_secs(1), 2));
        assert_eq!(
            stats.sum,
            Duration::from_nanos(500 + 50_000 + 3_000_000_000)
        );
    }

    #[test]
    fn a_held_lock_records_the_wait_and_a_free_one_does_not() {
        let waits: &'static LockWaits = Box::leak(Box::new(LockWaits::new("held")));
        let mutex = std::sync::Arc::new(crate::sync::Mutex::new(0u32));
        drop(lock(&mutex, waits));
        assert_eq!(waits.snapshot().count, 0, "a free lock is not a wait");
        let held = mutex.lock();
        let waiter = {
            let mutex = std::sync::Arc::clone(&mutex);
            std::thread::spawn(move || *lock(&mutex, waits) += 1)
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        waiter.join().expect("waiter");
        let stats = waits.snapshot();
        assert_eq!(stats.count, 1);
        assert!(stats.sum >= Duration::from_millis(15), "{stats:?}");
    }
}
