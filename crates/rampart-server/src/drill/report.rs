//! One run's outcome ([`DrillReport`]), its table, and the release
//! [`gate`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The header whose values are counted in [`DrillReport::by_header`].
pub const CACHE_HEADER: &str = "x-cache";

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// The outcome of one run (measured window only; warmup excluded).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DrillReport {
    /// The targets, as given.
    pub targets: Vec<String>,
    /// Closed loop: connections, each in its loop. Open loop: the most
    /// connections in use at once.
    pub connections: usize,
    /// `closed` (a connection sends when its last answer is in) or `open`
    /// (constant arrival rate, latency from the intended send time); a
    /// scenario's own driver names its load here (`config-push`: long-poll
    /// watchers).
    pub mode: String,
    /// The open loop's arrival rate, requests per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// HTTP requests sent for the measured ones, client retries included
    /// (equal to `requests` without retries).
    pub sent: u64,
    /// The open loop's per-second series (warm-up included), by intended
    /// send time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<super::series::Second>,
    /// Measured attempts: responses plus failures without a response.
    pub requests: u64,
    /// Failures without a response, plus 5xx and 429 responses.
    pub errors: u64,
    /// Length of the measured window.
    pub elapsed_secs: f64,
    pub throughput_rps: f64,
    /// Latency of responses (any status): the closed loop's merged
    /// [`Histogram`](super::Histogram), or the open loop's HDR histogram.
    pub latency_us: Percentiles,
    pub by_status: BTreeMap<u16, u64>,
    /// Counts of the `x-cache` response header's values; empty if absent.
    pub by_header: BTreeMap<String, u64>,
    /// Failures without a response: `connect`, `io`, `timeout`.
    pub by_error: BTreeMap<String, u64>,
}

impl DrillReport {
    /// Errors per measured request (0 when nothing was measured).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// A human-readable summary, one fact per line.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let counts = |map: &mut dyn Iterator<Item = (String, u64)>| {
            let parts: Vec<String> = map.map(|(k, v)| format!("{k}: {v}")).collect();
            if parts.is_empty() {
                "-".to_owned()
            } else {
                parts.join("  ")
            }
        };
        for target in &self.targets {
            let _ = writeln!(out, "{:<13}{target}", "target");
        }
        match self.rate {
            Some(rate) => {
                let _ = writeln!(
                    out,
                    "{:<13}open loop, {rate:.0} req/s, latency from the intended send time",
                    "mode"
                );
                let _ = writeln!(out, "{:<13}{} at most", "connections", self.connections);
            }
            None => {
                let _ = writeln!(out, "{:<13}{}", "connections", self.connections);
            }
        }
        let _ = writeln!(out, "{:<13}{:.2} s measured", "elapsed", self.elapsed_secs);
        let _ = writeln!(
            out,
            "{:<13}{}  ({:.1} req/s)",
            "requests", self.requests, self.throughput_rps
        );
        if self.sent != self.requests {
            let _ = writeln!(
                out,
                "{:<13}{}  ({:.2}x the requests: client retries)",
                "sent",
                self.sent,
                self.sent as f64 / self.requests.max(1) as f64
            );
        }
        let _ = writeln!(
            out,
            "{:<13}{}  ({:.2} %)",
            "errors",
            self.errors,
            self.error_rate() * 100.0
        );
        let l = &self.latency_us;
        let _ = writeln!(
            out,
            "{:<13}p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            "latency",
            fmt_micros(l.p50),
            fmt_micros(l.p90),
            fmt_micros(l.p99),
            fmt_micros(l.p999),
            fmt_micros(l.max)
        );
        let _ = writeln!(
            out,
            "{:<13}{}",
            "status",
            counts(&mut self.by_status.iter().map(|(k, v)| (k.to_string(), *v)))
        );
        let _ = writeln!(
            out,
            "{:<13}{}",
            CACHE_HEADER,
            counts(&mut self.by_header.iter().map(|(k, v)| (k.clone(), *v)))
        );
        let _ = writeln!(
            out,
            "{:<13}{}",
            "no response",
            counts(&mut self.by_error.iter().map(|(k, v)| (k.clone(), *v)))
        );
        out
    }
}

pub(crate) fn fmt_micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    fmt_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Release gate: `Ok(())`, or `Err(reasons)` when the error rate exceeds
/// `max_error_rate` (a fraction) or the p99 latency exceeds `max_p99`. A run
/// that measured no requests fails: the gate never passes on no data.
pub fn gate(
    report: &DrillReport,
    max_error_rate: f64,
    max_p99: Duration,
) -> Result<(), Vec<String>> {
    if report.requests == 0 {
        return Err(vec![
            "no requests were measured; the gate cannot pass on no data".to_owned(),
        ]);
    }
    let mut reasons = Vec::new();
    let rate = report.error_rate();
    // A NaN limit fails rather than passes.
    if max_error_rate.is_nan() || rate > max_error_rate {
        reasons.push(format!(
            "error rate {:.3} % ({} of {} requests) exceeds the limit of {:.3} %",
            rate * 100.0,
            report.errors,
            report.requests,
            max_error_rate * 100.0
        ));
    }
    let p99 = Duration::from_micros(report.latency_us.p99);
    if p99 > max_p99 {
        reasons.push(format!(
            "p99 latency {} exceeds the limit of {}",
            fmt_micros(report.latency_us.p99),
            fmt_duration(max_p99)
        ));
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}
