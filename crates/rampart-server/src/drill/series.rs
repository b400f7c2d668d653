//! The open loop's measurements: one HDR histogram over the measured
//! window and a per-second time series (requests, errors, stale answers,
//! latency quantiles), both keyed by each request's *intended* send time.

use hdrhistogram::Histogram as Hdr;

use super::config::DrillError;
use super::report::Percentiles;

/// Highest latency an HDR histogram here tracks (one hour, in µs); larger
/// values are recorded as this.
const HIGHEST_US: u64 = 3_600_000_000;

/// An HDR histogram of latencies in µs, 3 significant digits (within
/// 0.1 %), or 2 for the per-second ones (within 1 %, a tenth of the size).
fn hdr(digits: u8) -> Result<Hdr<u64>, DrillError> {
    Hdr::new_with_bounds(1, HIGHEST_US, digits)
        .map_err(|e| DrillError::Internal(format!("histogram: {e:?}")))
}

/// One second of a run, by intended send time.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Second {
    /// Seconds since the start of the run.
    pub t: u32,
    /// Requests intended in this second that got an answer or failed.
    pub requests: u64,
    /// Of those, errors (no response, 5xx, 429).
    pub errors: u64,
    /// Of those, answered from a kept value (`x-cache: stale*`).
    pub stale: u64,
    /// HTTP requests sent for them, client retries included.
    pub sent: u64,
    /// Latency quantiles of the answered ones, µs, from the intended time.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Largest, µs.
    pub max_us: u64,
}

/// Accumulates [`Second`]s and the run's histogram as samples arrive (in
/// any order).
pub(crate) struct Recorder {
    total: Hdr<u64>,
    seconds: Vec<(Second, Hdr<u64>)>,
    /// An empty per-second histogram, cloned for each new second.
    blank: Hdr<u64>,
}

/// One original request's outcome.
pub(crate) struct Sample {
    /// Second of the run it was meant to be sent in.
    pub second: u32,
    /// Whether it falls in the measured window (after the warm-up).
    pub measured: bool,
    /// Latency from the intended send time, when a response came.
    pub latency_us: Option<u64>,
    pub error: bool,
    pub stale: bool,
    pub sent: u32,
}

impl Recorder {
    pub(crate) fn new() -> Result<Self, DrillError> {
        Ok(Self {
            total: hdr(3)?,
            seconds: Vec::new(),
            blank: hdr(2)?,
        })
    }

    pub(crate) fn record(&mut self, sample: &Sample) {
        let index = sample.second as usize;
        while self.seconds.len() <= index {
            let t = u32::try_from(self.seconds.len()).unwrap_or(u32::MAX);
            self.seconds.push((
                Second {
                    t,
                    ..Second::default()
                },
                self.blank.clone(),
            ));
        }
        let (second, hist) = &mut self.seconds[index];
        second.requests += 1;
        second.sent += u64::from(sample.sent);
        second.errors += u64::from(sample.error);
        second.stale += u64::from(sample.stale);
        if let Some(us) = sample.latency_us {
            hist.saturating_record(us.max(1));
            if sample.measured {
                self.total.saturating_record(us.max(1));
            }
        }
    }

    /// The measured window's percentiles.
    pub(crate) fn percentiles(&self) -> Percentiles {
        percentiles(&self.total)
    }

    /// The series, quantiles filled in.
    pub(crate) fn series(self) -> Vec<Second> {
        self.seconds
            .into_iter()
            .map(|(mut second, hist)| {
                let p = percentiles(&hist);
                second.p50_us = p.p50;
                second.p99_us = p.p99;
                second.max_us = p.max;
                second
            })
            .collect()
    }
}

fn percentiles(h: &Hdr<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
}
