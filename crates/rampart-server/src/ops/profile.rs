//! CPU profiles of the running process, on demand: `GET
//! /debug/pprof/profile?seconds=N` (pprof protobuf, for `pprof` / `go tool
//! pprof`) and `GET /debug/pprof/flamegraph?seconds=N` (an SVG flame
//! graph). Admin token required (like invalidate): a profile shows the
//! code's hot paths and costs CPU while it runs.
//!
//! Sampling is the `pprof` crate's: `SIGPROF` at [`FREQUENCY_HZ`] over every
//! thread, stacks symbolised when the profile is built. One profile at a
//! time in the process (the signal timer is process-wide): a second request
//! meanwhile is 409 `profile_in_progress`. These routes have their own
//! request timeout ([`route_timeout`]: as long as the connection watchdog
//! lets a request be busy), and the duration is bounded to leave time to
//! symbolise the stacks within it ([`max_seconds`]: 9 s with the default
//! 5 s `server.request_timeout`, never over [`MAX_SECONDS`]). The sampling
//! runs on a blocking thread, which keeps the slot until it is done even if
//! the client went away.
//!
//! Heap profiles are not offered: the system allocator keeps no
//! allocation profile to read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::Error;
use crate::http::extract::Query;
use crate::state::AppState;

/// Samples per second: not a multiple of common timer periods, so the
/// samples do not fall in step with periodic work.
pub const FREQUENCY_HZ: i32 = 99;

/// The longest profile whatever the timeouts.
pub const MAX_SECONDS: u64 = 30;

/// A profile's duration when the request names none (or less, see
/// [`max_seconds`]).
pub const DEFAULT_SECONDS: u64 = 5;

/// The profiling routes' path prefix (`layers.rs` gives them
/// [`route_timeout`]).
pub const ROUTE_PREFIX: &str = "/debug/pprof/";

/// Time kept for symbolising the stacks after sampling (seconds in a debug
/// build under load, well under one in release).
const SYMBOLISE: Duration = Duration::from_secs(5);

/// The profiling routes' request timeout for a `request_timeout`: a second
/// under the connection watchdog's bound on a busy request, so the answer
/// (a 503 `timeout` at worst) is written before the watchdog would close
/// the connection.
pub fn route_timeout(request_timeout: Duration) -> Duration {
    (request_timeout + crate::server::WRITE_SLACK).saturating_sub(Duration::from_secs(1))
}

/// The longest profile for a `request_timeout`: [`route_timeout`] less time
/// to symbolise, at least 1 s, at most [`MAX_SECONDS`].
pub fn max_seconds(request_timeout: Duration) -> u64 {
    route_timeout(request_timeout)
        .saturating_sub(SYMBOLISE)
        .as_secs()
        .clamp(1, MAX_SECONDS)
}

#[derive(Deserialize)]
pub struct ProfileQuery {
    /// How long to sample, in whole seconds.
    pub seconds: Option<u64>,
}

/// What a profile is rendered as.
#[derive(Clone, Copy)]
enum Format {
    Pprof,
    FlameGraph,
}

/// `GET /debug/pprof/profile`: a CPU profile in pprof's protobuf format.
pub async fn cpu_pprof(
    State(state): State<AppState>,
    Query(query): Query<ProfileQuery>,
) -> Result<Response, Error> {
    let bytes = profile(&state, query, Format::Pprof).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"rampart.pb\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /debug/pprof/flamegraph`: a CPU profile as an SVG flame graph.
pub async fn cpu_flamegraph(
    State(state): State<AppState>,
    Query(query): Query<ProfileQuery>,
) -> Result<Response, Error> {
    let bytes = profile(&state, query, Format::FlameGraph).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("image/svg+xml"),
        )],
        bytes,
    )
        .into_response())
}

/// Whether a profile is being taken in this process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The process's one profiling slot, given back on drop.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        // Acquire/Release: the profiler's global state set up by one holder
        // is complete before the next holder starts.
        RUNNING
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

async fn profile(state: &AppState, query: ProfileQuery, format: Format) -> Result<Vec<u8>, Error> {
    let max = max_seconds(state.config.server.request_timeout);
    let seconds = query.seconds.unwrap_or(DEFAULT_SECONDS.min(max));
    if !(1..=max).contains(&seconds) {
        return Err(Error::BadRequest(format!(
            "seconds must be between 1 and {max} (server.request_timeout + 4 s, at most {MAX_SECONDS}); got {seconds}"
        )));
    }
    let slot = Slot::take().ok_or(Error::ProfileInProgress)?;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        sample(Duration::from_secs(seconds), format)
    })
    .await
    // The closure does not panic on any input; a JoinError would be a bug.
    .map_err(|_| Error::Panic)?
}

/// Samples every thread for `duration`, then renders the report.
fn sample(duration: Duration, format: Format) -> Result<Vec<u8>, Error> {
    let failed =
        |what: &str, err: &dyn std::fmt::Display| Error::Profiler(format!("{what}: {err}"));
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY_HZ)
        // Unwinding through these from a signal handler can deadlock or
        // crash (their code has no unwind tables).
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| failed("starting the profiler", &e))?;
    std::thread::sleep(duration);
    let report = guard
        .report()
        .build()
        .map_err(|e| failed("building the report", &e))?;
    drop(guard);
    match format {
        Format::Pprof => {
            use pprof::protos::Message;
            let profile = report
                .pprof()
                .map_err(|e| failed("encoding the profile", &e))?;
            Ok(profile.encode_to_vec())
        }
        // An idle process takes no samples (the timer counts CPU time),
        // and a flame graph of nothing is an error to the renderer.
        Format::FlameGraph if report.data.is_empty() => Ok(IDLE_SVG.as_bytes().to_vec()),
        Format::FlameGraph => {
            let mut svg = Vec::new();
            report
                .flamegraph(&mut svg)
                .map_err(|e| failed("drawing the flame graph", &e))?;
            Ok(svg)
        }
    }
}

/// The flame graph of a profile without samples.
const IDLE_SVG: &str = concat!(
    r#"<?xml version="1.0" standalone="no"?>"#,
    r#"<svg version="1.1" width="600" height="60" xmlns="http://www.w3.org/2000/svg">"#,
    r#"<text x="10" y="35" font-family="monospace" font-size="14">"#,
    "no samples: the process used no CPU while it was profiled",
    "</text></svg>\n"
);
