//! The warm-up's "back off" signal: the source pool is making loads wait,
//! or foreground requests are getting slow. Foreground traffic comes first.
//!
//! "Slow" is two thresholds. An absolute one (`pressure_foreground_p99`,
//! 50 ms): past it the service is hurting whatever it was like before. And
//! one relative to the foreground's own idle p99
//! (`pressure_foreground_ratio`, 2×): a warm-up that doubles a 1 ms p99
//! is hurting too, long before 50 ms. The idle p99 cannot be seen while
//! the warm-up runs (it starts with the server), so it is *probed*: while
//! foreground traffic flows and no baseline is fresh, the signal reads
//! high for two seconds, which holds the warm-up at one batch per
//! `PRESSURE_PAUSE`; the second of those seconds is the baseline. Probes
//! repeat every `PROBE_EVERY` as the traffic changes. Without foreground
//! traffic there is nothing to protect, no probe, and the warm-up runs at
//! the source's pace.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::Mutex;

use crate::cache::source::PoolWait;

/// Pressure on the source, as the warm-up sees it.
pub struct SourcePressure {
    pub pool_wait: Arc<PoolWait>,
    pub pool_wait_limit: Duration,
    pub foreground: Arc<ForegroundLatency>,
}

impl rampart::warm::Pressure for SourcePressure {
    fn is_high(&self) -> bool {
        self.pool_wait.average() > self.pool_wait_limit || self.foreground.is_slow()
    }
}

/// Below this many requests in a second there is no meaningful p99.
const MIN_SAMPLES: u64 = 50;
/// How long an idle baseline is trusted before it is probed again.
const PROBE_EVERY: u64 = 30;
/// Latency buckets: four per power of two of microseconds (so a p99 is
/// known within 25 %), up to ~2^25 µs (33 s); slower lands in the last.
const BUCKETS: usize = 96;
/// Seconds kept: a probe's measured second must still be there when the
/// warm-up next asks, which at one batch per pause plus a slow batch can
/// be a few seconds later.
const SLOTS: u64 = 4;

/// Foreground latency per one-second slot, as a histogram of atomics so
/// the request path never takes a lock; and the warm-up's reading of it.
pub struct ForegroundLatency {
    absolute: Duration,
    /// 0: the relative threshold is off.
    ratio: f64,
    epoch: Instant,
    /// The last `SLOTS` seconds (indexed by second % SLOTS).
    slots: [Slot; SLOTS as usize],
    probe: Mutex<Probe>,
}

struct Slot {
    second: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    /// Requests slower than the absolute bound, counted exactly (a bucket
    /// bound is up to 25 % off).
    slow: AtomicU64,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            second: AtomicU64::new(u64::MAX),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            slow: AtomicU64::new(0),
        }
    }
}

/// Read by the warm-up before each batch (a few hundred times a second at
/// most), never by a request: a mutex is fine here.
#[derive(Default)]
struct Probe {
    /// The second the last probe measured, and the idle p99 it found
    /// (`None` when too few requests came that second to tell: then the
    /// relative signal is off until the next probe, `PROBE_EVERY` later,
    /// rather than probing again at once).
    measured: Option<(u64, Option<Duration>)>,
    /// The probe under way: its first second (held back, not measured).
    started: Option<u64>,
}

impl ForegroundLatency {
    /// `absolute`: p99 past it is always pressure. `ratio`: p99 past this
    /// multiple of the probed idle p99 is too; 0 turns that off.
    pub fn new(absolute: Duration, ratio: f64) -> Self {
        ForegroundLatency {
            absolute,
            ratio,
            epoch: Instant::now(),
            slots: Default::default(),
            probe: Mutex::new(Probe::default()),
        }
    }

