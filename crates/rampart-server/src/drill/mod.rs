//! # `rampart drill` — HTTP/1.1 load for loopback targets, fault injection, and incident replays
//!
//! `drill` is used three ways:
//!
//! 1. **Benchmark.** Run it against rampart's cached `GET` route and against a
//!    bare axum handler with the same settings, and compare: both numbers then
//!    come from the same generator on the same machine.
//! 2. **Release gate** (the "forced load test" from the source incident): run
//!    it with `--slo 'p99<50ms,errors<0.1%'` (or [`gate`] a [`DrillReport`]):
//!    a miss exits with [`SLO_EXIT_CODE`].
//! 3. **Incident replay**: `rampart drill scenario NAME` ([`scenario`]) runs
//!    rampart naive then guarded under the same load and faults (a
//!    [`FaultProxy`] in front of PostgreSQL) and compares them.
//!
//! Two load shapes: the **closed loop** (below; `--connections` loops, each
//! sending when its last answer is in) and the **open loop** (`--rate N/s`,
//! [`open_loop`](self#layout): a constant arrival rate, latency from each
//! request's intended send time, HDR histograms, a per-second series),
//! which is the one that tells the truth about latency under a given load.
//!
//! ## What the closed loop measures
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
//! ## What the closed loop does not measure
//!
//! * **Coordinated omission** (use `--rate` for that). A closed loop slows down when the server slows
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
//! * No TLS, no HTTP/2, no request bodies, `GET` only (the open loop can
//!   `POST` one body for scenarios, [`Post`]), no DNS: hosts must be
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
//! a `TCP_NODELAY` [`TcpStream`](tokio::net::TcpStream), and its own statistics; they are merged only
//! after all tasks have finished (no shared lock on the hot path; the only
//! shared write is one atomic increment per request when `max_requests` is
//! set). A connection that fails is dropped and re-established; the failed
//! request is counted as an error. With several targets, connection `i` goes
//! to target `i % targets.len()`, and the report aggregates them all: to
//! compare two targets, drill each on its own.
//!
//! ## Layout
//!
//! | file | what |
//! |---|---|
//! | `config.rs` | [`DrillConfig`], the flags ([`DrillArgs`]), [`DrillError`] |
//! | `targets.rs` | a `--target` URL, loopback-checked |
//! | `keys.rs` | [`KeySpace`], [`KeySampler`] (uniform, range, Zipf) |
//! | `histogram.rs` | the closed loop's [`Histogram`] |
//! | `report.rs` | [`DrillReport`], its table, [`gate`] |
//! | `run.rs` | the closed loop |
//! | `open_loop.rs` | the open loop (`--rate`), client retries ([`ClientRetry`]) |
//! | `series.rs` | the open loop's HDR histograms and per-second [`Second`]s |
//! | `slo.rs` | `--slo 'p99<50ms,errors<0.1%'`, [`SLO_EXIT_CODE`] |
//! | `fault_proxy.rs` | [`FaultProxy`]: latency, stall, refuse, reset, bandwidth in front of a TCP service |
//! | `private_redis.rs` | [`PrivateRedis`]: a child `redis-server` on a free port, SIGKILLed and restarted on demand |
//! | `command.rs` | `rampart drill …` as the command line runs it |
//! | `scenario/` | [`scenario`]: `rampart drill scenario NAME`, naive vs guarded, table and HTML report |

mod command;
mod config;
pub mod fault_proxy;
mod histogram;
mod keys;
mod open_loop;
pub mod private_redis;
mod report;
mod run;
pub mod scenario;
mod series;
mod slo;
mod targets;

pub use command::{command, DrillCli};
pub use fault_proxy::{Fault, FaultProxy, ProxyStats};
pub use open_loop::{ClientRetry, MAX_RATE};
pub use private_redis::PrivateRedis;
pub use series::Second;
pub use slo::{parse_slo, Slo, SLO_EXIT_CODE};

pub use config::{
    parse_arrival_rate, parse_duration, parse_rate, DrillArgs, DrillConfig, DrillError, Post,
    MAX_CONNECTIONS, MAX_DURATION,
};
pub use histogram::Histogram;
pub use keys::{parse_keys, KeySampler, KeySpace, DEFAULT_ZIPF_EXPONENT};
pub use report::{gate, DrillReport, Percentiles, CACHE_HEADER};

/// Runs the load described by `config` and reports on it: the open loop
/// when `config.rate` is set, else the closed loop.
///
/// Validates everything first (nothing is sent if any target is not
/// loopback) and checks each target accepts a TCP connection.
pub async fn run(config: &DrillConfig) -> Result<DrillReport, DrillError> {
    if config.rate.is_some() {
        open_loop::run(config).await
    } else {
        run::closed(config).await
    }
}
