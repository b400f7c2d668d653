//! A circuit breaker: stop calling a dependency that is failing, give it time
//! to recover, then let a few trial calls decide whether it has.
//!
//! ```
//! use rampart::breaker::{BreakerConfig, CircuitBreaker, State};
//!
//! let breaker = CircuitBreaker::new(
//!     "payments-api",
//!     BreakerConfig { consecutive_failures: 3, ..BreakerConfig::default() },
//! );
//! for _ in 0..3 {
//!     let permit = breaker.try_acquire().expect("closed: the call may be made");
//!     // ... make the call; say it failed:
//!     permit.failure();
//! }
//! assert_eq!(breaker.state(), State::Open);
//! // Now calls are refused at once, with a hint of when to come back.
//! let refused = breaker.try_acquire().unwrap_err();
//! assert!(refused.is_rejection());
//! assert!(refused.retry_after().is_some());
//! ```
//!
//! Around a future, [`CircuitBreaker::call`] does the permit for you; around
//! a tower service, `rampart::layer::CircuitBreakerLayer` (feature `tower`).
//!
//! # States
//!
//! ```text
//!            failure or slow rate >= threshold
//!            (after minimum_calls in the window),
//!            or consecutive_failures in a row
//!   Closed ───────────────────────────────────────▶ Open
//!     ▲                                              │ open_wait elapsed
//!     │ probes' rates < thresholds                   │ (checked lazily by the
//!     │                                              ▼  next try_acquire)
//!     └─────────────────────────────────────────── HalfOpen
//!                   probes' rates >= a threshold ──▶ Open
//! ```
//!
//! plus two operator states: [`State::ForcedOpen`] rejects everything until
//! [`CircuitBreaker::reset`], and [`State::Disabled`] allows everything and
//! records nothing. [`CircuitBreaker::reset`] goes back to `Closed` with an
//! empty window from any state.
//!
//! * **Closed**: every call is allowed. Outcomes go into a sliding window
//!   ([`SlidingWindow`]): either the last N calls, or a ring of 1-second
//!   buckets that keeps running totals and subtracts each bucket as it falls
//!   out (resilience4j's partial aggregation, Hystrix's rolling buckets).
//!   Once the window holds `minimum_calls` outcomes, the breaker opens as
//!   soon as the failure rate or the slow-call rate reaches its threshold.
//!   Rates are judged when an outcome is recorded, not when time passes.
//! * **Open**: every call is rejected with [`ErrorKind::BreakerOpen`], whose
//!   `retry_after` is the time left until `open_wait` has elapsed, rounded
//!   up to the millisecond.
//! * **HalfOpen**: at most `half_open_probes` trial calls are in flight at
//!   once, and at most that many are judged: once `half_open_probes` probes
//!   have *finished* (success or failure), the breaker closes if their rates
//!   are below both thresholds and reopens otherwise. A probe that is
//!   dropped unrecorded (the caller was cancelled) or [`Permit::ignore`]d
//!   frees its slot for another probe, so a cancelled probe can never wedge
//!   the breaker half-open.
//!
//! Open → HalfOpen is lazy: no timer task, the first
//! [`try_acquire`](CircuitBreaker::try_acquire) after `open_wait` performs
//! it. So [`state`](CircuitBreaker::state) may still say `Open` after
//! `open_wait` until someone asks to call.
//!
//! # Stale outcomes
//!
//! Every transition bumps a *generation*, and every [`Permit`] carries the
//! generation it was issued in. An outcome from an earlier generation — a
//! slow call that started while `Closed` and finishes after the breaker
//! opened, or a probe that outlived an operator's `reset` — is dropped on
//! the floor: it says nothing about the current state and must not, say,
//! count as a half-open probe that was never issued.
//!
//! # Cost
//!
//! The state and generation live in one atomic word, the open deadline in
//! another. So:
//!
//! * rejecting while `Open`/`ForcedOpen` is an atomic load, a clock read
//!   (`Open` only), a relaxed counter increment and the `Arc<str>` clone of
//!   the name that [`ErrorKind::BreakerOpen`] carries — no lock;
//! * acquiring while `Closed` or `Disabled` is an atomic load, a clock read
//!   and an `Arc` clone for the permit — no lock;
//! * recording a `Closed` outcome takes a short mutex around the window
//!   (O(1) amortised);
//! * only `HalfOpen`, which admits a handful of calls, takes the mutex to
//!   acquire.
//!
//! Every time the breaker reads — call start and end, the open deadline,
//! the window's current second — comes from its [`Clock`]'s `now()`.
//! [`CircuitBreaker::new`] uses [`Clock::coarse`]: one atomic load of a time
//! an upkeep thread refreshes every millisecond. So call durations and
//! `retry_after` are accurate to about a millisecond, far below any sensible
//! `slow_call_duration` or `open_wait`. Pass [`Clock::new`] to
//! [`with_clock`](CircuitBreaker::with_clock) for precise reads; a
//! mock clock is read exactly.
//!
//! Each permit holds an `Arc` to the breaker, so it can be moved into a
//! spawned task.
//!
//! # Defaults, and where they differ from resilience4j / Hystrix
//!
//! | field | default | resilience4j | Hystrix |
//! |---|---|---|---|
//! | `window` | `Time { seconds: 10 }` | count, 100 calls | time, 10 s (10 buckets) |
//! | `minimum_calls` | 20 | 100 | 20 (`requestVolumeThreshold`) |
//! | `failure_rate_threshold` | 0.5 | 50 % | 50 % |
//! | `slow_call_duration` | 2 s | 60 s | — (timeouts count as failures) |
//! | `slow_call_rate_threshold` | 1.0 | 100 % | — |
//! | `open_wait` | 5 s | 60 s | 5 s (`sleepWindowInMilliseconds`) |
//! | `half_open_probes` | 3 | 10 | 1 |
//! | `consecutive_failures` | 20 | — | — (Envoy's outlier detection: 5) |
//!
//! * A **time** window, because the source behind a cache sees bursty,
//!   miss-driven traffic: a count window over a quiet source can still hold
//!   outcomes from minutes ago and judge today's dependency on them.
//! * **20 calls in 10 s** (Hystrix's numbers) rather than 100: a cache's
//!   source sees only the misses, so 100 calls may take long to accumulate.
//!   With a count window, `minimum_calls` is capped at the window size (as
//!   resilience4j does), otherwise the breaker could never open.
//! * **`open_wait` of 5 s**: resilience4j's 60 s keeps a cache serving stale
//!   data or errors for a minute after a blip; the probes make retrying
//!   early cheap.
//! * **Slow calls at 2 s**, rate 1.0: for a cache's source, a 2 s load is as
//!   good as down; at the default rate (every call in the window slow) slow
//!   calls trip the breaker only when the source has wholly stalled, as in
//!   resilience4j. Lower the rate to make slowness alone trip it.
//! * **3 probes**: Hystrix's single trial flaps on one unlucky call;
//!   resilience4j's 10 is a lot of load to put on a source that is just
//!   coming back.
//! * Thresholds are fractions in `(0, 1]`, not percentages.
//! * Outcomes are tagged with a generation (above). resilience4j records an
//!   outcome into whatever state the breaker is in when the call *ends*.
//!
//! # Listeners
//!
//! [`on_transition`](CircuitBreaker::on_transition) listeners are called
//! outside the breaker's locks (a listener may call back into the breaker),
//! exactly once per transition, and in transition order even when
//! transitions race on different threads: transitions are queued under the
//! state lock and one thread at a time drains the queue. The thread that
//! caused a transition may therefore return before a listener has seen it,
//! when another thread is mid-delivery. A panicking listener unwinds into
//! whichever caller was delivering; the transitions still queued are
//! delivered after the next transition.

