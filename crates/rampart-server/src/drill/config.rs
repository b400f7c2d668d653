//! What a closed-loop run is given: [`DrillConfig`], the `rampart drill`
//! flags ([`DrillArgs`]) and their parsers, and [`DrillError`].

use std::sync::Arc;
use std::time::Duration;

use hyper::Uri;

use super::keys::{parse_keys, KeySpace};
use super::open_loop::{ClientRetry, MAX_RATE};
use super::report::fmt_duration;
use super::slo::{parse_slo, Slo};
use super::targets::Target;

/// Most connections one run may open.
pub const MAX_CONNECTIONS: usize = 1024;
/// Longest run allowed.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// What to load, how hard, and for how long.
#[derive(Clone, Debug)]
pub struct DrillConfig {
    /// Full URLs, e.g. `http://127.0.0.1:7070/v1/r/users/{key}`; every `{key}`
    /// is replaced per request. Loopback hosts only.
    pub targets: Vec<String>,
    /// How `{key}` is chosen.
    pub keys: KeySpace,
    /// Concurrent keep-alive connections, each in a closed loop.
    pub connections: usize,
    /// Whole run, warmup included.
    pub duration: Duration,
    /// Stop once this many requests have been measured.
    pub max_requests: Option<u64>,
    /// Requests started in this first part of the run are not recorded.
    pub warmup: Duration,
    /// A request (or connect) taking longer is abandoned and counted as an
    /// error.
    pub request_timeout: Duration,
    /// Open loop at this many requests per second (`--rate`); `None`: the
    /// closed loop.
    pub rate: Option<f64>,
    /// What the open loop's client does after a failed answer.
    pub retry: ClientRetry,
    /// Seeds the key draws (the same seed draws the same keys in the same
    /// order); `None`: a fresh seed every run.
    pub seed: Option<u64>,
    /// Open loop only: a `POST` with a body instead of the `GET` (a
    /// scenario's writes, e.g. the flash sale's reservations).
    pub post: Option<Post>,
}

/// The open loop's `POST`: the same body to every target URL.
#[derive(Clone, Debug)]
pub struct Post {
    /// Sent as `application/json`.
    pub body: bytes::Bytes,
    /// When set, request `i` of the run carries `Idempotency-Key:
    /// {prefix}{i}`: one key per request (a buyer each), the same key on
    /// its client retries, as a well-behaved client does.
    pub idempotency_prefix: Option<String>,
}

impl Default for DrillConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            keys: KeySpace::Fixed("1".to_owned()),
            connections: 32,
            duration: Duration::from_secs(10),
            max_requests: None,
            warmup: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            rate: None,
            retry: ClientRetry::Never,
            seed: None,
            post: None,
        }
    }
}

/// Parses a duration such as `10s`, `500ms`, `2m`, `1.5s`, `250us` or `1h`.
/// A unit is required; the value is exact (no floating point).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit (use us, ms, s, m or h, e.g. 500ms)"))?;
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(format!("`{text}` must start with a number, e.g. 10s"));
    }
    let unit_nanos: u128 = match unit {
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use us, ms, s, m or h)"
            ))
        }
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let bad = || format!("`{text}` is not a valid duration");
    if whole.is_empty() || frac.contains('.') || frac.len() > 9 {
        return Err(bad());
    }
    let whole: u128 = whole.parse().map_err(|_| bad())?;
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(bad)?;
    if !frac.is_empty() {
        let digits: u128 = frac.parse().map_err(|_| bad())?;
        let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
        nanos = nanos
            .checked_add(digits * unit_nanos / scale)
            .ok_or_else(bad)?;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad())?;
    let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, sub))
}

/// Parses an error-rate limit: a fraction (`0.01`) or a percentage (`1%`),
/// between 0 and 1 (100 %).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let s = text.trim();
    let rate = match s.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a number (use a fraction like 0.01 or 1%)"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("`{text}` must be between 0 and 1 (0 % and 100 %)"));
    }
    Ok(rate)
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn keys_arg(s: &str) -> Result<KeySpace, String> {
    parse_keys(s)
}

fn rate_arg(s: &str) -> Result<f64, String> {
    parse_rate(s)
}

/// Parses an arrival rate: `500`, `500/s` or `30000/m`.
pub fn parse_arrival_rate(text: &str) -> Result<f64, String> {
    let s = text.trim();
    let (number, per) = match s.split_once('/') {
        Some((n, "s")) => (n, 1.0),
        Some((n, "m")) => (n, 60.0),
        Some((_, unit)) => {
            return Err(format!(
                "`{text}`: unknown unit `/{unit}` (use N/s or N/m, e.g. 500/s)"
            ))
        }
        None => (s, 1.0),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a rate (e.g. 500/s)"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("`{text}`: the rate must be above 0"));
    }
    Ok(n / per)
}

fn slo_arg(s: &str) -> Result<Slo, String> {
    parse_slo(s)
}