    fn now_second(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Records one foreground request's latency.
    pub fn record(&self, latency: Duration) {
        let second = self.now_second();
        let slot = &self.slots[(second % SLOTS) as usize];
        // Relaxed throughout: these are statistics. A reset racing with an
        // increment can lose a sample at a second boundary, which only
        // blurs the estimate for that second.
        if slot.second.swap(second, Relaxed) != second {
            for bucket in &slot.buckets {
                bucket.store(0, Relaxed);
            }
            slot.slow.store(0, Relaxed);
        }
        slot.buckets[bucket_of(latency)].fetch_add(1, Relaxed);
        if latency > self.absolute {
            slot.slow.fetch_add(1, Relaxed);
        }
    }

    /// The slot of second `second`, if it still holds that second.
    fn slot_of(&self, second: u64) -> Option<&Slot> {
        let slot = &self.slots[(second % SLOTS) as usize];
        (slot.second.load(Relaxed) == second).then_some(slot)
    }

    /// Whether more than 1 % of second `second`'s requests (if enough)
    /// were slower than the absolute bound: its p99 is past it.
    fn past_absolute(&self, second: u64) -> bool {
        let Some(slot) = self.slot_of(second) else {
            return false;
        };
        let total: u64 = slot.buckets.iter().map(|b| b.load(Relaxed)).sum();
        total >= MIN_SAMPLES && slot.slow.load(Relaxed) * 100 > total
    }

    /// The p99 of second `second` (this one or the last), if it saw
    /// enough requests.
    fn p99_of(&self, second: u64) -> Option<Duration> {
        let slot = self.slot_of(second)?;
        let counts: Vec<u64> = slot.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total < MIN_SAMPLES {
            return None;
        }
        // The smallest bucket with at least 99 % of requests at or below.
        let wanted = total - total / 100;
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return Some(upper_bound(index));
            }
        }
        Some(upper_bound(BUCKETS - 1))
    }

    /// Whether the warm-up should back off: the last whole second's p99
    /// is past the absolute threshold or past `ratio` × the idle p99, or
    /// a probe of the idle p99 is under way.
    pub fn is_slow(&self) -> bool {
        self.is_slow_at(self.now_second())
    }

    fn is_slow_at(&self, now: u64) -> bool {
        let Some(last_second) = now.checked_sub(1) else {
            return false;
        };
        if self.past_absolute(last_second) {
            return true;
        }
        let last = self.p99_of(last_second);
        if self.ratio <= 0.0 {
            return false;
        }
        // A poisoned lock only means a panic elsewhere mid-update of two
        // plain fields: the values are still usable.
        let mut probe = self.probe.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(started) = probe.started {
            // Held back during `started` and `started + 1`; the second one
            // is measured once it is over.
            if now <= started + 1 {
                return true;
            }
            probe.started = None;
            probe.measured = Some((started + 1, self.p99_of(started + 1)));
        }
        let Some(last) = last else {
            // No foreground traffic to protect.
            return false;
        };
        match probe.measured {
            Some((at, idle)) if now.saturating_sub(at) < PROBE_EVERY => {
                idle.is_some_and(|idle| last.as_secs_f64() > idle.as_secs_f64() * self.ratio)
            }
            _ => {
                probe.started = Some(now);
                true
            }
        }
    }
}

/// The bucket of a latency: four per power of two of microseconds.
fn bucket_of(latency: Duration) -> usize {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if micros < 4 {
        return micros as usize;
    }
    let exponent = 63 - micros.leading_zeros() as usize; // ≥ 2
    let mantissa = ((micros >> (exponent - 2)) & 3) as usize;
    ((exponent - 1) * 4 + mantissa).min(BUCKETS - 1)
}