mod window;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

// From `crate::sync`, so that under `--cfg rampart_loom` the state word, the
// open deadline and the lock are all loom's, and `tests/loom_breaker.rs`
// explores their interleavings.
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::Mutex;

use crate::clock::{Clock, Instant};
use crate::{Error, ErrorKind};

use self::window::{Totals, Window, FAILED, SLOW};

/// Breaker ids (std atomics even under loom: a counter, not a model subject).
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(not(rampart_loom))]
thread_local! {
    /// This thread's last rejection: (breaker id, retry_after in ms, error).
    static LAST_REJECTION: std::cell::RefCell<Option<(u64, u64, Error)>> =
        const { std::cell::RefCell::new(None) };
}

/// The largest count window [`BreakerConfig::validate`] accepts (one byte
/// per call is kept).
pub const MAX_WINDOW_CALLS: u32 = 1_000_000;
/// The largest time window [`BreakerConfig::validate`] accepts, in seconds.
pub const MAX_WINDOW_SECONDS: u32 = 3_600;

/// How the closed state remembers recent outcomes.
///
/// With the `serde` feature it is written as a string: `"10s"` (a time
/// window of whole seconds) or `"100 calls"` (a count window).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlidingWindow {
    /// The last `calls` outcomes.
    Count {
        /// Window size, `1..=MAX_WINDOW_CALLS`.
        calls: u32,
    },
    /// The outcomes of the last `seconds` seconds, in 1-second buckets (an
    /// outcome expires between `seconds - 1` and `seconds` after it was
    /// recorded).
    Time {
        /// Window length, `1..=MAX_WINDOW_SECONDS`.
        seconds: u32,
    },
}

impl std::str::FromStr for SlidingWindow {
    type Err = String;

    /// `"10s"` → `Time { seconds: 10 }`, `"100 calls"` → `Count { calls: 100 }`.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(count) = text
            .strip_suffix("calls")
            .or_else(|| text.strip_suffix("call"))
        {
            let calls = count.trim().parse::<u32>().map_err(|_| {
                format!("window {text:?}: expected a number of calls, as \"100 calls\"")
            })?;
            return Ok(SlidingWindow::Count { calls });
        }
        let length = humantime_parse(text).map_err(|e| {
            format!(
                "window {text:?}: expected a duration (\"10s\") or a count (\"100 calls\"): {e}"
            )
        })?;
        if length.subsec_nanos() != 0 {
            return Err(format!("window {text:?}: a time window is whole seconds"));
        }
        let seconds =
            u32::try_from(length.as_secs()).map_err(|_| format!("window {text:?} is too long"))?;
        Ok(SlidingWindow::Time { seconds })
    }
}

