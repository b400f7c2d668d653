//! The warm-up's "back off" signal: the source pool is making loads wait,
//! or foreground requests are getting slow. Foreground traffic comes first.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::source::PoolWait;

/// Pressure on the source, as the warm-up sees it.
pub struct SourcePressure {
    pub pool_wait: Arc<PoolWait>,
    pub pool_wait_limit: Duration,
    pub foreground: Arc<ForegroundLatency>,
}

impl rampart::warm::Pressure for SourcePressure {
    fn is_high(&self) -> bool {
        self.pool_wait.average() > self.pool_wait_limit || self.foreground.p99_exceeded()
    }
}

/// Whether foreground p99 is too high, two ways, over this second and the
/// last (two one-second slots, all atomics so the request path never
/// takes a lock):
///
/// * above the configured threshold T: p99 > T exactly when more than 1 %
///   of requests take longer than T (counted exactly);
/// * more than [`RELATIVE_LIMIT`] times the lowest p99 seen so far (from a
///   coarse log-scale histogram, four buckets per doubling). Why: the goal
///   is that the warm-up costs foreground traffic at most a doubling of its
///   p99 (issue 15), and on loopback that p99 is around a millisecond,
///   far below any fixed threshold one could ship as a default; the
///   lowest p99 seen is the best estimate of the idle one this process
///   has, since pressure only ever raises it.
pub struct ForegroundLatency {
    threshold: Duration,
    epoch: Instant,
    slots: [Slot; 2],
    /// The lowest p99 bucket seen over two seconds with enough samples
    /// (`u64::MAX` until then).
    lowest_p99: AtomicU64,
}

/// How many times its lowest p99 the foreground p99 may grow to before the
/// warm-up backs off.
pub const RELATIVE_LIMIT: f64 = 2.0;

/// Log-scale buckets: four per doubling from 16 µs, the last open-ended
/// (about 16 µs × 2^15.75 ≈ 0.9 s and above).
const BUCKETS: usize = 64;
const PER_DOUBLING: u32 = 4;
const FIRST_BUCKET_MICROS: u64 = 16;

struct Slot {
    second: AtomicU64,
    total: AtomicU64,
    slow: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            second: AtomicU64::new(0),
            total: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The bucket of a latency: 0 below 16 µs, then four per doubling.
fn bucket_of(latency: Duration) -> usize {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if micros < FIRST_BUCKET_MICROS {
        return 0;
    }
    // floor(log2(micros)) >= 4, since micros >= 16.
    let log2 = 63 - u64::from(micros.leading_zeros());
    // The two bits below the leading one pick the quarter of the doubling.
    let quarter = (micros >> (log2 - 2)) & 3;
    let index = 1 + (log2 - 4) * u64::from(PER_DOUBLING) + quarter;
    usize::try_from(index).map_or(BUCKETS - 1, |i| i.min(BUCKETS - 1))
}

/// The bucket holding the p99 of `counts`: the highest bucket at or above
/// which more than 1 % of the samples lie.
fn p99_bucket(counts: &[u64; BUCKETS], total: u64) -> usize {
    let mut at_or_above = 0;
    for i in (0..BUCKETS).rev() {
        at_or_above += counts[i];
        if at_or_above * 100 > total {
            return i;
        }
    }
    0
}

/// Below this many requests in two seconds there is no meaningful p99.
const MIN_SAMPLES: u64 = 50;

impl ForegroundLatency {
    pub fn new(threshold: Duration) -> Self {
        ForegroundLatency {
            threshold,
            epoch: Instant::now(),
            slots: Default::default(),
            lowest_p99: AtomicU64::new(u64::MAX),
        }
    }