/// The largest latency in bucket `index` (exclusive bound).
fn upper_bound(index: usize) -> Duration {
    if index < 4 {
        return Duration::from_micros(index as u64 + 1);
    }
    let exponent = index / 4 + 1;
    let mantissa = (index % 4) as u64;
    Duration::from_micros((4 + mantissa + 1) << (exponent - 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every latency lands in a bucket whose bound is above it and within
    /// 25 % of it; buckets grow monotonically.
    #[test]
    fn buckets_bound_their_latencies_within_a_quarter() {
        let mut last = 0;
        for micros in (0..100_000u64).chain([1 << 22, 1 << 30, u64::MAX / 2]) {
            let latency = Duration::from_micros(micros);
            let index = bucket_of(latency);
            assert!(
                index >= last || micros > 100_000,
                "not monotonic at {micros}"
            );
            last = index;
            let bound = upper_bound(index);
            if index < BUCKETS - 1 {
                assert!(bound > latency, "{micros} µs: bound {bound:?}");
                assert!(bound.as_secs_f64() <= (latency.as_secs_f64() * 1.26).max(4e-6));
            }
        }
    }

    fn one_second_of(latency: &ForegroundLatency, second: u64, fast: u64, slow: (u64, Duration)) {
        // Writes straight into the slot of `second`, as `record` would
        // have during that second.
        let slot = &latency.slots[(second % SLOTS) as usize];
        slot.second.store(second, Relaxed);
        for bucket in &slot.buckets {
            bucket.store(0, Relaxed);
        }
        slot.buckets[bucket_of(Duration::from_micros(500))].fetch_add(fast, Relaxed);
        slot.buckets[bucket_of(slow.1)].fetch_add(slow.0, Relaxed);
        let past = u64::from(slow.1 > latency.absolute) * slow.0;
        slot.slow.store(past, Relaxed);
    }

    #[test]
    fn p99_is_past_the_absolute_threshold_only_past_one_percent_slow() {
        let latency = ForegroundLatency::new(Duration::from_millis(50), 0.0);
        one_second_of(&latency, 9, 198, (2, Duration::from_millis(80)));
        assert!(!latency.is_slow_at(10), "2 of 200 slow: p99 not above");
        one_second_of(&latency, 9, 197, (3, Duration::from_millis(80)));
        assert!(latency.is_slow_at(10), "3 of 200 slow: p99 above");
    }

    #[test]
    fn too_few_samples_mean_no_pressure_and_no_probe() {
        let latency = ForegroundLatency::new(Duration::from_millis(50), 2.0);
        one_second_of(&latency, 9, 0, (10, Duration::from_secs(1)));
        assert!(!latency.is_slow_at(10));
        assert!(latency.probe.lock().unwrap().started.is_none());
    }

    /// With traffic and no baseline: a two-second probe, measured in its
    /// second second; then slow exactly when p99 is past ratio × that
    /// idle p99; a new probe once the baseline is `PROBE_EVERY` old.
    #[test]
    fn the_idle_p99_is_probed_then_p99_is_judged_against_it() {
        let latency = ForegroundLatency::new(Duration::from_millis(50), 2.0);
        one_second_of(&latency, 9, 1_000, (0, Duration::ZERO));
        assert!(latency.is_slow_at(10), "a probe starts");
        assert!(
            latency.is_slow_at(11),
            "and holds through its second second"
        );
        // The second second of the probe: p99 ~1 ms (idle).
        one_second_of(&latency, 11, 980, (20, Duration::from_millis(1)));
        one_second_of(&latency, 12, 980, (20, Duration::from_micros(1_500)));
        assert!(!latency.is_slow_at(13), "1.5 ms is under 2 × 1 ms");
        let (at, idle) = latency.probe.lock().unwrap().measured.expect("measured");
        let idle = idle.expect("a baseline");
        assert_eq!(at, 11);
        assert!(idle >= Duration::from_millis(1) && idle < Duration::from_micros(1_250));
        one_second_of(&latency, 13, 980, (20, Duration::from_millis(3)));
        assert!(latency.is_slow_at(14), "3 ms is past 2 × 1 ms");
        one_second_of(&latency, 11 + PROBE_EVERY - 1, 1_000, (0, Duration::ZERO));
        assert!(
            latency.is_slow_at(11 + PROBE_EVERY),
            "a baseline that old is probed again"
        );
    }
    /// The probe's measured second is still readable a few seconds late
    /// (a slow batch at one batch per pause); and a probe that saw too few
    /// requests turns the relative signal off until the next one instead
    /// of probing again at once.
    #[test]
    fn a_late_look_still_finds_the_probe_and_a_quiet_probe_does_not_repeat() {
        let latency = ForegroundLatency::new(Duration::from_millis(50), 2.0);
        one_second_of(&latency, 9, 1_000, (0, Duration::ZERO));
        assert!(latency.is_slow_at(10));
        one_second_of(&latency, 11, 990, (10, Duration::from_millis(1)));
        one_second_of(&latency, 13, 1_000, (0, Duration::ZERO));
        assert!(
            !latency.is_slow_at(14),
            "asked three seconds late: baseline found"
        );
        let (at, idle) = latency.probe.lock().unwrap().measured.expect("measured");
        assert_eq!((at, idle.is_some()), (11, true));

        let quiet = ForegroundLatency::new(Duration::from_millis(50), 2.0);
        one_second_of(&quiet, 9, 1_000, (0, Duration::ZERO));
        assert!(quiet.is_slow_at(10));
        one_second_of(&quiet, 11, 10, (0, Duration::ZERO));
        one_second_of(&quiet, 12, 1_000, (0, Duration::from_secs(0)));
        assert!(
            !quiet.is_slow_at(13),
            "no baseline: the relative signal is off"
        );
        one_second_of(&quiet, 13, 1_000, (0, Duration::ZERO));
        assert!(!quiet.is_slow_at(14), "and no new probe before PROBE_EVERY");
    }
}