/// Durations as the rest of the settings write them ("10s", "1m").
fn humantime_parse(text: &str) -> Result<Duration, String> {
    #[cfg(feature = "serde")]
    {
        humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "serde"))]
    {
        // Without the feature only plain seconds are understood.
        text.strip_suffix('s')
            .and_then(|n| n.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
            .ok_or_else(|| "expected whole seconds, as \"10s\"".to_owned())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for SlidingWindow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A breaker's tuning. See the [module docs](self) for the defaults and why.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct BreakerConfig {
    /// The closed-state window. Default `Time { seconds: 10 }`.
    pub window: SlidingWindow,
    /// No judgement before the window holds this many outcomes. Default 20.
    pub minimum_calls: u32,
    /// Open when the window's failure rate is at least this, in `(0, 1]`.
    /// Default 0.5.
    pub failure_rate_threshold: f64,
    /// A recorded call that took at least this long is also counted slow.
    /// Default 2 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub slow_call_duration: Duration,
    /// Open when the window's slow-call rate is at least this, in `(0, 1]`.
    /// Default 1.0.
    pub slow_call_rate_threshold: f64,
    /// How long to stay open before letting probes through. Default 5 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub open_wait: Duration,
    /// Concurrent trial calls allowed in half-open, and how many must finish
    /// before it decides. Default 3.
    pub half_open_probes: u32,
    /// Open as soon as this many calls in a row failed, whatever the
    /// window's rate (0 turns it off). Default 20. Why, beside the rate: a
    /// window full of successes from before an outage dilutes its first
    /// failures — after 300 good calls, 300 failures are needed to reach a
    /// 50 % rate (measured: a source killed under 200 req/s opened the
    /// breaker after ~1.9 s by rate alone). A run of failures with no
    /// success between them is the outage itself.
    pub consecutive_failures: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: SlidingWindow::Time { seconds: 10 },
            minimum_calls: 20,
            failure_rate_threshold: 0.5,
            slow_call_duration: Duration::from_secs(2),
            slow_call_rate_threshold: 1.0,
            open_wait: Duration::from_secs(5),
            half_open_probes: 3,
            consecutive_failures: 20,
        }
    }
}

impl BreakerConfig {
    /// Checks every field; the error names the first bad one, e.g.
    /// `"failure_rate_threshold must be in (0, 1], got 1.5"`.
    ///
    /// [`CircuitBreaker::new`] does not fail on a bad config (it clamps each
    /// field to the nearest valid value, and a NaN threshold to its
    /// default), so config loaders should call this first.
    pub fn validate(&self) -> Result<(), String> {
        match self.window {
            SlidingWindow::Count { calls } if !(1..=MAX_WINDOW_CALLS).contains(&calls) => {
                return Err(format!(
                    "window.calls must be in 1..={MAX_WINDOW_CALLS}, got {calls}"
                ));
            }
            SlidingWindow::Time { seconds } if !(1..=MAX_WINDOW_SECONDS).contains(&seconds) => {
                return Err(format!(
                    "window.seconds must be in 1..={MAX_WINDOW_SECONDS}, got {seconds}"
                ));
            }
            _ => {}
        }
        if self.minimum_calls == 0 {
            return Err("minimum_calls must be at least 1, got 0".to_owned());
        }
        check_rate("failure_rate_threshold", self.failure_rate_threshold)?;
        if self.slow_call_duration.is_zero() {
            return Err("slow_call_duration must be greater than zero, got 0ns".to_owned());
        }
        check_rate("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if self.open_wait.is_zero() {
            return Err("open_wait must be greater than zero, got 0ns".to_owned());
        }
        if self.half_open_probes == 0 {
            return Err("half_open_probes must be at least 1, got 0".to_owned());
        }
        Ok(())
    }

    /// The config with every field forced into its valid range, so the
    /// breaker's arithmetic never sees a zero-size window or a NaN.
    fn normalized(mut self) -> Self {
        let defaults = BreakerConfig::default();
        self.window = match self.window {
            SlidingWindow::Count { calls } => SlidingWindow::Count {
                calls: calls.clamp(1, MAX_WINDOW_CALLS),
            },
            SlidingWindow::Time { seconds } => SlidingWindow::Time {
                seconds: seconds.clamp(1, MAX_WINDOW_SECONDS),
            },
        };
        self.minimum_calls = self.minimum_calls.max(1);
        self.failure_rate_threshold =
            clamp_rate(self.failure_rate_threshold, defaults.failure_rate_threshold);
        self.slow_call_rate_threshold = clamp_rate(
            self.slow_call_rate_threshold,
            defaults.slow_call_rate_threshold,
        );
        self.half_open_probes = self.half_open_probes.max(1);
        self
    }
}

fn check_rate(field: &str, value: f64) -> Result<(), String> {
    if value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        Err(format!("{field} must be in (0, 1], got {value}"))
    }
}

