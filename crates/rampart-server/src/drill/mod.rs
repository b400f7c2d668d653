//! # `rampart drill` — a closed-loop HTTP/1.1 load generator for loopback targets
//!
//! `drill` is used two ways:
//!
//! 1. **Benchmark.** Run it against rampart's cached `GET` route and against a
//!    bare axum handler with the same settings, and compare: both numbers then
//!    come from the same generator on the same machine.
//! 2. **Release gate** (the "forced load test" from the source incident): run
//!    it, then [`gate`] the [`DrillReport`] — the release fails when the error
//!    rate or the p99 latency exceed their limits.
//!
//! ## What it measures
//!
//! * `connections` keep-alive HTTP/1.1 connections, each driven by its own
//!   task in a **closed loop**: a connection sends its next `GET` only after
//!   the previous response (headers *and* whole body) has arrived.
//! * **Latency** of each request, from handing it to the connection to the
//!   last byte of the body, in microseconds, recorded in a log-bucketed
//!   (HDR-style) [`Histogram`]: exact below 256 µs, within 1/128 (< 0.8 %)
//!   above. Reported percentiles are the upper edge of their bucket, so they
//!   err on the pessimistic side (never above the observed maximum).
//!   Connection setup is *not* part of any request's latency.
//! * **Throughput**: measured requests divided by the measured window (the run
//!   minus its warmup, or up to the moment `max_requests` was reached).
//! * **Outcomes**: responses by status code, by the value of rampart's
//!   `x-cache` header, and failures without a response (`connect`, `io`,
//!   `timeout`) in `by_error`. Always
//!   `requests == sum(by_status) + sum(by_error)`.
//! * **Errors** are failures without a response, plus responses with status
//!   5xx or 429 (the server failing or refusing the load). Other 4xx (a 404
//!   for a key that is not in the table) are valid answers, not errors.
//!   Latency is recorded for every response, error status included, but not
//!   for failures without a response (a timeout has no latency; it is an
//!   error).
//!
//! ## What it does not measure
//!
//! * **Coordinated omission.** A closed loop slows down when the server slows
//!   down: while a request stalls, its connection sends nothing, so the stall
//!   is sampled once instead of once per request a real client population
//!   would have sent meanwhile. The percentiles here therefore *understate*
//!   the latency an open-loop (fixed arrival rate) workload would see at the
//!   same throughput. Read the numbers as "throughput at this concurrency, and
//!   the latency of the requests that were actually sent", not as latency
//!   under a given offered load.
//! * The generator runs on the same machine as the server (loopback only), so
//!   the two compete for CPU: numbers are for comparison within one run or
//!   one machine, not absolute capacity.
//! * No TLS, no HTTP/2, no request bodies, `GET` only, no DNS: hosts must be
//!   literal loopback addresses or `localhost` (which is taken to be
//!   `127.0.0.1`, never resolved).
//!
//! ## Safety
//!
//! Every target must be loopback (127.0.0.0/8, `::1`, `localhost`); anything
//! else is refused before a single packet is sent. Every run is bounded: a
//! duration (at most [`MAX_DURATION`]) and at most [`MAX_CONNECTIONS`]
//! connections. The run stops at its deadline: requests still in flight then
//! are abandoned (dropped, not counted) and their connections closed, so a run
//! returns within moments of its deadline even against a hung server.
//!
//! ## Implementation notes
//!
//! Each connection task owns its `hyper::client::conn::http1` connection over
//! a `TCP_NODELAY` [`TcpStream`], and its own statistics; they are merged only
//! after all tasks have finished (no shared lock on the hot path; the only
//! shared write is one atomic increment per request when `max_requests` is
//! set). A connection that fails is dropped and re-established; the failed
//! request is counted as an error. With several targets, connection `i` goes
//! to target `i % targets.len()`, and the report aggregates them all: to
//! compare two targets, drill each on its own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, timeout_at, Instant};

/// Most connections one run may open.
pub const MAX_CONNECTIONS: usize = 1024;
/// Longest run allowed.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// The header whose values are counted in [`DrillReport::by_header`].
pub const CACHE_HEADER: &str = "x-cache";
/// Zipf exponent used when `--keys zipf:MAX` gives none (YCSB's default).
pub const DEFAULT_ZIPF_EXPONENT: f64 = 0.99;

/// Pause after a failed connect, so a dead target is not hammered in a tight
/// loop.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);
const USER_AGENT_VALUE: &str = "rampart-drill";

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

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
        }
    }
}

