//! The two halves side by side: the figures every scenario has, then the
//! scenario's own, naive | guarded; and the guarded half's SLO verdict.

use std::fmt::Write as _;

use crate::drill::report::fmt_micros;
use crate::drill::slo::Slo;

use super::measure::Half;
use super::{Plan, Scenario};

/// One line of the table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// What is compared.
    pub label: String,
    /// The naive half's value, formatted.
    pub naive: String,
    /// The guarded half's value, formatted.
    pub guarded: String,
}

/// The guarded half against `--slo`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verdict {
    /// The objective, as given.
    pub slo: String,
    /// Terms missed; empty when met.
    pub missed: Vec<String>,
}

/// A whole scenario run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    /// Its name.
    pub scenario: &'static str,
    /// The incident replayed.
    pub incident: &'static str,
    /// The guards that make the difference.
    pub guards: &'static str,
    /// The short version?
    pub quick: bool,
    /// Offered load, requests per second.
    pub rate: f64,
    /// Seconds of load per half.
    pub duration_secs: f64,
    /// Demo users in the source.
    pub rows: u64,
    /// The key space read.
    pub keys: String,
    /// The incident window, seconds from the start of the load.
    pub incident_window: Option<(f64, f64)>,
    /// The fault timeline, as text.
    pub timeline: Vec<String>,
    /// Guards off.
    pub naive: Half,
    /// Guards on.
    pub guarded: Half,
    /// Side by side.
    pub table: Vec<Row>,
    /// The guarded half against `--slo`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo: Option<Verdict>,
}

fn pct(errors: u64, of: u64) -> String {
    if of == 0 {
        "-".to_owned()
    } else {
        format!("{:.2} %", errors as f64 * 100.0 / of as f64)
    }
}

impl Comparison {
    pub(super) fn new(
        scenario: &Scenario,
        plan: &Plan,
        quick: bool,
        naive: Half,
        guarded: Half,
    ) -> Self {
        let mut table = Vec::new();
        let mut row = |label: &str, f: &dyn Fn(&Half) -> String| {
            table.push(Row {
                label: label.to_owned(),
                naive: f(&naive),
                guarded: f(&guarded),
            });
        };
        row("requests", &|h| h.load.requests.to_string());
        row("answered/s", &|h| {
            format!(
                "{:.0}",
                h.load.requests.saturating_sub(h.load.errors) as f64
                    / h.load.elapsed_secs.max(1e-9)
            )
        });
        row("errors", &|h| {
            format!(
                "{} ({})",
                h.load.errors,
                pct(h.load.errors, h.load.requests)
            )
        });
        row("stale answers", &|h| {
            let stale: u64 = h.load.series.iter().map(|s| s.stale).sum();
            format!("{stale} ({})", pct(stale, h.load.requests))
        });
        row("p50", &|h| fmt_micros(h.load.latency_us.p50));
        row("p99", &|h| fmt_micros(h.load.latency_us.p99));
        row("p99.9", &|h| fmt_micros(h.load.latency_us.p999));
        row("max", &|h| fmt_micros(h.load.latency_us.max));
        row("HTTP sent / request", &|h| {
            format!("{:.2}", h.load.sent as f64 / h.load.requests.max(1) as f64)
        });
        row("source loads", &|h| h.source_loads.to_string());
        row("peak source loads/s", &|h| {
            h.source
                .iter()
                .map(|s| s.loads)
                .max()
                .unwrap_or(0)
                .to_string()
        });
        row("peak pool wait (mean/s)", &|h| {
            let peak = h.source.iter().map(|s| s.pool_wait_ms).fold(0.0, f64::max);
            format!("{peak:.1} ms")
        });
        row("breaker open after", &|h| match h.breaker_open_after_ms {
            Some(ms) => format!("{ms} ms"),
            None => "never".to_owned(),
        });
        row("breaker opened / probed", &|h| {
            format!("{} / {}", h.breaker_opens, h.breaker_probes)
        });
        for (i, figure) in naive.figures.iter().enumerate() {
            table.push(Row {
                label: figure.label.to_owned(),
                naive: figure.value.clone(),
                guarded: guarded
                    .figures
                    .get(i)
                    .map_or_else(|| "-".to_owned(), |f| f.value.clone()),
            });
        }
        Comparison {
            scenario: scenario.name,
            incident: scenario.incident,
            guards: scenario.guards,
            quick,
            rate: plan.rate,
            duration_secs: plan.duration.as_secs_f64(),
            rows: plan.rows,
            keys: plan.keys.to_string(),
            incident_window: plan
                .incident
                .map(|(a, b)| (a.as_secs_f64(), b.as_secs_f64())),
            timeline: plan
                .network
                .iter()
                .map(|(at, f)| format!("{:.1}s network: {f}", at.as_secs_f64()))
                .chain(plan.source.iter().map(|(at, f)| {
                    format!(
                        "{:.1}s source: {}",
                        at.as_secs_f64(),
                        match f {
                            super::SourceFault::Break => "broken (table gone)",
                            super::SourceFault::Restore => "restored",
                        }
                    )
                }))
                .chain(plan.redis.iter().flatten().map(|(at, f)| {
                    format!(
                        "{:.1}s redis: {}",
                        at.as_secs_f64(),
                        match f {
                            super::RedisFault::Kill => "killed (SIGKILL)",
                            super::RedisFault::Restart => "restarted, empty",
                        }
                    )
                }))
                .collect(),
            naive,
            guarded,
            table,
            slo: None,
        }
    }

    /// Checks the guarded half against `slo`.
    pub fn check(&mut self, slo: &Slo) {
        self.slo = Some(Verdict {
            slo: slo.text.clone(),
            missed: slo.check(&self.guarded.load).err().unwrap_or_default(),
        });
    }

    /// The table as text.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {}{}: {}",
            self.scenario,
            if self.quick { " (quick)" } else { "" },
            self.incident
        );
        let _ = writeln!(
            out,
            "load: open loop, {:.0} req/s for {:.0} s, keys {}, {} users",
            self.rate, self.duration_secs, self.keys, self.rows
        );
        for step in &self.timeline {
            let _ = writeln!(out, "  {step}");
        }
        let width = self
            .table
            .iter()
            .map(|r| r.label.len())
            .max()
            .unwrap_or(0)
            .max(8);
        let col = self
            .table
            .iter()
            .map(|r| r.naive.len())
            .max()
            .unwrap_or(0)
            .max(8);
        let _ = writeln!(out, "\n{:<width$}  {:>col$}  guarded", "", "naive");
        for r in &self.table {
            let _ = writeln!(out, "{:<width$}  {:>col$}  {}", r.label, r.naive, r.guarded);
        }
        let _ = writeln!(out, "\nguard: {}", self.guards);
        if let Some(v) = &self.slo {
            if v.missed.is_empty() {
                let _ = writeln!(out, "SLO `{}` (guarded): met", v.slo);
            } else {
                let _ = writeln!(
                    out,
                    "SLO `{}` (guarded): MISSED: {}",
                    v.slo,
                    v.missed.join("; ")
                );
            }
        }
        out
    }
}
