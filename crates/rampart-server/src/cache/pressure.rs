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

/// Whether foreground p99 is above a threshold, without a histogram: p99 >
/// T exactly when more than 1 % of requests take longer than T. Counts per
/// one-second slot, two slots (this second and the last), all atomics so
/// the request path never takes a lock.
pub struct ForegroundLatency {
    threshold: Duration,
    epoch: Instant,
    slots: [Slot; 2],
}

#[derive(Default)]
struct Slot {
    second: AtomicU64,
    total: AtomicU64,
    slow: AtomicU64,
}

/// Below this many requests in two seconds there is no meaningful p99.
const MIN_SAMPLES: u64 = 50;

impl ForegroundLatency {
    pub fn new(threshold: Duration) -> Self {
        ForegroundLatency {
            threshold,
            epoch: Instant::now(),
            slots: Default::default(),
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
        }
        slot.total.fetch_add(1, Relaxed);
        if latency > self.threshold {
            slot.slow.fetch_add(1, Relaxed);
        }
    }

    /// True when, over this second and the last, more than 1 % of requests
    /// were slower than the threshold.
    pub fn p99_exceeded(&self) -> bool {
        let second = self.now_second();
        let (mut total, mut slow) = (0, 0);
        for slot in &self.slots {
            if second.saturating_sub(slot.second.load(Relaxed)) <= 1 {
                total += slot.total.load(Relaxed);
                slow += slot.slow.load(Relaxed);
            }
        }
        total >= MIN_SAMPLES && slow * 100 > total
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
    fn too_few_samples_mean_no_pressure() {
        let latency = ForegroundLatency::new(Duration::from_millis(50));
        for _ in 0..10 {
            latency.record(Duration::from_secs(1));
        }
        assert!(!latency.p99_exceeded());
    }
}
