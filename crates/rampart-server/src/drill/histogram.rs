//! The closed loop's log-bucketed latency histogram (HDR-style, no
//! dependency; the open loop uses the `hdrhistogram` crate, see
//! [`super::open_loop`]).

use super::report::Percentiles;

/// Sub-buckets per power of two: 2^7 = 128, so a bucket spans < 1/128 of its
/// values.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

/// A log-bucketed (HDR-style) histogram of `u64` values (microseconds here).
///
/// Values below 256 have a bucket each; above, every power-of-two range is
/// split into 128 equal buckets, so any value is known within 1/128 of itself.
/// The bucket array grows only as far as the largest value recorded (about
/// 2 000 buckets for one second in µs), and two histograms merge by adding
/// their buckets.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    fn index_of(value: u64) -> usize {
        let msb = 63 - (value | 1).leading_zeros();
        let shift = msb.saturating_sub(SUB_BITS);
        ((u64::from(shift) << SUB_BITS) + (value >> shift)) as usize
    }

    /// The largest value that falls in bucket `index`.
    fn bucket_high(index: usize) -> u64 {
        let index = index as u64;
        if index < 2 * SUB {
            return index;
        }
        let shift = index / SUB - 1;
        let mantissa = index % SUB + SUB;
        let high = ((u128::from(mantissa) + 1) << shift) - 1;
        u64::try_from(high).unwrap_or(u64::MAX)
    }

    pub fn record(&mut self, value: u64) {
        let index = Self::index_of(value);
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
        }
        self.counts[index] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Adds every sample of `other` to `self`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest sample (exact), 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1) by nearest rank: the smallest
    /// recorded value `v` such that at least `ceil(q * count)` samples are
    /// `<= v`, reported as the upper edge of `v`'s bucket (capped at the
    /// maximum). 0 when empty.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        let ppm = (q.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        self.value_at_ppm(ppm)
    }

    fn value_at_ppm(&self, ppm: u64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let total = u128::from(self.total);
        let rank = (total * u128::from(ppm))
            .div_ceil(1_000_000)
            .clamp(1, total);
        let mut seen = 0u128;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += u128::from(count);
            if seen >= rank {
                return Self::bucket_high(index).min(self.max);
            }
        }
        self.max
    }

    pub fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50: self.value_at_ppm(500_000),
            p90: self.value_at_ppm(900_000),
            p99: self.value_at_ppm(990_000),
            p999: self.value_at_ppm(999_000),
            max: self.max,
        }
    }
}
