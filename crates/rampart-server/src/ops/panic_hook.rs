//! rampart's panic hook, installed by `rampart serve`: a storm of panics
//! must not starve the process.
//!
//! The default hook, per panic, takes stderr's lock and prints; with
//! `RUST_BACKTRACE=1` it also captures and symbolizes a backtrace. One route
//! panicking ~600 times a second beside healthy traffic cut the healthy
//! throughput from ~58k to ~300 req/s that way; without backtraces, ~36k
//! panics a second wrote 81 MB of log in 8 s.
//!
//! This hook counts every panic (one atomic add), logs the first
//! [`Limits::lines_per_interval`] of each interval with a count of those not
//! logged since, and captures a backtrace for the first of each interval
//! only. Nothing takes a process-wide lock for a panic that is not logged.

use std::backtrace::Backtrace;
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How much the hook logs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The logging window.
    pub interval: Duration,
    /// Panics logged per window; the rest are only counted.
    pub lines_per_interval: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            interval: Duration::from_secs(10),
            lines_per_interval: 5,
        }
    }
}

/// Where log lines go: stderr for `rampart serve`, a buffer in tests.
pub type Sink = Box<dyn Fn(&str) + Send + Sync>;

/// The decision for one panic.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Counted, not logged.
    Suppressed,
    /// Log it; `backtrace` for the first of a window; `suppressed_before`
    /// panics were counted but not logged since the last report.
    Log {
        backtrace: bool,
        suppressed_before: u64,
    },
}

/// The counting and rate limiting, in atomics only.
pub struct PanicLog {
    limits: Limits,
    total: AtomicU64,
    /// The current window's number (elapsed time / interval).
    window: AtomicU64,
    /// Panics admitted in the current window (logged while < the limit).
    in_window: AtomicU64,
    /// Panics not logged since the last logged one said how many.
    suppressed: AtomicU64,
}

impl PanicLog {
    /// A log with no panic yet.
    pub fn new(limits: Limits) -> PanicLog {
        PanicLog {
            limits,
            total: AtomicU64::new(0),
            window: AtomicU64::new(0),
            in_window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Counts a panic at `elapsed` (since any fixed origin) and says whether
    /// to log it.
    pub fn admit(&self, elapsed: Duration) -> Admission {
        // Relaxed throughout: these are counters and a window number; a race
        // at a window's edge logs a line more or fewer, never unboundedly.
        self.total.fetch_add(1, Ordering::Relaxed);
        let interval = self.limits.interval.as_millis().max(1);
        let now = u64::try_from(elapsed.as_millis() / interval).unwrap_or(u64::MAX);
        let current = self.window.load(Ordering::Relaxed);
        if now > current
            && self
                .window
                .compare_exchange(current, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.in_window.store(0, Ordering::Relaxed);
        }
        let n = self.in_window.fetch_add(1, Ordering::Relaxed);
        if n < self.limits.lines_per_interval {
            Admission::Log {
                backtrace: n == 0,
                suppressed_before: self.suppressed.swap(0, Ordering::Relaxed),
            }
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            Admission::Suppressed
        }
    }

    /// Panics counted so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

struct Hook {
    log: PanicLog,
    origin: Instant,
    sink: Sink,
}

static HOOK: OnceLock<Hook> = OnceLock::new();

/// Installs the hook, logging to stderr with the default limits. Once per
/// process; later calls do nothing.
pub fn install() {
    install_with(
        Limits::default(),
        Box::new(|line| {
            // `eprint!` (not a held `stderr().lock()`): one short lock per
            // logged line, and it respects the test harness's capture.
            eprint!(
                "{}",
                crate::ops::logging::as_configured("rampart::panic", line)
            );
        }),
    );
}

/// Installs the hook with `limits`, logging to `sink`. Returns false (and
/// changes nothing) if it was installed already.
pub fn install_with(limits: Limits, sink: Sink) -> bool {
    let mut installed = false;
    HOOK.get_or_init(|| {
        installed = true;
        Hook {
            log: PanicLog::new(limits),
            origin: Instant::now(),
            sink,
        }
    });
    if installed {
        std::panic::set_hook(Box::new(|info| {
            if let Some(hook) = HOOK.get() {
                hook.on_panic(info);
            }
        }));
    }
    installed
}

/// Panics in this process since the hook was installed (0 without it).
pub fn total() -> u64 {
    HOOK.get().map_or(0, |hook| hook.log.total())
}

impl Hook {
    fn on_panic(&self, info: &PanicHookInfo<'_>) {
        let Admission::Log {
            backtrace,
            suppressed_before,
        } = self.log.admit(self.origin.elapsed())
        else {
            return;
        };
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("non-string panic payload");
        let location = info
            .location()
            .map_or_else(|| "unknown location".to_owned(), ToString::to_string);
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let mut line = format!(
            "rampart: panic in thread '{thread}' at {location}: {message} ({} panics so far",
            self.log.total()
        );
        if suppressed_before > 0 {
            line.push_str(&format!(
                "; {suppressed_before} not logged since the last line"
            ));
        }
        line.push_str(&format!(
            "; at most {} logged per {:?})\n",
            self.log.limits.lines_per_interval, self.log.limits.interval
        ));
        if backtrace {
            // The one capture of the window: forced, whatever RUST_BACKTRACE says.
            line.push_str(&format!(
                "backtrace (first panic of the window):\n{}\n",
                Backtrace::force_capture()
            ));
        }
        (self.sink)(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_few_per_window_and_counts_all() {
        let log = PanicLog::new(Limits {
            interval: Duration::from_secs(10),
            lines_per_interval: 3,
        });
        let at = |s| Duration::from_secs(s);
        let mut logged = Vec::new();
        for i in 0..100 {
            if let Admission::Log {
                backtrace,
                suppressed_before,
            } = log.admit(at(i / 10))
            {
                logged.push((i, backtrace, suppressed_before));
            }
        }
        assert_eq!(log.total(), 100);
        assert_eq!(logged, [(0, true, 0), (1, false, 0), (2, false, 0)]);
        // A new window: logging resumes, reporting the 97 not logged.
        assert_eq!(
            log.admit(at(10)),
            Admission::Log {
                backtrace: true,
                suppressed_before: 97
            }
        );
        assert_eq!(log.total(), 101);
    }
}