fn clamp_rate(value: f64, default: f64) -> f64 {
    if value.is_nan() {
        default
    } else {
        value.clamp(f64::MIN_POSITIVE, 1.0)
    }
}

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// Calls flow; outcomes are recorded.
    Closed = 0,
    /// Calls are rejected until `open_wait` has elapsed.
    Open = 1,
    /// A few probe calls decide between `Closed` and `Open`.
    HalfOpen = 2,
    /// An operator opened the breaker; calls are rejected until
    /// [`CircuitBreaker::reset`].
    ForcedOpen = 3,
    /// An operator disabled the breaker; calls flow and nothing is recorded.
    Disabled = 4,
}

impl State {
    /// The state's name in `snake_case`, for metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    fn from_bits(bits: u64) -> State {
        match bits & STATE_MASK {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::Disabled,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change, as seen by [`CircuitBreaker::on_transition`] listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The breaker's name.
    pub name: Arc<str>,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
}

/// A snapshot of a breaker, from [`CircuitBreaker::stats`].
///
/// `calls`, `failures` and `slow` count the closed-state window (empty in
/// the other states: every transition starts a fresh window), except in
/// `HalfOpen`, where they count the probes finished so far.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BreakerStats {
    /// The current state.
    pub state: State,
    /// Outcomes recorded (successes + failures).
    pub calls: u64,
    /// Of which failures.
    pub failures: u64,
    /// Of which slow (a slow call may also be a failure).
    pub slow: u64,
    /// `failures / calls`, 0 when there are no calls.
    pub failure_rate: f64,
    /// `slow / calls`, 0 when there are no calls.
    pub slow_rate: f64,
    /// State changes since the breaker was built.
    pub transitions: u64,
    /// Calls rejected since the breaker was built.
    pub rejected: u64,
}

type Listener = Arc<dyn Fn(&Transition) + Send + Sync + 'static>;

/// The low bits of the state word hold the state, the rest the generation.
const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

fn pack(state: State, generation: u64) -> u64 {
    (generation << STATE_BITS) | state as u64
}

const NANOS_PER_SEC: u64 = 1_000_000_000;

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A circuit breaker guarding one dependency. Cheap to clone; clones share
/// state.
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    /// Unique per breaker and never reused (an address could be, after a
    /// drop): keys this breaker's entry in the rejection cache (which loom
    /// models leave out: loom has no thread-locals of this kind).
    #[cfg_attr(rampart_loom, allow(dead_code))]
    id: u64,
    /// `open_wait` in nanoseconds, for the lock-free rejection while
    /// forced open (the rest of the settings live in `core`).
    open_wait_hint: AtomicU64,
    clock: Clock,
    /// Time zero for the nanosecond timestamps below.
    epoch: Instant,
    /// `generation << 3 | state`. Written only under `core`'s lock; read
    /// without it by `try_acquire` and `state`.
    word: AtomicU64,
    /// While `Open`: nanoseconds since `epoch` until which calls are
    /// rejected. Written only under `core`'s lock, before `word`.
    open_until: AtomicU64,
    /// Rejections since construction.
    rejected: AtomicU64,
    /// Everything that changes together: the window, the probes, the state
    /// and generation of record. One short mutex (never held across user
    /// code or an await) makes "record, judge, transition" atomic, so two
    /// threads can never both trip the breaker or both count the last probe;
    /// parking_lot because it is uncontended-cheap and never poisons.
    core: Mutex<Core>,
    /// Copy-on-write, so delivery can take a snapshot and call the listeners
    /// without holding this lock (a listener may add a listener).
    listeners: Mutex<Arc<[Listener]>>,
    /// Set while one thread drains `core.pending` to the listeners.
    delivering: AtomicBool,
}

/// A config and what is derived from it, swapped together so no reader
/// sees one config's threshold with another's durations.
struct Settings {
    config: BreakerConfig,
    /// `minimum_calls`, capped at a count window's size.
    minimum_calls: u64,
    slow_nanos: u64,
    open_wait_nanos: u64,
}

impl Settings {
    /// Normalises `config` and derives the rest.
    fn new(config: BreakerConfig) -> Settings {
        let config = config.normalized();
        let minimum_calls = match config.window {
            SlidingWindow::Count { calls } => config.minimum_calls.min(calls),
            SlidingWindow::Time { .. } => config.minimum_calls,
        };
        Settings {
            minimum_calls: u64::from(minimum_calls),
            slow_nanos: saturating_nanos(config.slow_call_duration),
            open_wait_nanos: saturating_nanos(config.open_wait),
            config,
        }
    }

    /// An empty window of the configured kind and size.
    fn window(&self) -> Window {
        match self.config.window {
            SlidingWindow::Count { calls } => Window::count(calls as usize),
            SlidingWindow::Time { seconds } => Window::time(seconds as usize),
        }
    }
}

struct Core {
    /// The thresholds in force, replaced whole by `set_config` under this
    /// lock: every outcome is judged by one config, never half of two.
    /// The closed state's lock-free `try_acquire` reads none of it.
    settings: Arc<Settings>,
    state: State,
    generation: u64,
    window: Window,
    probes: Probes,
    /// Closed-state calls in a row that failed.
    consecutive_failures: u32,
    transitions: u64,
    /// Transitions not yet handed to the listeners, in order.
    pending: VecDeque<Transition>,
}