    fn now_second(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Records one foreground request's latency.
    pub fn record(&self, latency: Duration) {
        let second = self.now_second();
        let slot = &self.slots[(second % 2) as usize];
        // Relaxed throughout: these are statistics. A reset racing with an
        // increment can lose a sample at a second boundary, which only
        // blurs the estimate for that second.
        if slot.second.swap(second, Relaxed) != second {
            slot.total.store(0, Relaxed);
            slot.slow.store(0, Relaxed);
            for bucket in &slot.buckets {
                bucket.store(0, Relaxed);
            }
        }
        slot.total.fetch_add(1, Relaxed);
        slot.buckets[bucket_of(latency)].fetch_add(1, Relaxed);
        if latency > self.threshold {
            slot.slow.fetch_add(1, Relaxed);
        }
    }

    /// True when, over this second and the last, more than 1 % of requests
    /// were slower than the threshold, or p99 was more than
    /// [`RELATIVE_LIMIT`] times the lowest p99 seen so far.
    pub fn p99_exceeded(&self) -> bool {
        let second = self.now_second();
        let (mut total, mut slow) = (0, 0);
        let mut counts = [0u64; BUCKETS];
        for slot in &self.slots {
            if second.saturating_sub(slot.second.load(Relaxed)) <= 1 {
                total += slot.total.load(Relaxed);
                slow += slot.slow.load(Relaxed);
                for (count, bucket) in counts.iter_mut().zip(&slot.buckets) {
                    *count += bucket.load(Relaxed);
                }
            }
        }
        if total < MIN_SAMPLES {
            return false;
        }
        if slow * 100 > total {
            return true;
        }
        let p99 = p99_bucket(&counts, total) as u64;
        // Relaxed: a lower bound only ever moves down; no other memory
        // depends on it.
        let lowest = self.lowest_p99.fetch_min(p99, Relaxed).min(p99);
        // Buckets are 2^(1/4) apart: p99 is above RELATIVE_LIMIT × the
        // lowest when it is more than 4 × log2(limit) buckets higher.
        let limit = (f64::from(PER_DOUBLING) * RELATIVE_LIMIT.log2()).round() as u64;
        p99 > lowest + limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_exceeded_only_past_one_percent_slow() {
        let latency = ForegroundLatency::new(Duration::from_millis(50));
        for _ in 0..198 {
            latency.record(Duration::from_millis(1));
        }
        latency.record(Duration::from_millis(80));
        latency.record(Duration::from_millis(80));
        assert!(
            !latency.p99_exceeded(),
            "2 of 200 slow is 1 %: p99 not above"
        );
        latency.record(Duration::from_millis(80));
        assert!(
            latency.p99_exceeded(),
            "3 of 201 slow: p99 above the threshold"
        );
    }

    #[test]
    fn buckets_are_four_per_doubling() {
        let b = |micros| bucket_of(Duration::from_micros(micros));
        assert_eq!(b(0), 0);
        assert_eq!(b(15), 0);
        assert_eq!(b(16), 1);
        assert_eq!(b(32), 5);
        assert_eq!(b(64), 9);
        assert_eq!(b(40), 6); // 32 × 1.25
        assert_eq!(b(1_000) + 4, b(2_000));
        assert_eq!(b(u64::MAX / 2), BUCKETS - 1);
        for micros in [20, 100, 999, 5_000, 123_456] {
            assert!(b(micros) <= b(micros + 1), "monotonic at {micros}");
        }
    }

    #[test]
    fn p99_more_than_twice_the_lowest_seen_is_pressure() {
        let latency = ForegroundLatency::new(Duration::from_millis(50));
        for _ in 0..1_000 {
            latency.record(Duration::from_micros(500));
        }
        assert!(!latency.p99_exceeded(), "the idle p99 is learnt");
        // 1.5 × the idle p99 for 2 % of requests: within the limit.
        for _ in 0..20 {
            latency.record(Duration::from_micros(750));
        }
        assert!(!latency.p99_exceeded(), "p99 at 1.5 × idle");
        // 3 × for another 2 %: p99 is now above twice the idle one.
        for _ in 0..25 {
            latency.record(Duration::from_micros(1_500));
        }
        assert!(latency.p99_exceeded(), "p99 at 3 × idle");
    }

    #[test]
    fn too_few_samples_mean_no_pressure() {
        let latency = ForegroundLatency::new(Duration::from_millis(50));
        for _ in 0..10 {
            latency.record(Duration::from_secs(1));
        }
        assert!(!latency.p99_exceeded());
    }
}