/// `rampart drill` command-line flags.
#[derive(clap::Args, Clone, Debug)]
pub struct DrillArgs {
    /// Target URL, repeatable; `{key}` is replaced per request. Loopback only
    /// (`127.0.0.0/8`, `[::1]`, `localhost`).
    #[arg(long = "target", value_name = "URL", required = true)]
    pub targets: Vec<String>,
    /// Concurrent keep-alive connections (closed loop).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub connections: usize,
    /// Length of the whole run, warmup included (e.g. 10s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration_arg)]
    pub duration: Duration,
    /// Stop after this many measured requests.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Leading part of the run whose requests are not recorded.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration_arg)]
    pub warmup: Duration,
    /// Per-request timeout; a timeout counts as an error.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration_arg)]
    pub timeout: Duration,
    /// How `{key}` is chosen: `fixed:KEY | uniform:MAX | range:LOW:HIGH | zipf:MAX[:EXP]`.
    #[arg(long, value_name = "SPEC", default_value = "fixed:1", value_parser = keys_arg)]
    pub keys: KeySpace,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Gate: fail when the error rate exceeds this (fraction or percentage).
    #[arg(long, value_name = "RATE", value_parser = rate_arg)]
    pub max_error_rate: Option<f64>,
    /// Gate: fail when the p99 latency exceeds this (e.g. 50ms).
    #[arg(long, value_name = "DURATION", value_parser = duration_arg)]
    pub max_p99: Option<Duration>,
    /// Open loop: send at this constant rate (`500/s`, `30000/m`) whatever
    /// the answers take, latency measured from each request's intended
    /// send time; `--connections` is then the most in use at once.
    #[arg(long, value_name = "N/s", value_parser = parse_arrival_rate)]
    pub rate: Option<f64>,
    /// Release gate as an objective, e.g. `p99<50ms,errors<0.1%`; a miss
    /// exits with status 3.
    #[arg(long, value_name = "TERMS", value_parser = slo_arg)]
    pub slo: Option<Slo>,
}

impl DrillArgs {
    /// The gate limits, if either `--max-error-rate` or `--max-p99` was given;
    /// the one not given does not constrain.
    pub fn gate(&self) -> Option<(f64, Duration)> {
        if self.max_error_rate.is_none() && self.max_p99.is_none() {
            return None;
        }
        Some((
            self.max_error_rate.unwrap_or(1.0),
            self.max_p99.unwrap_or(Duration::MAX),
        ))
    }

    /// Validates the flags into a [`DrillConfig`]; every message names its
    /// flag.
    pub fn into_config(self) -> Result<DrillConfig, DrillError> {
        if let Some(rate) = self.max_error_rate {
            if !(0.0..=1.0).contains(&rate) {
                return Err(DrillError::InvalidConfig(format!(
                    "--max-error-rate must be between 0 and 1 (got {rate})"
                )));
            }
        }
        if self.max_p99 == Some(Duration::ZERO) {
            return Err(DrillError::InvalidConfig(
                "--max-p99 must be > 0".to_owned(),
            ));
        }
        let config = DrillConfig {
            targets: self.targets,
            keys: self.keys,
            connections: self.connections,
            duration: self.duration,
            max_requests: self.requests,
            warmup: self.warmup,
            request_timeout: self.timeout,
            rate: self.rate,
            retry: ClientRetry::Never,
            seed: None,
            post: None,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Why a drill could not run.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("no target: give at least one --target URL")]
    NoTarget,
    #[error("bad target URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "refusing to send load to `{host}` (from `{url}`): drill only targets loopback \
         addresses (127.0.0.0/8, ::1, localhost)"
    )]
    NotLoopback { url: String, host: String },
    #[error("cannot connect to `{url}`: {source}")]
    Connect {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// A flag or config value out of range; the message names the flag.
    #[error("{0}")]
    InvalidConfig(String),
    #[error("drill internal error: {0}")]
    Internal(String),
}

impl DrillConfig {
    /// Checks every setting and every target (loopback included) without
    /// touching the network.
    pub fn validate(&self) -> Result<(), DrillError> {
        self.targets().map(|_| ())
    }

    pub(crate) fn targets(&self) -> Result<Vec<Arc<Target>>, DrillError> {
        let invalid = |m: String| Err(DrillError::InvalidConfig(m));
        if self.targets.is_empty() {
            return Err(DrillError::NoTarget);
        }
        if self.connections == 0 {
            return invalid("--connections must be >= 1 (got 0)".to_owned());
        }
        if self.connections > MAX_CONNECTIONS {
            return invalid(format!(
                "--connections must be <= {MAX_CONNECTIONS} (got {})",
                self.connections
            ));
        }
        if self.connections < self.targets.len() {
            return invalid(format!(
                "--connections ({}) must be at least the number of --target URLs ({})",
                self.connections,
                self.targets.len()
            ));
        }
        if self.post.is_some() && self.rate.is_none() {
            return invalid("a POST load needs the open loop (a --rate)".to_owned());
        }
        if self.duration.is_zero() {
            return invalid("--duration must be > 0".to_owned());
        }
        if self.duration > MAX_DURATION {
            return invalid(format!(
                "--duration must be <= {} (got {})",
                fmt_duration(MAX_DURATION),
                fmt_duration(self.duration)
            ));
        }
        if self.warmup >= self.duration {
            return invalid(format!(
                "--warmup ({}) must be shorter than --duration ({})",
                fmt_duration(self.warmup),
                fmt_duration(self.duration)
            ));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE) {
                return invalid(format!(
                    "--rate must be above 0 and at most {MAX_RATE} per second (got {rate})"
                ));
            }
        }
        if self.request_timeout.is_zero() {
            return invalid("--timeout must be > 0".to_owned());
        }
        if self.max_requests == Some(0) {
            return invalid("--requests must be >= 1 (got 0)".to_owned());
        }
        self.keys.validate().map_err(DrillError::InvalidConfig)?;
        let mut targets = Vec::with_capacity(self.targets.len());
        for url in &self.targets {
            let target = Target::parse(url)?;
            if let KeySpace::Fixed(key) = &self.keys {
                if Uri::try_from(target.path_for(key)).is_err() {
                    return invalid(format!(
                        "--keys fixed:{key}: the key does not make a valid URL with `{url}`"
                    ));
                }
            }
            targets.push(Arc::new(target));
        }
        Ok(targets)
    }
}