/// Half-open bookkeeping. Invariant: `outstanding + calls <= half_open_probes`.
#[derive(Debug, Default)]
struct Probes {
    /// Probe permits issued and not yet recorded or dropped.
    outstanding: u32,
    /// Probes recorded (success or failure).
    calls: u32,
    failures: u32,
    slow: u32,
}

impl CircuitBreaker {
    /// A breaker on the real clock, in its cheap coarse mode
    /// ([`Clock::coarse`], ~1 ms resolution). A config that fails
    /// [`BreakerConfig::validate`] is clamped into range, not rejected.
    pub fn new(name: impl Into<Arc<str>>, config: BreakerConfig) -> Self {
        Self::with_clock(name, config, Clock::coarse())
    }

    /// A breaker on the given clock (tests pass [`Clock::mock`]'s).
    pub fn with_clock(name: impl Into<Arc<str>>, config: BreakerConfig, clock: Clock) -> Self {
        let settings = Settings::new(config);
        let window = settings.window();
        let epoch = clock.now();
        CircuitBreaker {
            inner: Arc::new(Inner {
                name: name.into(),
                // Relaxed: uniqueness needs only atomicity.
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                open_wait_hint: AtomicU64::new(settings.open_wait_nanos),
                clock,
                epoch,
                word: AtomicU64::new(pack(State::Closed, 0)),
                open_until: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                core: Mutex::new(Core {
                    settings: Arc::new(settings),
                    state: State::Closed,
                    generation: 0,
                    window,
                    probes: Probes::default(),
                    consecutive_failures: 0,
                    transitions: 0,
                    pending: VecDeque::new(),
                }),
                listeners: Mutex::new(Arc::from(Vec::new())),
                delivering: AtomicBool::new(false),
            }),
        }
    }

    /// The breaker's name (the dependency it guards).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The (normalised) config the breaker runs with now (a copy:
    /// [`set_config`](Self::set_config) may replace it).
    pub fn config(&self) -> BreakerConfig {
        let core = crate::contention::lock(&self.inner.core, &crate::contention::BREAKER);
        core.settings.config.clone()
    }

    /// Asks to make one call. On `Ok`, make the call and report its outcome
    /// on the [`Permit`]; on `Err` ([`ErrorKind::BreakerOpen`]), don't.
    ///
    /// Rejects, with `retry_after` set to:
    ///
    /// * while `Open`: the time left until `open_wait` has elapsed (the first
    ///   call after that moves the breaker to `HalfOpen`);
    /// * while `ForcedOpen`: `open_wait`, as a hint (there is no deadline);
    /// * in `HalfOpen` with every probe slot taken:
    ///   `min(slow_call_duration, open_wait)`, a guess at when the probes in
    ///   flight will have decided.
    pub fn try_acquire(&self) -> Result<Permit, Error> {
        let inner = &*self.inner;
        // Acquire: pairs with the Release store in `transition`, so when we
        // see `Open` of generation g we also see g's `open_until`, written
        // before it.
        let word = inner.word.load(Ordering::Acquire);
        let generation = word >> STATE_BITS;
        match State::from_bits(word) {
            State::Closed => Ok(self.permit(PermitKind::Closed, generation, inner.now_nanos())),
            // Disabled records nothing, so it needs no start time.
            State::Disabled => Ok(self.permit(PermitKind::Disabled, generation, 0)),
            // Relaxed: a hint for the caller, ordered with nothing else.
            State::ForcedOpen => Err(inner.reject(Duration::from_nanos(
                inner.open_wait_hint.load(Ordering::Relaxed),
            ))),
            State::Open => {
                let now = inner.now_nanos();
                // Relaxed: ordered by the Acquire load of `word` above. If a
                // later generation has reopened since, we may read its
                // (later) deadline, which is just as right.
                let until = inner.open_until.load(Ordering::Relaxed);
                if now < until {
                    Err(inner.reject(Duration::from_nanos(until - now)))
                } else {
                    self.acquire_locked(now)
                }
            }
            State::HalfOpen => self.acquire_locked(inner.now_nanos()),
        }
    }

    /// The slow path of `try_acquire`: half-open, or open with the wait over.
    fn acquire_locked(&self, now: u64) -> Result<Permit, Error> {
        let inner = &*self.inner;
        let mut core = crate::contention::lock(&inner.core, &crate::contention::BREAKER);
        let mut transitioned = false;
        if core.state == State::Open {
            // Relaxed: written under this lock, which orders it.
            let until = inner.open_until.load(Ordering::Relaxed);
            if now < until {
                return Err(inner.reject(Duration::from_nanos(until - now)));
            }
            inner.transition(&mut core, State::HalfOpen, now);
            transitioned = true;
        }
        // The state may have moved since the lock-free read: decide afresh.
        let settings = Arc::clone(&core.settings);
        let config = &settings.config;
        let result = match core.state {
            State::Closed => Ok(self.permit(PermitKind::Closed, core.generation, now)),
            State::Disabled => Ok(self.permit(PermitKind::Disabled, core.generation, 0)),
            State::ForcedOpen => Err(inner.reject(config.open_wait)),
            State::HalfOpen => {
                let probes = &mut core.probes;
                if probes.outstanding + probes.calls < config.half_open_probes {
                    probes.outstanding += 1;
                    Ok(self.permit(PermitKind::Probe, core.generation, now))
                } else {
                    // The verdict comes when the probes in flight finish;
                    // a slow call's duration is a fair guess at when.
                    Err(inner.reject(config.slow_call_duration.min(config.open_wait)))
                }
            }
            // Handled above.
            State::Open => Err(inner.reject(config.open_wait)),
        };
        drop(core);
        if transitioned {
            inner.deliver();
        }
        result
    }

