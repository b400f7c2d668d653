//! The process's log output: human text (colour only on a terminal) or
//! JSON lines (`--log-format json`), filtered by `RAMPART_LOG`.
//!
//! The access log — one line per request, target [`ACCESS_TARGET`] at
//! `info` — is off in the default filter: the hot GET path is measured in
//! tens of microseconds, and a formatted line per request would be a large
//! share of it. Turn it on with `RAMPART_LOG=info,rampart::access=info`.
//! Off, its call site is a cached "never" and the request pays one branch
//! (see `http/layers.rs`).

use std::borrow::Cow;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

/// The `tracing` target of the access log's lines.
pub const ACCESS_TARGET: &str = "rampart::access";

/// The filter when `RAMPART_LOG` is unset: `info`; sqlx reports the
/// warm-up's long key stream as a "slow statement" at warn, which is
/// expected, so only its errors show; the access log is off (see the
/// module doc).
pub const DEFAULT_FILTER: &str = "info,sqlx::query=error,rampart::access=off";

/// How log lines are written to stderr.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colour only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`,
    /// `fields`, and the enclosing spans), for log shippers.
    Json,
}

/// Installs the process-wide subscriber. Call once, first thing in `main`.
/// A bad `RAMPART_LOG` is reported and the default filter used: logging
/// must not be the reason the service does not start.
pub fn init(format: LogFormat) {
    let (filter, bad_filter) = match std::env::var("RAMPART_LOG") {
        Ok(spec) => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(err) => (EnvFilter::new(DEFAULT_FILTER), Some((spec, err))),
        },
        Err(_) => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(false)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    if let Some((spec, err)) = bad_filter {
        tracing::warn!(
            "RAMPART_LOG={spec:?} is not a valid filter ({err}); using {DEFAULT_FILTER:?}"
        );
    }
}

/// Whether [`init`] chose JSON lines.
static JSON: AtomicBool = AtomicBool::new(false);

/// `line` as the configured format writes an `error` from `target`: as
/// is in text, a JSON object shaped like the subscriber's own in JSON. For
/// the panic hook, which writes to stderr itself rather than through
/// `tracing` (a panic inside the subscriber must not re-enter it).
pub fn as_configured<'a>(target: &str, line: &'a str) -> Cow<'a, str> {
    if !JSON.load(Ordering::Relaxed) {
        return Cow::Borrowed(line);
    }
    let mut timestamp = String::new();
    let mut writer = tracing_subscriber::fmt::format::Writer::new(&mut timestamp);
    let _ = tracing_subscriber::fmt::time::FormatTime::format_time(
        &tracing_subscriber::fmt::time::SystemTime,
        &mut writer,
    );
    let object = serde_json::json!({
        "timestamp": timestamp,
        "level": "ERROR",
        "fields": { "message": line.trim_end() },
        "target": target,
    });
    Cow::Owned(format!("{object}\n"))
}
