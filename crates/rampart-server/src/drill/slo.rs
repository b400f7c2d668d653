//! `--slo 'p99<50ms,errors<0.1%'`: a release gate written as the objective
//! it enforces. A run that misses it makes `rampart drill` exit with
//! [`SLO_EXIT_CODE`] (3), distinct from a usage or start error (1), so CI
//! can tell "the service is too slow" from "the drill could not run".
//!
//! Terms, comma-separated, all of which must hold:
//!
//! * `p50`, `p90`, `p99`, `p99.9`, `max` `<` a duration (`50ms`, `1s`),
//! * `errors` `<` a rate (`0.1%` or `0.001`).
//!
//! `<=` is accepted as well as `<`: a measured value equal to the limit
//! passes only with `<=`.

use std::time::Duration;

use super::config::{parse_duration, parse_rate};
use super::report::{fmt_duration, fmt_micros, DrillReport, Percentiles};

/// The process exit status when a run misses its SLO (or `--max-p99` /
/// `--max-error-rate` gate).
pub const SLO_EXIT_CODE: u8 = 3;

/// A latency quantile an SLO term can bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantile {
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
    /// Largest.
    Max,
}

impl Quantile {
    fn of(self, p: &Percentiles) -> u64 {
        match self {
            Self::P50 => p.p50,
            Self::P90 => p.p90,
            Self::P99 => p.p99,
            Self::P999 => p.p999,
            Self::Max => p.max,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::P50 => "p50",
            Self::P90 => "p90",
            Self::P99 => "p99",
            Self::P999 => "p99.9",
            Self::Max => "max",
        }
    }
}

/// One term of an SLO.
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    /// A latency quantile below a limit.
    Latency {
        /// Which quantile.
        quantile: Quantile,
        /// The limit.
        limit: Duration,
        /// `<=` rather than `<`.
        inclusive: bool,
    },
    /// The error rate (errors / requests) below a limit.
    Errors {
        /// The limit, a fraction.
        limit: f64,
        /// `<=` rather than `<`.
        inclusive: bool,
    },
}

/// A parsed `--slo`.
#[derive(Clone, Debug, PartialEq)]
pub struct Slo {
    /// Every term must hold.
    pub terms: Vec<Term>,
    /// The text it was parsed from.
    pub text: String,
}

impl std::fmt::Display for Slo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses `p99<50ms,errors<0.1%`; the message names the term at fault.
pub fn parse_slo(text: &str) -> Result<Slo, String> {
    let mut terms = Vec::new();
    for raw in text.split(',') {
        let term = raw.trim();
        if term.is_empty() {
            return Err(format!("--slo `{text}`: an empty term (stray comma?)"));
        }
        let (name, inclusive, value) = if let Some((n, v)) = term.split_once("<=") {
            (n, true, v)
        } else if let Some((n, v)) = term.split_once('<') {
            (n, false, v)
        } else {
            return Err(format!(
                "--slo term `{term}`: expected NAME<LIMIT, e.g. p99<50ms or errors<0.1%"
            ));
        };
        let (name, value) = (name.trim(), value.trim());
        let quantile = match name {
            "p50" => Some(Quantile::P50),
            "p90" => Some(Quantile::P90),
            "p99" => Some(Quantile::P99),
            "p99.9" | "p999" => Some(Quantile::P999),
            "max" => Some(Quantile::Max),
            "errors" => None,
            other => {
                return Err(format!(
                    "--slo term `{term}`: unknown measure `{other}` \
                     (p50, p90, p99, p99.9, max or errors)"
                ))
            }
        };
        terms.push(match quantile {
            Some(quantile) => {
                let limit =
                    parse_duration(value).map_err(|e| format!("--slo term `{term}`: {e}"))?;
                if limit.is_zero() {
                    return Err(format!("--slo term `{term}`: the limit must be > 0"));
                }
                Term::Latency {
                    quantile,
                    limit,
                    inclusive,
                }
            }
            None => Term::Errors {
                limit: parse_rate(value).map_err(|e| format!("--slo term `{term}`: {e}"))?,
                inclusive,
            },
        });
    }
    Ok(Slo {
        terms,
        text: text.trim().to_owned(),
    })
}

impl Slo {
    /// `Ok(())`, or every term `report` misses. A run that measured no
    /// requests misses: an SLO never passes on no data.
    pub fn check(&self, report: &DrillReport) -> Result<(), Vec<String>> {
        if report.requests == 0 {
            return Err(vec![
                "no requests were measured; the SLO cannot pass on no data".to_owned(),
            ]);
        }
        let mut missed = Vec::new();
        for term in &self.terms {
            match *term {
                Term::Latency {
                    quantile,
                    limit,
                    inclusive,
                } => {
                    let us = quantile.of(&report.latency_us);
                    let measured = Duration::from_micros(us);
                    let ok = if inclusive {
                        measured <= limit
                    } else {
                        measured < limit
                    };
                    if !ok {
                        missed.push(format!(
                            "{} {} is not {} {}",
                            quantile.name(),
                            fmt_micros(us),
                            if inclusive { "<=" } else { "<" },
                            fmt_duration(limit)
                        ));
                    }
                }
                Term::Errors { limit, inclusive } => {
                    let rate = report.error_rate();
                    let ok = if inclusive {
                        rate <= limit
                    } else {
                        rate < limit
                    };
                    if !ok {
                        missed.push(format!(
                            "errors {:.3} % ({} of {}) is not {} {:.3} %",
                            rate * 100.0,
                            report.errors,
                            report.requests,
                            if inclusive { "<=" } else { "<" },
                            limit * 100.0
                        ));
                    }
                }
            }
        }
        if missed.is_empty() {
            Ok(())
        } else {
            Err(missed)
        }
    }
}