    fn permit(&self, kind: PermitKind, generation: u64, start: u64) -> Permit {
        Permit {
            inner: Arc::clone(&self.inner),
            kind,
            generation,
            start,
            done: false,
        }
    }

    /// Runs `fut` through the breaker. The outer `Err` means it was rejected
    /// and `fut` was never polled; otherwise the inner result is `fut`'s.
    ///
    /// An `Err(e)` counts as a failure when `is_failure(&e)`, and as a
    /// success otherwise (the dependency answered: a "not found" is a
    /// healthy source). Use [`try_acquire`](Self::try_acquire) and
    /// [`Permit::ignore`] to leave an outcome out entirely. If the returned
    /// future is dropped before `fut` finishes (or `fut` panics), the call
    /// counts as neither.
    pub async fn call<T, E, F>(
        &self,
        fut: F,
        is_failure: impl FnOnce(&E) -> bool,
    ) -> Result<Result<T, E>, Error>
    where
        F: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire()?;
        let out = fut.await;
        match &out {
            Err(e) if is_failure(e) => permit.failure(),
            _ => permit.success(),
        }
        Ok(out)
    }

    /// The current state. `Open` stays `Open` past `open_wait` until the
    /// next `try_acquire` moves it to `HalfOpen`.
    pub fn state(&self) -> State {
        // Acquire: a caller that sees a state also sees what the
        // transition to it wrote (cheap, and keeps `state()` a fence-free
        // read on x86).
        State::from_bits(self.inner.word.load(Ordering::Acquire))
    }

    /// Rejects every call until [`reset`](Self::reset). A no-op when already
    /// forced open.
    pub fn force_open(&self) {
        self.inner.operator(State::ForcedOpen);
    }

    /// Lets every call through and records nothing until
    /// [`reset`](Self::reset). A no-op when already disabled.
    pub fn disable(&self) {
        self.inner.operator(State::Disabled);
    }

    /// Back to `Closed` with an empty window, from any state. Permits issued
    /// before the reset are ignored when they finish. From `Closed` this
    /// only empties the window (no transition is reported).
    pub fn reset(&self) {
        self.inner.operator(State::Closed);
    }

    /// Calls `listener` for every later state change, outside the breaker's
    /// locks, once per change and in order (see the module docs).
    pub fn on_transition(&self, listener: impl Fn(&Transition) + Send + Sync + 'static) {
        let mut listeners = self.inner.listeners.lock();
        let mut next: Vec<Listener> = listeners.iter().cloned().collect();
        next.push(Arc::new(listener));
        *listeners = Arc::from(next);
    }

    /// A consistent snapshot of the breaker's state and counters.
    pub fn stats(&self) -> BreakerStats {
        let inner = &*self.inner;
        let now_sec = inner.now_nanos() / NANOS_PER_SEC;
        let mut core = crate::contention::lock(&inner.core, &crate::contention::BREAKER);
        let totals = if core.state == State::HalfOpen {
            let p = &core.probes;
            Totals {
                calls: u64::from(p.calls),
                failures: u64::from(p.failures),
                slow: u64::from(p.slow),
            }
        } else {
            core.window.advance(now_sec);
            core.window.totals()
        };
        let (failure_rate, slow_rate) = rates(&totals);
        BreakerStats {
            state: core.state,
            calls: totals.calls,
            failures: totals.failures,
            slow: totals.slow,
            failure_rate,
            slow_rate,
            transitions: core.transitions,
            // Relaxed: a statistic; no other memory depends on it.
            rejected: inner.rejected.load(Ordering::Relaxed),
        }
    }
}