/// How the `{key}` placeholder of a target is filled in.
#[derive(Clone, Debug, PartialEq)]
pub enum KeySpace {
    /// Always the same key.
    Fixed(String),
    /// Keys `1..=max`, uniformly.
    Uniform { max: u64 },
    /// Keys `low..=high`, uniformly: with a range past the last row, a
    /// storm of distinct missing keys (cache penetration).
    Range { low: u64, high: u64 },
    /// Keys `1..=max`, key `k` with probability proportional to
    /// `1 / k^exponent` (key 1 hottest).
    Zipf { max: u64, exponent: f64 },
}

impl KeySpace {
    /// Checks the parameters; the message names the `--keys` flag.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Fixed(key) if key.is_empty() => {
                Err("--keys fixed:KEY needs a non-empty KEY".to_owned())
            }
            Self::Fixed(key) if Uri::try_from(format!("/{key}")).is_err() => Err(format!(
                "--keys fixed:{key}: the key has characters not allowed in a URL path \
                 (percent-encode them)"
            )),
            Self::Fixed(_) => Ok(()),
            Self::Uniform { max: 0 } => Err("--keys uniform:MAX needs MAX >= 1".to_owned()),
            Self::Uniform { .. } => Ok(()),
            Self::Range { low, high } if low > high => Err(format!(
                "--keys range:LOW:HIGH needs LOW <= HIGH (got {low} > {high})"
            )),
            Self::Range { .. } => Ok(()),
            Self::Zipf { max: 0, .. } => Err("--keys zipf:MAX needs MAX >= 1".to_owned()),
            Self::Zipf { exponent, .. } if !(exponent.is_finite() && *exponent > 0.0) => Err(
                format!("--keys zipf:MAX:EXP needs a finite EXP > 0 (got {exponent})"),
            ),
            Self::Zipf { .. } => Ok(()),
        }
    }
}

impl std::fmt::Display for KeySpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(key) => write!(f, "fixed:{key}"),
            Self::Uniform { max } => write!(f, "uniform:{max}"),
            Self::Range { low, high } => write!(f, "range:{low}:{high}"),
            Self::Zipf { max, exponent } => write!(f, "zipf:{max}:{exponent}"),
        }
    }
}