/// Live reconfiguration, kept apart from the call path.
impl CircuitBreaker {
    /// Replaces the thresholds while the breaker runs. Refused (and the
    /// running config kept) when `config` fails [`BreakerConfig::validate`]:
    /// unlike [`new`](Self::new), a change made at run time is not clamped
    /// silently. The state is kept; a new window kind or size starts an
    /// empty window (the old counts do not fit it), otherwise the counts
    /// are kept and judged by the new thresholds from the next outcome. An
    /// `Open` breaker keeps the deadline it opened with.
    pub fn set_config(&self, config: BreakerConfig) -> Result<(), Error> {
        config
            .validate()
            .map_err(|e| Error::invalid_config(format!("breaker `{}`: {e}", self.inner.name)))?;
        let inner = &*self.inner;
        let settings = Settings::new(config);
        // Under the core lock: no outcome is judged half by the old
        // settings and half by the new, and the window is swapped with
        // the settings it belongs to.
        let mut core = crate::contention::lock(&inner.core, &crate::contention::BREAKER);
        if settings.config.window != core.settings.config.window {
            core.window = settings.window();
        }
        // Relaxed: a hint (see `try_acquire`).
        inner
            .open_wait_hint
            .store(settings.open_wait_nanos, Ordering::Relaxed);
        core.settings = Arc::new(settings);
        drop(core);
        Ok(())
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

fn rates(t: &Totals) -> (f64, f64) {
    if t.calls == 0 {
        (0.0, 0.0)
    } else {
        let calls = t.calls as f64;
        (t.failures as f64 / calls, t.slow as f64 / calls)
    }
}

impl Inner {
    /// Nanoseconds since the breaker was built.
    fn now_nanos(&self) -> u64 {
        saturating_nanos(self.clock.now().saturating_duration_since(self.epoch))
    }

    /// The error for a rejected call, `retry_after` rounded up to the
    /// millisecond.
    ///
    /// Why a per-thread cache: an `Error` is one allocated pointer (for the
    /// cache's hit path), so building one per rejection cost an allocation,
    /// a free and two atomic operations on the name's shared reference
    /// count (~65 ns). One error shared by every rejection would instead
    /// put every rejecting core on a single reference count, a contended
    /// cache line in exactly the storm a breaker exists for. Each thread
    /// keeps the last rejection it built and hands out clones while the
    /// breaker and the rounded `retry_after` are the same: one uncontended
    /// reference-count increment, rebuilt at most once a millisecond per
    /// thread during a storm (BENCHMARKS.md, "Breaker rejection").
    fn reject(&self, retry_after: Duration) -> Error {
        // Relaxed: a statistic; no other memory depends on it.
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let millis = u64::try_from(retry_after.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        let build = || -> Error {
            ErrorKind::BreakerOpen {
                name: Arc::clone(&self.name),
                retry_after: Duration::from_millis(millis),
            }
            .into()
        };
        #[cfg(not(rampart_loom))]
        {
            LAST_REJECTION
                .try_with(|last| {
                    let mut last = last.borrow_mut();
                    match &*last {
                        Some((id, at, error)) if *id == self.id && *at == millis => error.clone(),
                        _ => {
                            let error = build();
                            *last = Some((self.id, millis, error.clone()));
                            error
                        }
                    }
                })
                // The thread is exiting and its cache is gone.
                .unwrap_or_else(|_| build())
        }
        #[cfg(rampart_loom)]
        build()
    }

    fn exceeds_thresholds(config: &BreakerConfig, t: &Totals) -> bool {
        let (failure_rate, slow_rate) = rates(t);
        failure_rate >= config.failure_rate_threshold
            || slow_rate >= config.slow_call_rate_threshold
    }

    /// Moves to `to` under the lock: new generation, fresh window and
    /// probes, and the transition queued for the listeners. The caller must
    /// call [`deliver`](Self::deliver) after releasing the lock.
    fn transition(&self, core: &mut Core, to: State, now: u64) {
        let from = core.state;
        core.state = to;
        core.generation += 1;
        core.transitions += 1;
        core.window.clear();
        core.probes = Probes::default();
        core.consecutive_failures = 0;
        if to == State::Open {
            // Relaxed: published by the Release store of `word` below.
            self.open_until.store(
                now.saturating_add(core.settings.open_wait_nanos),
                Ordering::Relaxed,
            );
        }
        // Release: pairs with the Acquire loads in `try_acquire`/`state`, so
        // a reader that sees the new state sees the new deadline too.
        self.word
            .store(pack(to, core.generation), Ordering::Release);
        core.pending.push_back(Transition {
            name: Arc::clone(&self.name),
            from,
            to,
        });
    }

    /// `force_open` / `disable` / `reset`.
    fn operator(&self, to: State) {
        let now = self.now_nanos();
        let mut core = crate::contention::lock(&self.core, &crate::contention::BREAKER);
        let transitioned = if core.state != to {
            self.transition(&mut core, to, now);
            true
        } else {
            if to == State::Closed {
                // Reset while closed: empty the window and orphan the
                // permits in flight, but there is no state change to report.
                core.generation += 1;
                core.window.clear();
                // Release: as in `transition`.
                self.word
                    .store(pack(State::Closed, core.generation), Ordering::Release);
            }
            false
        };
        drop(core);
        if transitioned {
            self.deliver();
        }
    }

    /// Records a permit's outcome: `failed` (the `FAILED` bit or 0), and
    /// slow when it took `slow_call_duration` or longer since `start`.
    fn record(&self, kind: PermitKind, generation: u64, failed: u8, start: u64, now: u64) {
        let mut core = crate::contention::lock(&self.core, &crate::contention::BREAKER);
        if core.generation != generation {
            return; // stale: issued in an earlier state
        }
        let settings = Arc::clone(&core.settings);
        let config = &settings.config;
        let outcome = if now.saturating_sub(start) >= settings.slow_nanos {
            failed | SLOW
        } else {
            failed
        };
        let transitioned = match kind {
            PermitKind::Disabled => false,
            PermitKind::Closed => {
                core.window.record(now / NANOS_PER_SEC, outcome);
                core.consecutive_failures = if outcome & FAILED != 0 {
                    core.consecutive_failures.saturating_add(1)
                } else {
                    0
                };
                let in_a_row = config.consecutive_failures;
                let totals = core.window.totals();
                if (in_a_row > 0 && core.consecutive_failures >= in_a_row)
                    || (totals.calls >= settings.minimum_calls
                        && Self::exceeds_thresholds(config, &totals))
                {
                    self.transition(&mut core, State::Open, now);
                    true
                } else {
                    false
                }
            }
            PermitKind::Probe => {
                let probes = &mut core.probes;
                probes.outstanding = probes.outstanding.saturating_sub(1);
                probes.calls += 1;
                probes.failures += u32::from(outcome & FAILED != 0);
                probes.slow += u32::from(outcome & SLOW != 0);
                if probes.calls >= config.half_open_probes {
                    let totals = Totals {
                        calls: u64::from(probes.calls),
                        failures: u64::from(probes.failures),
                        slow: u64::from(probes.slow),
                    };
                    let to = if Self::exceeds_thresholds(config, &totals) {
                        State::Open
                    } else {
                        State::Closed
                    };
                    self.transition(&mut core, to, now);
                    true
                } else {
                    false
                }
            }
        };
        drop(core);
        if transitioned {
            self.deliver();
        }
    }

    /// Frees a probe's slot without recording an outcome.
    fn release_probe(&self, generation: u64) {
        let mut core = crate::contention::lock(&self.core, &crate::contention::BREAKER);
        if core.generation == generation {
            core.probes.outstanding = core.probes.outstanding.saturating_sub(1);
        }
    }

    /// Hands queued transitions to the listeners, one delivering thread at a
    /// time, without holding any lock while a listener runs.
    fn deliver(&self) {
        struct Clear<'a>(&'a AtomicBool);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                // Release: the next deliverer's Acquire sees everything the
                // listeners did during this delivery.
                self.0.store(false, Ordering::Release);
            }
        }
        loop {
            // Acquire: pairs with the Release in `Clear`. Missing a queued
            // transition is impossible: whoever pushed it did so under the
            // `core` lock before trying this flag, and the deliverer
            // re-checks the queue under that lock after clearing the flag,
            // so either the pusher wins the flag or the deliverer sees the
            // transition.
            if self
                .delivering
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return;
            }
            let clear = Clear(&self.delivering);
            loop {
                let next = crate::contention::lock(&self.core, &crate::contention::BREAKER)
                    .pending
                    .pop_front();
                let Some(transition) = next else { break };
                let listeners = Arc::clone(&self.listeners.lock());
                for listener in listeners.iter() {
                    listener(&transition);
                }
            }
            drop(clear);
            if crate::contention::lock(&self.core, &crate::contention::BREAKER)
                .pending
                .is_empty()
            {
                return;
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PermitKind {
    Closed,
    Probe,
    Disabled,
}

/// Leave to make one call, from [`CircuitBreaker::try_acquire`]. Report the
/// outcome with [`success`](Self::success), [`failure`](Self::failure) or
/// [`ignore`](Self::ignore). Dropping it unreported (the call was
/// cancelled) counts as neither, and frees its half-open probe slot.
///
/// The call's duration runs from `try_acquire` to the report; a success or
/// failure that took at least `slow_call_duration` is also counted slow.
#[must_use = "a permit dropped without success()/failure() counts as a cancelled call"]
pub struct Permit {
    inner: Arc<Inner>,
    kind: PermitKind,
    generation: u64,
    /// Nanoseconds since the breaker's epoch.
    start: u64,
    done: bool,
}

impl Permit {
    /// The call succeeded.
    pub fn success(self) {
        self.finish(0);
    }

    /// The call failed in a way that should count against the dependency.
    pub fn failure(self) {
        self.finish(FAILED);
    }

    /// The outcome says nothing about the dependency's health: count it as
    /// neither (like dropping the permit), freeing a half-open probe slot.
    pub fn ignore(self) {
        // Drop does the work.
    }

    /// The state this permit was issued in: `Closed`, `HalfOpen` (a probe)
    /// or `Disabled`.
    pub fn state(&self) -> State {
        match self.kind {
            PermitKind::Closed => State::Closed,
            PermitKind::Probe => State::HalfOpen,
            PermitKind::Disabled => State::Disabled,
        }
    }

    fn finish(mut self, failed: u8) {
        self.done = true;
        if self.kind == PermitKind::Disabled {
            return;
        }
        let now = self.inner.now_nanos();
        self.inner
            .record(self.kind, self.generation, failed, self.start, now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Only a probe holds anything to give back; a closed or disabled
        // permit drops without touching the lock.
        if !self.done && self.kind == PermitKind::Probe {
            self.inner.release_probe(self.generation);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.inner.name)
            .field("state", &self.state())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}