/// Parses `fixed:KEY`, `uniform:MAX`, `range:LOW:HIGH` or `zipf:MAX[:EXP]` (EXP defaults to
/// [`DEFAULT_ZIPF_EXPONENT`]).
pub fn parse_keys(spec: &str) -> Result<KeySpace, String> {
    let (kind, rest) = spec.split_once(':').ok_or_else(|| {
        format!("`{spec}`: expected fixed:KEY, uniform:MAX, range:LOW:HIGH or zipf:MAX[:EXP]")
    })?;
    let parse_max = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("`{spec}`: MAX must be a whole number >= 1, got `{s}`"))
    };
    let space = match kind {
        "fixed" => KeySpace::Fixed(rest.to_owned()),
        "uniform" => KeySpace::Uniform {
            max: parse_max(rest)?,
        },
        "range" => {
            let (low, high) = rest
                .split_once(':')
                .ok_or_else(|| format!("`{spec}`: expected range:LOW:HIGH"))?;
            let bound = |s: &str| {
                s.parse::<u64>()
                    .map_err(|_| format!("`{spec}`: LOW and HIGH must be whole numbers, got `{s}`"))
            };
            KeySpace::Range {
                low: bound(low)?,
                high: bound(high)?,
            }
        }
        "zipf" => {
            let (max, exponent) = match rest.split_once(':') {
                Some((max, exp)) => (
                    parse_max(max)?,
                    exp.parse::<f64>()
                        .map_err(|_| format!("`{spec}`: EXP must be a number, got `{exp}`"))?,
                ),
                None => (parse_max(rest)?, DEFAULT_ZIPF_EXPONENT),
            };
            KeySpace::Zipf { max, exponent }
        }
        other => {
            return Err(format!(
                "`{spec}`: unknown key space `{other}` (expected fixed, uniform, range or zipf)"
            ))
        }
    };
    space.validate()?;
    Ok(space)
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

    fn targets(&self) -> Result<Vec<Arc<Target>>, DrillError> {
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

// ---------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------

/// One parsed, loopback-checked target.
#[derive(Debug)]
struct Target {
    url: String,
    addr: SocketAddr,
    host: HeaderValue,
    /// The path-and-query, split at each `{key}`.
    segments: Vec<String>,
}

impl Target {
    fn parse(url: &str) -> Result<Self, DrillError> {
        let bad = |reason: &str| DrillError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let scheme_end = url
            .find("://")
            .ok_or_else(|| bad("expected http://HOST:PORT/PATH"))?;
        let scheme = &url[..scheme_end];
        if scheme.eq_ignore_ascii_case("https") {
            return Err(bad("https is not supported (drill speaks plain HTTP/1.1)"));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("only http:// URLs are supported"));
        }
        let rest = &url[scheme_end + 3..];
        if rest.contains('#') {
            return Err(bad("fragments (#...) are never sent; remove it"));
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        if authority.contains('@') {
            return Err(bad("user info (user@host) is not supported"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("unclosed `[` in the host"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected `:PORT` after `]`"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => {
                    return Err(bad("IPv6 addresses must be in brackets, e.g. [::1]"))
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        let refused = || DrillError::NotLoopback {
            url: url.to_owned(),
            host: host.to_owned(),
        };
        let ip = if authority.starts_with('[') {
            let v6: Ipv6Addr = host
                .parse()
                .map_err(|_| bad("invalid IPv6 address in brackets"))?;
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        } else if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            // Anything that is not a literal address (a host name, `127.1`,
            // ...) would need a resolver we do not trust to stay local.
            IpAddr::V4(host.parse::<Ipv4Addr>().map_err(|_| refused())?)
        };
        if !ip.is_loopback() {
            return Err(refused());
        }
        let host_header = HeaderValue::from_str(authority).map_err(|_| bad("invalid host"))?;
        let target = Self {
            url: url.to_owned(),
            addr: SocketAddr::new(ip, port),
            host: host_header,
            segments: path.split("{key}").map(str::to_owned).collect(),
        };
        Uri::try_from(target.path_for("1"))
            .map_err(|e| bad(&format!("invalid path `{path}`: {e}")))?;
        Ok(target)
    }

    fn path_for(&self, key: &str) -> String {
        let mut path = String::with_capacity(
            self.segments.iter().map(String::len).sum::<usize>()
                + key.len() * (self.segments.len() - 1),
        );
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                path.push_str(key);
            }
            path.push_str(segment);
        }
        path
    }
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// SplitMix64: small, fast, good enough for picking keys.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (Lemire's multiply-shift; bias below 2^-64 * n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Zipf sampler over `1..=n` by rejection-inversion (Hörmann & Derflinger,
/// "Rejection-inversion to generate variates from monotone discrete
/// distributions", 1996), in the form that works for every exponent > 0:
/// O(1) memory and expected O(1) time, whatever `n`.
#[derive(Clone, Debug)]
struct Zipf {
    n: u64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
}

impl Zipf {
    fn new(n: u64, exponent: f64) -> Self {
        let mut z = Self {
            n,
            exponent,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(n as f64 + 0.5);
        z.s = 2.0 - z.h_integral_inv(z.h_integral(2.5) - z.h(2.0));
        z
    }

    fn sample(&self, rng: &mut SplitMix64) -> u64 {
        loop {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inv(u);
            // `as` saturates; clamp into range against rounding.
            let k = ((x + 0.5) as u64).clamp(1, self.n);
            let kf = k as f64;
            if kf - x <= self.s || u >= self.h_integral(kf + 0.5) - self.h(kf) {
                return k;
            }
        }
    }

    /// `h(x) = x^-exponent`, the (unnormalised) mass function.
    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    /// `H(x) = (x^(1-e) - 1) / (1-e)`, with its limit `ln x` at `e = 1`.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.exponent) * log_x) * log_x
    }

    fn h_integral_inv(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.exponent)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[derive(Clone, Debug)]
enum KeyKind {
    Fixed(String),
    Uniform(u64),
    Range(u64, u64),
    Zipf(Zipf),
}

/// Draws keys from a [`KeySpace`]; one per connection, so no sharing.
#[derive(Clone, Debug)]
pub struct KeySampler {
    rng: SplitMix64,
    kind: KeyKind,
}

impl KeySampler {
    /// A sampler seeded with `seed` (same seed, same keys).
    pub fn new(space: &KeySpace, seed: u64) -> Result<Self, DrillError> {
        space.validate().map_err(DrillError::InvalidConfig)?;
        let kind = match space {
            KeySpace::Fixed(key) => KeyKind::Fixed(key.clone()),
            KeySpace::Uniform { max } => KeyKind::Uniform(*max),
            KeySpace::Range { low, high } => KeyKind::Range(*low, *high),
            KeySpace::Zipf { max, exponent } => KeyKind::Zipf(Zipf::new(*max, *exponent)),
        };
        Ok(Self {
            rng: SplitMix64(seed),
            kind,
        })
    }

    /// The next key, as it goes into the URL.
    pub fn next_key(&mut self) -> String {
        match &self.kind {
            KeyKind::Fixed(key) => key.clone(),
            KeyKind::Uniform(max) => (1 + self.rng.below(*max)).to_string(),
            KeyKind::Range(low, high) => {
                let span = high - low;
                let offset = match span.checked_add(1) {
                    Some(n) => self.rng.below(n),
                    None => self.rng.next_u64(),
                };
                (low + offset).to_string()
            }
            KeyKind::Zipf(zipf) => zipf.sample(&mut self.rng).to_string(),
        }
    }
}

// ---------------------------------------------------------------------------
// Histogram
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

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
    pub connections: usize,
    /// Measured attempts: responses plus failures without a response.
    pub requests: u64,
    /// Failures without a response, plus 5xx and 429 responses.
    pub errors: u64,
    /// Length of the measured window.
    pub elapsed_secs: f64,
    pub throughput_rps: f64,
    /// Latency of responses (any status), from a merged [`Histogram`].
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
        let _ = writeln!(out, "{:<13}{}", "connections", self.connections);
        let _ = writeln!(out, "{:<13}{:.2} s measured", "elapsed", self.elapsed_secs);
        let _ = writeln!(
            out,
            "{:<13}{}  ({:.1} req/s)",
            "requests", self.requests, self.throughput_rps
        );
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

fn fmt_micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

fn fmt_duration(d: Duration) -> String {
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

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// Per-connection tallies; merged once, at the end.
#[derive(Default)]
struct ConnStats {
    latency: Histogram,
    requests: u64,
    errors: u64,
    by_status: BTreeMap<u16, u64>,
    by_header: BTreeMap<String, u64>,
    by_error: BTreeMap<&'static str, u64>,
}

impl ConnStats {
    fn failure(&mut self, kind: &'static str) {
        self.requests += 1;
        self.errors += 1;
        *self.by_error.entry(kind).or_insert(0) += 1;
    }

    fn response(&mut self, status: u16, cache: Option<&HeaderValue>, latency: Duration) {
        self.requests += 1;
        if status >= 500 || status == 429 {
            self.errors += 1;
        }
        *self.by_status.entry(status).or_insert(0) += 1;
        if let Some(value) = cache {
            let value = value.to_str().unwrap_or("<non-utf8>");
            match self.by_header.get_mut(value) {
                Some(n) => *n += 1,
                None => {
                    self.by_header.insert(value.to_owned(), 1);
                }
            }
        }
        self.latency
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    fn merge(&mut self, other: ConnStats) {
        self.latency.merge(&other.latency);
        self.requests += other.requests;
        self.errors += other.errors;
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.by_header {
            *self.by_header.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.by_error {
            *self.by_error.entry(k).or_insert(0) += v;
        }
    }
}

/// What every connection task reads; written only through `claimed`.
struct Shared {
    deadline: Instant,
    record_from: Instant,
    request_timeout: Duration,
    max_requests: Option<u64>,
    claimed: AtomicU64,
}

impl Shared {
    /// Claims one measured request from the `max_requests` budget.
    fn claim(&self) -> bool {
        match self.max_requests {
            None => true,
            Some(max) => self.claimed.fetch_add(1, Ordering::Relaxed) < max,
        }
    }
}

/// One client connection; its driver task dies with it.
struct Conn {
    sender: http1::SendRequest<Empty<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn connect(addr: SocketAddr) -> Result<Conn, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        // Errors surface to the sender; nothing to do with them here.
        let _ = connection.await;
    });
    Ok(Conn { sender, driver })
}

/// Sends one request and reads the whole response body.
async fn exchange(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> Result<(u16, Option<HeaderValue>), hyper::Error> {
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let cache = response.headers().get(CACHE_HEADER).cloned();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok((status, cache))
}

/// One connection's closed loop, until the deadline or the request budget.
async fn connection_loop(
    target: Arc<Target>,
    mut keys: KeySampler,
    shared: Arc<Shared>,
) -> ConnStats {
    let mut stats = ConnStats::default();
    let mut conn: Option<Conn> = None;
    // A budget ticket is held from its claim until a request is recorded, so
    // attempts that record nothing (an idle connection found closed) do not
    // use up `max_requests`.
    let mut holding_ticket = false;
    loop {
        let now = Instant::now();
        if now >= shared.deadline {
            break;
        }
        let measured = now >= shared.record_from;
        if measured && !holding_ticket {
            if !shared.claim() {
                break;
            }
            holding_ticket = true;
        }

        let fresh = conn.as_ref().is_none_or(|c| c.sender.is_closed());
        if fresh {
            conn = None;
            let request_deadline = now + shared.request_timeout;
            match timeout_at(request_deadline.min(shared.deadline), connect(target.addr)).await {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(_)) => {
                    if measured {
                        stats.failure("connect");
                        holding_ticket = false;
                    }
                    sleep_until((Instant::now() + CONNECT_BACKOFF).min(shared.deadline)).await;
                    continue;
                }
                Err(_) if request_deadline <= shared.deadline => {
                    if measured {
                        stats.failure("timeout");
                        holding_ticket = false;
                    }
                    continue;
                }
                Err(_) => break,
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match timeout_at(shared.deadline, c.sender.ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                // Closed while idle (e.g. the server's keep-alive timeout):
                // reconnect. A brand-new connection failing is an error.
                conn = None;
                if fresh {
                    if measured {
                        stats.failure("io");
                        holding_ticket = false;
                    }
                    sleep_until((Instant::now() + CONNECT_BACKOFF).min(shared.deadline)).await;
                }
                continue;
            }
            Err(_) => break,
        }

        let key = keys.next_key();
        let request = Uri::try_from(target.path_for(&key))
            .map_err(hyper::http::Error::from)
            .and_then(|uri| {
                Request::get(uri)
                    .header(HOST, target.host.clone())
                    .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
                    .body(Empty::new())
            });
        let Ok(request) = request else {
            // Cannot happen for validated targets and keys; stop rather
            // than spin.
            stats.failure("request");
            break;
        };

        let start = Instant::now();
        let request_deadline = start + shared.request_timeout;
        match timeout_at(
            request_deadline.min(shared.deadline),
            exchange(&mut c.sender, request),
        )
        .await
        {
            Ok(Ok((status, cache))) => {
                let latency = start.elapsed();
                if measured {
                    stats.response(status, cache.as_ref(), latency);
                    holding_ticket = false;
                }
            }
            Ok(Err(_)) => {
                conn = None;
                if measured {
                    stats.failure("io");
                    holding_ticket = false;
                }
            }
            Err(_) if request_deadline <= shared.deadline => {
                // The connection still owes us that response: discard it.
                conn = None;
                if measured {
                    stats.failure("timeout");
                    holding_ticket = false;
                }
            }
            // The run ended mid-request: abandoned, not counted.
            Err(_) => break,
        }
    }
    stats
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// Runs the load described by `config` and reports on it.
///
/// Validates everything first (nothing is sent if any target is not
/// loopback), checks each target accepts a TCP connection, then drives
/// `connections` closed loops until `duration` has passed or `max_requests`
/// have been measured.
pub async fn run(config: &DrillConfig) -> Result<DrillReport, DrillError> {
    let targets = config.targets()?;
    for target in &targets {
        match tokio::time::timeout(config.request_timeout, TcpStream::connect(target.addr)).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(DrillError::Connect {
                    url: target.url.clone(),
                    source,
                })
            }
            Err(_) => {
                return Err(DrillError::Connect {
                    url: target.url.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                })
            }
        }
    }

    let start = Instant::now();
    let shared = Arc::new(Shared {
        deadline: start + config.duration,
        record_from: start + config.warmup,
        request_timeout: config.request_timeout,
        max_requests: config.max_requests,
        claimed: AtomicU64::new(0),
    });
    let seed = seed();
    let mut tasks = JoinSet::new();
    for i in 0..config.connections {
        let target = Arc::clone(&targets[i % targets.len()]);
        let keys = KeySampler::new(
            &config.keys,
            seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
        )?;
        tasks.spawn(connection_loop(target, keys, Arc::clone(&shared)));
    }
    let mut total = ConnStats::default();
    while let Some(joined) = tasks.join_next().await {
        // Dropping `tasks` on error aborts the other connections.
        let stats = joined.map_err(|e| DrillError::Internal(format!("connection task: {e}")))?;
        total.merge(stats);
    }
    let end = Instant::now().min(shared.deadline);
    let elapsed = end
        .saturating_duration_since(shared.record_from)
        .as_secs_f64();

    Ok(DrillReport {
        targets: config.targets.clone(),
        connections: config.connections,
        requests: total.requests,
        errors: total.errors,
        elapsed_secs: elapsed,
        throughput_rps: if elapsed > 0.0 {
            total.requests as f64 / elapsed
        } else {
            0.0
        },
        latency_us: total.latency.percentiles(),
        by_status: total.by_status,
        by_header: total.by_header,
        by_error: total
            .by_error
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    })
}
