//! A cache warm-up that cannot take its source down: bounded, batched,
//! rate-limited, adaptive, observable and cancellable.
//!
//! ```
//! use futures_util::stream;
//! use rampart::warm::{warm, NoPressure, WarmConfig, WarmProgress};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rampart::Error> {
//! let keys = stream::iter((0..10_000u64).map(Ok));
//! let progress = WarmProgress::default();
//! progress.set_expected(10_000);
//! let report = warm(
//!     keys,
//!     |batch: Vec<u64>| async move {
//!         // e.g. `cache.get_many(&batch)`, counting the `Ok` answers
//!         Ok(batch.len() as u64)
//!     },
//!     &WarmConfig { max_keys_per_sec: None, ..WarmConfig::default() },
//!     &NoPressure,
//!     &progress,
//!     &CancellationToken::new(),
//! )
//! .await?;
//! assert_eq!(report.keys_done, 10_000);
//! assert_eq!(progress.fraction(), Some(1.0));
//! # Ok(())
//! # }
//! ```
//!
//! # Why this exists
//!
//! The incident this module answers: a payment service's start-up warm-up
//! fired a million unbounded GETs at once, exhausted Redis and the database
//! pool, and took the service down for 47 minutes. Nothing in that warm-up
//! was wrong key by key; it was wrong in aggregate. [`warm`] therefore owns
//! the aggregate: it takes a [`Stream`] of keys and a batch-load function,
//! and decides how many keys are read, how many batches run, and how fast.
//! It knows nothing about SQL, Redis or HTTP; a typical `load_batch` calls
//! [`TieredCache::get_many`](crate::cache::TieredCache::get_many) and counts
//! the answers that are `Ok`.
//!
//! # The bounds, and why each default
//!
//! Every bound closes one of the ways the incident's warm-up hurt its
//! source; each is a field of [`WarmConfig`].
//!
//! * **Lazy key stream.** Keys are pulled only to fill the next batch, so at
//!   most `(limit + 1) × batch_size` keys are held at once (the batches in
//!   flight plus the one being filled), however long the stream. The
//!   incident's warm-up read every key first; a million keys in memory is
//!   the harmless half of that mistake, a million requests the other half.
//! * **`batch_size`, default 500.** One round trip per 500 keys instead of
//!   one per key: the incident's million GETs become 2 000 `MGET`s or
//!   `WHERE id = ANY($1)` queries. Hundreds of keys per trip amortise the
//!   round trip almost fully, while one reply (500 values) stays small
//!   enough not to stall the connection or the source's other clients.
//! * **`max_concurrency`, default 2.** The incident exhausted the database
//!   pool; a warm-up must leave that pool to foreground traffic. With a
//!   typical pool of 10, a warm-up holding 2 connections leaves 8 for
//!   requests, and 2 still overlaps one batch's round trip with the next.
//! * **`max_keys_per_sec`, default 20 000.** Bounded concurrency alone does
//!   not bound load: against a fast source, two back-to-back batch loops can
//!   still saturate its CPU. The rate ceiling bounds the load whatever the
//!   latency; at 20 000 keys/s a million keys take under a minute, a steady
//!   load a single Redis or Postgres primary serves without noticing.
//!   Precisely: keys dispatched by time `t` never exceed
//!   `max_keys_per_sec × t + batch_size`.
//! * **`max_consecutive_failures`, default 5.** A warm-up that keeps
//!   hammering a dead source only delays its recovery. Five batch failures
//!   in a row tell a source that is down from scattered errors (any success
//!   resets the count), and giving up is safe: warming is an optimisation,
//!   the cache still fills read-through.
//!
//! # Why AIMD on top of the static bounds
//!
//! The static bounds are sized for a quiet source, but a warm-up usually
//! runs at start-up, exactly when foreground traffic ramps up beside it.
//! The server reports that through [`Pressure`] (source-pool wait time,
//! foreground p99), and the warm-up adapts its concurrency the way TCP
//! adapts its window (additive increase, multiplicative decrease; Chiu and
//! Jain showed it is the simple rule that converges to a fair share): when
//! `is_high()` before a dispatch, the limit halves (never below 1), so a
//! struggling source sheds the warm-up's load within `log2(max)` batches;
//! after each successful batch with `is_high()` false, the limit grows by
//! one up to `max_concurrency`, probing back slowly instead of returning in
//! one step to the load that hurt. A failed batch halves the limit too: a
//! failing source is the warm-up's equivalent of TCP's lost packet. A
//! halving never stops running batches; it gates the next ones. Below one
//! there is nothing to halve, so at one, under pressure, each batch first
//! waits [`PRESSURE_PAUSE`]: without it, batches that cost the source
//! little would still run back to back and the signal would slow nothing.
//!
//! # Failures, panics and cancellation
//!
//! A failed batch (an `Err`, or a panic in `load_batch`, which is caught
//! and reported as [`ErrorKind::LoadPanicked`](crate::ErrorKind::LoadPanicked)) counts its keys as failed and
//! the warm-up goes on, until `max_consecutive_failures` in a row or a
//! stream error stop it: no new batch starts, the batches in flight finish,
//! and [`warm`] returns the error that stopped it.
//!
//! On [`CancellationToken::cancel`] no new batch starts, the batches in
//! flight are **allowed to finish**, and [`warm`] returns `Ok` with
//! `cancelled: true`: it returns within one batch's latency. Why finish rather
//! than drop them: a batch is one bounded round trip the source is already
//! executing. Dropping our side does not stop the query on the server; with
//! most clients it discards the connection, so the pool reconnects (more
//! load at the worst moment), and it throws away results already paid for.
//! Finishing also keeps the counters exact (every dispatched batch ends done
//! or failed). For a hard stop, drop the future returned by [`warm`] (for
//! example with `tokio::time::timeout`): the batches in flight are dropped
//! with it and their keys counted as skipped.
//!
//! Batches run as futures inside the future returned by [`warm`] (a
//! `FuturesUnordered` the warm-up drives and drains), never as spawned
//! tasks. So nothing outlives the call, dropping it stops everything, and
//! `load_batch` may borrow (a `&TieredCache`, say) instead of needing
//! `'static`. The cost is that all batches are polled by the one task
//! awaiting [`warm`]: right for I/O-bound loads; a loader with heavy CPU
//! work should move it to `spawn_blocking` itself.

use std::future::Future;
use std::mem;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use futures_util::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// The most key slots preallocated for the batch being filled: a huge
/// `batch_size` then grows its vector as keys arrive instead of reserving
/// (or failing to reserve) it all up front.
const MAX_PREALLOCATED_KEYS: usize = 4096;

/// How long a batch waits before it starts when the pressure is high and
/// the concurrency is already down to one: halving cannot go lower, and a
/// batch that costs the source little (or rows cached as read, which cost
/// only CPU) would otherwise start at once, back to back. After the pause
/// the batch starts whatever the signal says, so a pressure that never
/// lets up still leaves one batch per pause (500 keys per 100 ms with the
/// defaults): slowed, never stopped.
pub const PRESSURE_PAUSE: Duration = Duration::from_millis(100);

/// The longest the rate limiter ever schedules ahead for one batch. Only a
/// batch of tens of billions of keys at 1 key/s reaches it; the cap keeps
/// the `Instant` arithmetic from overflowing.
const MAX_BATCH_COST: Duration = Duration::from_secs(365 * 24 * 3600);

/// How a warm-up may load its source. See the [module docs](self) for why
/// each default is what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmConfig {
    /// Keys per `load_batch` call; the last batch may be shorter.
    /// Default 500: one round trip per 500 keys.
    pub batch_size: usize,
    /// Most batches in flight at once; the adaptive limit starts here and
    /// never exceeds it. Default 2: fits a small machine, and a source pool
    /// of 10 keeps 8 for foreground traffic.
    pub max_concurrency: usize,
    /// Most keys dispatched per second (keys dispatched by time `t` stay
    /// within `max_keys_per_sec × t + batch_size`); `None` for no limit.
    /// Default `Some(20_000)`: a million keys in under a minute.
    pub max_keys_per_sec: Option<u32>,
    /// Stop with `Err` (the error of the batch that completed the run of
    /// failures) after this many batches fail in a row; any successful
    /// batch resets the count. Default 5.
    pub max_consecutive_failures: u32,
}

impl Default for WarmConfig {
    fn default() -> Self {
        WarmConfig {
            batch_size: 500,
            max_concurrency: 2,
            max_keys_per_sec: Some(20_000),
            max_consecutive_failures: 5,
        }
    }
}

impl WarmConfig {
    /// Checks the config, naming the first bad field. [`warm`] calls it and
    /// returns [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) with this message.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("batch_size must be >= 1".to_owned());
        }
        if self.max_concurrency == 0 {
            return Err("max_concurrency must be >= 1".to_owned());
        }
        if self.max_keys_per_sec == Some(0) {
            return Err("max_keys_per_sec must be >= 1 (or None for no limit)".to_owned());
        }
        if self.max_consecutive_failures == 0 {
            return Err("max_consecutive_failures must be >= 1".to_owned());
        }
        Ok(())
    }
}

/// The warm-up's two bounds an operator may change while it runs:
/// `max_concurrency` and `max_keys_per_sec` ([`warm_with_limits`] re-reads
/// them between batches). Why these two and not the rest: they are how
/// hard the warm-up leans on its source, the knob an operator reaches for
/// when a warm-up turns out too gentle for an idle source or too rough for
/// a busy one; `batch_size` and `max_consecutive_failures` shape single
/// batches and stay as the run started.
///
/// A change applies from the next batch: a lower `max_concurrency` stops
/// new batches until fewer are in flight (running ones finish), a higher
/// one is probed up to a batch at a time, as after a back-off; a higher
/// rate lifts a wait the old rate had scheduled, a lower one charges the
/// next batches at the new rate. From any change on, the keys dispatched
/// in the `t` seconds that follow stay within
/// `max_keys_per_sec × t + batch_size` of the new rate.
#[derive(Debug)]
pub struct WarmLimits {
    /// A watch channel rather than two atomics: the warm-up must wake on a
    /// change (a lifted rate should not wait out the old rate's timer),
    /// and both values change together.
    live: tokio::sync::watch::Sender<Limits>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limits {
    max_concurrency: usize,
    max_keys_per_sec: Option<u32>,
}

impl WarmLimits {
    /// `config`'s concurrency and rate.
    pub fn new(config: &WarmConfig) -> WarmLimits {
        WarmLimits {
            live: tokio::sync::watch::Sender::new(Limits {
                max_concurrency: config.max_concurrency,
                max_keys_per_sec: config.max_keys_per_sec,
            }),
        }
    }

    /// Sets both bounds (checked as [`WarmConfig::validate`] checks them;
    /// an error names the field and changes nothing).
    pub fn set(&self, max_concurrency: usize, max_keys_per_sec: Option<u32>) -> Result<(), Error> {
        if max_concurrency == 0 {
            return Err(Error::invalid_config("max_concurrency must be >= 1"));
        }
        if max_keys_per_sec == Some(0) {
            return Err(Error::invalid_config(
                "max_keys_per_sec must be >= 1 (or None for no limit)",
            ));
        }
        self.live.send_replace(Limits {
            max_concurrency,
            max_keys_per_sec,
        });
        Ok(())
    }

    /// The concurrency bound in force.
    pub fn max_concurrency(&self) -> usize {
        self.live.borrow().max_concurrency
    }

    /// The rate bound in force (`None`: no limit).
    pub fn max_keys_per_sec(&self) -> Option<u32> {
        self.live.borrow().max_keys_per_sec
    }
}

/// Whether the source (or the service around it) is under pressure; read
/// by [`warm`] before each batch it dispatches, and after each batch that
/// succeeds while the limit is below `max_concurrency`. The server implements it from source-pool wait time and
/// foreground p99.
///
/// It is called on the warm-up's task, so it must be cheap and must not
/// block: read an atomic that a metrics loop keeps up to date. A panic in
/// it is not caught.
pub trait Pressure: Send + Sync {
    /// True when the warm-up should back off.
    fn is_high(&self) -> bool;
}

/// A [`Pressure`] that is never high: the warm-up runs at
/// `max_concurrency` (still bounded by the rate and the batch size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoPressure;

impl Pressure for NoPressure {
    fn is_high(&self) -> bool {
        false
    }
}

/// Any `Fn() -> bool` is a [`Pressure`]: `&|| flag.load(Ordering::Relaxed)`.
impl<F> Pressure for F
where
    F: Fn() -> bool + Send + Sync,
{
    fn is_high(&self) -> bool {
        self()
    }
}

/// Shared, lock-free progress of one warm-up, for metrics and progress
/// bars: [`warm`] updates it as batches finish, anyone may read it
/// meanwhile.
///
/// Use one `WarmProgress` per run: the counters are cumulative, so a
/// second run on the same value adds to the first's.
///
/// Every counter is updated and read with `Relaxed` ordering: each is an
/// independent gauge, nothing is read on the strength of its value, so
/// only atomicity is needed. Readers mid-run may therefore see, say,
/// `keys_done` a batch ahead of `batches_done`. The exception is
/// [`is_finished`](Self::is_finished): once it returns `true`, every
/// counter read after it is final.
#[derive(Default, Debug)]
pub struct WarmProgress {
    expected: AtomicU64,
    has_expected: AtomicBool,
    keys_done: AtomicU64,
    keys_failed: AtomicU64,
    keys_skipped: AtomicU64,
    batches_done: AtomicU64,
    batches_failed: AtomicU64,
    in_flight: AtomicUsize,
    concurrency: AtomicUsize,
    finished: AtomicBool,
}

impl WarmProgress {
    /// Records how many keys the run is expected to see (from `COUNT(*)`,
    /// say), for [`fraction`](Self::fraction). Optional; may be called
    /// before or during the run.
    pub fn set_expected(&self, total: u64) {
        // Relaxed for the value: the Release store of the flag below
        // publishes it.
        self.expected.store(total, Ordering::Relaxed);
        // Release: pairs with the Acquire load in `expected`, so a reader
        // that sees the flag also sees the value stored before it (and not
        // the initial 0).
        self.has_expected.store(true, Ordering::Release);
    }

    /// The total given to [`set_expected`](Self::set_expected), if any.
    pub fn expected(&self) -> Option<u64> {
        // Acquire: pairs with the Release store in `set_expected`, making
        // the value written before the flag visible to the load below.
        if self.has_expected.load(Ordering::Acquire) {
            Some(self.expected.load(Ordering::Relaxed))
        } else {
            None
        }
    }

    /// Keys loaded: those the batch loader reported as loaded.
    pub fn keys_done(&self) -> u64 {
        self.keys_done.load(Ordering::Relaxed)
    }

    /// Keys that were dispatched and not loaded: every key of a failed
    /// batch, and the keys a successful batch reported as not loaded.
    pub fn keys_failed(&self) -> u64 {
        self.keys_failed.load(Ordering::Relaxed)
    }

    /// Keys pulled from the stream that no batch finished with: the ones
    /// in the partly filled batch when the run stopped (cancellation, a
    /// stream error, too many failures), plus, if the future of [`warm`]
    /// was dropped, those of the batches dropped with it. Set when the run
    /// ends; `keys_done + keys_failed + keys_skipped` is then exactly the
    /// number of keys pulled.
    pub fn keys_skipped(&self) -> u64 {
        self.keys_skipped.load(Ordering::Relaxed)
    }

    /// Batches whose load returned `Ok`.
    pub fn batches_done(&self) -> u64 {
        self.batches_done.load(Ordering::Relaxed)
    }

    /// Batches whose load returned `Err` or panicked.
    pub fn batches_failed(&self) -> u64 {
        self.batches_failed.load(Ordering::Relaxed)
    }

    /// Batches dispatched and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The adaptive concurrency limit right now (0 before the run starts).
    pub fn concurrency(&self) -> usize {
        self.concurrency.load(Ordering::Relaxed)
    }

    /// `keys_done / expected`, clamped to `[0, 1]`; `None` without an
    /// expected total, and `Some(1.0)` when 0 keys were expected.
    pub fn fraction(&self) -> Option<f64> {
        let expected = self.expected()?;
        if expected == 0 {
            return Some(1.0);
        }
        Some((self.keys_done() as f64 / expected as f64).clamp(0.0, 1.0))
    }

    /// True once [`warm`] has returned (on every path, `Ok` or `Err`) or its
    /// future was dropped. From then on the counters are final.
    pub fn is_finished(&self) -> bool {
        // Acquire: pairs with the Release store when the run ends, so the
        // run's counter updates (all made before that store) are visible to
        // the caller's reads after this one.
        self.finished.load(Ordering::Acquire)
    }
}

/// What a finished warm-up did.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmReport {
    /// Keys the loader reported as loaded.
    pub keys_done: u64,
    /// Keys dispatched and not loaded (see [`WarmProgress::keys_failed`]).
    pub keys_failed: u64,
    /// Keys pulled but never finished by a batch (see
    /// [`WarmProgress::keys_skipped`]); 0 unless `cancelled`.
    pub keys_skipped: u64,
    /// Batches dispatched (all of which finished).
    pub batches: u64,
    /// Of those, batches whose load failed or panicked.
    pub batches_failed: u64,
    /// From the call to the return, on Tokio's clock.
    pub elapsed: Duration,
    /// True if the run stopped because it was cancelled.
    pub cancelled: bool,
}

/// Warms a cache: pulls `keys` lazily, groups them into batches of
/// `config.batch_size`, and calls `load_batch` on each, within every bound
/// of `config`, adapting concurrency to `pressure`, updating `progress` as
/// it goes and stopping early on `cancel`. See the [module docs](self) for
/// the guarantees and the reasons behind them.
///
/// `load_batch` returns how many of its keys it loaded; a count above the
/// batch's length is taken as the whole batch.
///
/// Returns:
/// * `Ok(report)` when the stream is exhausted and every batch has
///   finished (some may have failed), or when `cancel` fired
///   (`report.cancelled`), after the batches in flight finished;
/// * `Err` with the error of the batch that made `max_consecutive_failures`
///   failures in a row, or the stream's error, after the batches in flight
///   finished;
/// * `Err(ErrorKind::InvalidConfig)` at once when `config` is invalid.
///
/// In every case `progress.is_finished()` is true when it returns.
///
/// With `max_keys_per_sec` set, or a `pressure` that can read high, it
/// needs a Tokio runtime with timers enabled (the rate limiter and the
/// [`PRESSURE_PAUSE`] sleep); with neither, it runs on any executor.
/// The returned future is `Send` when the stream, the loader and its
/// future are.
pub async fn warm<K, S, F, Fut>(
    keys: S,
    load_batch: F,
    config: &WarmConfig,
    pressure: &dyn Pressure,
    progress: &WarmProgress,
    cancel: &CancellationToken,
) -> Result<WarmReport, Error>
where
    S: Stream<Item = Result<K, Error>>,
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<u64, Error>>,
{
    let limits = WarmLimits::new(config);
    warm_with_limits(
        keys, load_batch, config, &limits, pressure, progress, cancel,
    )
    .await
}

/// [`warm`] with its concurrency and rate taken from `limits`, which may
/// change while it runs (see [`WarmLimits`]); `config`'s own
/// `max_concurrency` and `max_keys_per_sec` are not used.
pub async fn warm_with_limits<K, S, F, Fut>(
    keys: S,
    load_batch: F,
    config: &WarmConfig,
    limits: &WarmLimits,
    pressure: &dyn Pressure,
    progress: &WarmProgress,
    cancel: &CancellationToken,
) -> Result<WarmReport, Error>
where
    S: Stream<Item = Result<K, Error>>,
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<u64, Error>>,
{
    let started = Instant::now();
    // Relaxed: resetting the flag publishes nothing; a reader that still
    // sees an earlier run's `true` sees that run's final counters.
    progress.finished.store(false, Ordering::Relaxed);
    // From here on `run` ends the run when dropped: on every return below,
    // and when this future is dropped mid-run.
    let mut run = Run::new(progress);
    config.validate().map_err(Error::invalid_config)?;

    let batch_size = config.batch_size;
    // The sender lives in `limits`, borrowed for this whole call, so
    // `changed()` below never fails (a closed channel would make that
    // branch ready on every pass).
    let mut live = limits.live.subscribe();
    let first = *live.borrow_and_update();
    let mut max_concurrency = first.max_concurrency;
    let mut limit = max_concurrency;
    run.publish_limit(limit);
    let mut rate = first.max_keys_per_sec.map(|per_sec| RateLimit {
        per_sec,
        next_at: started,
    });
    let mut keys = pin!(keys);
    let mut building: Vec<K> = Vec::with_capacity(batch_size.min(MAX_PREALLOCATED_KEYS));
    let mut stream_done = false;
    let mut consecutive_failures: u32 = 0;
    let mut stop: Option<Stop> = None;
    let mut cancelled = pin!(cancel.cancelled());
    // Created at the first rate or pressure wait, not before: building a
    // `Sleep` needs a runtime with timers, which a run with neither should
    // not.
    let mut rate_timer = pin!(None::<tokio::time::Sleep>);
    // Set while the next batch waits out `PRESSURE_PAUSE`.
    let mut pressure_pause: Option<Instant> = None;

    loop {
        // Checked here too, not only in the `select!` below: a cancel that
        // lands while the batch is being filled (inside the drain below, or
        // from another thread after `select!` polled the cancel branch) must
        // still keep that batch from starting.
        if stop.is_none() && cancel.is_cancelled() {
            stop = Some(Stop::Cancelled);
        }

        // Dispatch the filled batch if a slot and the rate allow.
        let mut rate_wait = None;
        let batch_ready = building.len() >= batch_size || (stream_done && !building.is_empty());
        if stop.is_none() && batch_ready && run.batches.len() < limit {
            let now = Instant::now();
            match &rate {
                Some(rate) if now < rate.next_at => rate_wait = Some(rate.next_at),
                _ => {
                    // A pause served lets the batch go whatever the signal
                    // says: the floor of progress.
                    let paused_until = pressure_pause.take();
                    let high = pressure.is_high();
                    if high {
                        limit = (limit / 2).max(1);
                        run.publish_limit(limit);
                    }
                    if let Some(until) = paused_until.filter(|until| now < *until) {
                        pressure_pause = Some(until);
                        rate_wait = Some(until);
                    } else if high && limit == 1 && paused_until.is_none() {
                        pressure_pause = Some(now + PRESSURE_PAUSE);
                        rate_wait = pressure_pause;
                    } else if run.batches.len() < limit {
                        let batch = mem::replace(
                            &mut building,
                            Vec::with_capacity(batch_size.min(MAX_PREALLOCATED_KEYS)),
                        );
                        if let Some(rate) = &mut rate {
                            rate.charge(now, batch.len() as u64);
                        }
                        run.dispatch(start_batch(&load_batch, batch));
                        // A loader and stream that are always ready would
                        // otherwise keep this loop from ever yielding.
                        tokio::task::coop::consume_budget().await;
                        continue;
                    }
                }
            }
        }

        if run.batches.is_empty() && (stop.is_some() || (stream_done && building.is_empty())) {
            break;
        }
        if let Some(deadline) = rate_wait {
            match rate_timer.as_mut().as_pin_mut() {
                Some(timer) => timer.reset(deadline),
                None => rate_timer.set(Some(tokio::time::sleep_until(deadline))),
            }
        }
        let want_keys = stop.is_none() && !stream_done && building.len() < batch_size;

        // Never all disabled: with `stop` unset the cancel branch is live,
        // and with it set we broke out above unless batches are in flight.
        tokio::select! {
            biased;
            () = &mut cancelled, if stop.is_none() => stop = Some(Stop::Cancelled),
            Ok(()) = live.changed() => {
                let now_in_force = *live.borrow_and_update();
                max_concurrency = now_in_force.max_concurrency;
                if limit > max_concurrency {
                    limit = max_concurrency;
                    run.publish_limit(limit);
                }
                rate = RateLimit::changed(rate, now_in_force.max_keys_per_sec, Instant::now());
            }
            Some((keys_in_batch, result)) = run.batches.next(), if !run.batches.is_empty() => {
                match result {
                    Ok(loaded) => {
                        run.settle_ok(keys_in_batch, loaded);
                        consecutive_failures = 0;
                        if limit < max_concurrency && !pressure.is_high() {
                            limit += 1;
                            run.publish_limit(limit);
                        }
                    }
                    Err(err) => {
                        run.settle_failed(keys_in_batch);
                        consecutive_failures = consecutive_failures.saturating_add(1);
                        limit = (limit / 2).max(1);
                        run.publish_limit(limit);
                        if consecutive_failures >= config.max_consecutive_failures
                            && stop.is_none()
                        {
                            stop = Some(Stop::Failed(err));
                        }
                    }
                }
            }
            () = async {
                if let Some(timer) = rate_timer.as_mut().as_pin_mut() {
                    timer.await;
                }
            }, if rate_wait.is_some() => {}
            item = keys.next(), if want_keys => {
                // Take whatever else the stream has ready, up to a full
                // batch, without a trip through `select!` per key.
                let mut item = item;
                loop {
                    match item {
                        Some(Ok(key)) => {
                            building.push(key);
                            run.pulled += 1;
                        }
                        Some(Err(err)) => {
                            stop = Some(Stop::Failed(err));
                            break;
                        }
                        None => {
                            stream_done = true;
                            break;
                        }
                    }
                    if building.len() >= batch_size {
                        break;
                    }
                    // Pending here registers a no-op waker; harmless, as
                    // the next `select!` polls the stream again with ours.
                    match keys.next().now_or_never() {
                        Some(next) => item = next,
                        None => break,
                    }
                }
            }
        }
    }

    let report = WarmReport {
        keys_done: run.done,
        keys_failed: run.failed,
        keys_skipped: run.pulled - run.done - run.failed,
        batches: run.batches_ok + run.batches_failed,
        batches_failed: run.batches_failed,
        elapsed: started.elapsed(),
        cancelled: matches!(stop, Some(Stop::Cancelled)),
    };
    match stop {
        Some(Stop::Failed(err)) => Err(err),
        Some(Stop::Cancelled) | None => Ok(report),
    }
    // `run` drops here: counts the skipped keys and marks the run finished.
}

/// Why a run stopped before its stream ended. The first reason sticks: a
/// run cancelled during which the draining batches then fail still reports
/// `cancelled`, and one stopped by failures stays `Err` if cancelled while
/// draining.
enum Stop {
    Cancelled,
    Failed(Error),
}

/// Calls `load_batch` and wraps its future so that it yields the batch's
/// length with its result, and a panic (in the call or in the future)
/// becomes [`ErrorKind::LoadPanicked`].
///
/// `AssertUnwindSafe` is sound here: after a panic the panicking future is
/// gone and only the error survives; any state `load_batch` shares across
/// calls is the caller's to keep consistent, as at any panic boundary.
fn start_batch<K, F, Fut>(
    load_batch: &F,
    batch: Vec<K>,
) -> impl Future<Output = (u64, Result<u64, Error>)>
where
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<u64, Error>>,
{
    let keys = batch.len() as u64;
    let call = catch_unwind(AssertUnwindSafe(|| load_batch(batch)));
    async move {
        let result = match call {
            Ok(load) => AssertUnwindSafe(load)
                .catch_unwind()
                .await
                .unwrap_or_else(|payload| Err(Error::from_panic(&*payload))),
            Err(payload) => Err(Error::from_panic(&*payload)),
        };
        (keys, result)
    }
}

/// The generic cell rate algorithm (GCRA) with no burst allowance: a batch
/// may start once the
/// clock reaches `next_at`, and starting a batch of `n` keys moves `next_at`
/// to `max(next_at, now) + n / per_sec`. By induction the keys of all
/// earlier batches fit in `per_sec × (next_at - start)`, so the keys
/// dispatched by any time `t` stay within `per_sec × t + one batch`. Idle
/// time earns no credit (the `max`), so a stall is never followed by a
/// burst.
struct RateLimit {
    per_sec: u32,
    next_at: Instant,
}

impl RateLimit {
    /// The limiter after the rate became `per_sec` at `now`. A higher rate
    /// lifts the wait the old one had scheduled (the operator asked for
    /// more, now); a lower one keeps it and charges the next batches at
    /// the new rate. Either way the keys dispatched in the `t` seconds
    /// after the change stay within `per_sec × t + one batch`.
    fn changed(old: Option<RateLimit>, per_sec: Option<u32>, now: Instant) -> Option<RateLimit> {
        let per_sec = per_sec?;
        Some(match old {
            Some(old) if per_sec <= old.per_sec => RateLimit {
                per_sec,
                next_at: old.next_at,
            },
            Some(old) => RateLimit {
                per_sec,
                next_at: old.next_at.min(now),
            },
            None => RateLimit {
                per_sec,
                next_at: now,
            },
        })
    }

    fn charge(&mut self, now: Instant, keys: u64) {
        // Rounded up, so the schedule only ever errs on the slow side.
        let nanos = (u128::from(keys) * 1_000_000_000).div_ceil(u128::from(self.per_sec));
        let cost = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.next_at = self.next_at.max(now) + cost.min(MAX_BATCH_COST);
    }
}

/// The batches in flight and the run's own counts (the report is built
/// from these, not read back from the shared atomics). Ends the run when
/// dropped, whether [`warm`] returned or its future was dropped.
struct Run<'a, B> {
    progress: &'a WarmProgress,
    batches: FuturesUnordered<B>,
    pulled: u64,
    done: u64,
    failed: u64,
    batches_ok: u64,
    batches_failed: u64,
}

impl<'a, B: Future> Run<'a, B> {
    fn new(progress: &'a WarmProgress) -> Self {
        Run {
            progress,
            batches: FuturesUnordered::new(),
            pulled: 0,
            done: 0,
            failed: 0,
            batches_ok: 0,
            batches_failed: 0,
        }
    }

    fn publish_limit(&self, limit: usize) {
        // Relaxed: a gauge (see `WarmProgress`); only this run writes it.
        self.progress.concurrency.store(limit, Ordering::Relaxed);
    }

    fn dispatch(&mut self, batch: B) {
        // Relaxed: a gauge (see `WarmProgress`).
        self.progress.in_flight.fetch_add(1, Ordering::Relaxed);
        self.batches.push(batch);
    }

    fn settle_ok(&mut self, keys: u64, loaded: u64) {
        let loaded = loaded.min(keys);
        self.done += loaded;
        self.failed += keys - loaded;
        self.batches_ok += 1;
        // Relaxed, all four: independent gauges (see `WarmProgress`); the
        // Release store of `finished` publishes their final values.
        let progress = self.progress;
        progress.keys_done.fetch_add(loaded, Ordering::Relaxed);
        progress
            .keys_failed
            .fetch_add(keys - loaded, Ordering::Relaxed);
        progress.batches_done.fetch_add(1, Ordering::Relaxed);
        progress.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn settle_failed(&mut self, keys: u64) {
        self.failed += keys;
        self.batches_failed += 1;
        // Relaxed, all three: as in `settle_ok`.
        let progress = self.progress;
        progress.keys_failed.fetch_add(keys, Ordering::Relaxed);
        progress.batches_failed.fetch_add(1, Ordering::Relaxed);
        progress.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<B> Drop for Run<'_, B> {
    fn drop(&mut self) {
        // Batches still here only when the future of `warm` was dropped
        // mid-run: drop them first, so that no load of this run is running
        // once `finished` reads true.
        let dropped = self.batches.len();
        self.batches.clear();
        let skipped = self.pulled - self.done - self.failed;
        // Relaxed, both: gauges, published by the Release store below.
        self.progress
            .in_flight
            .fetch_sub(dropped, Ordering::Relaxed);
        self.progress
            .keys_skipped
            .fetch_add(skipped, Ordering::Relaxed);
        // Release: pairs with the Acquire load in `is_finished`, so a reader
        // that sees `true` sees every counter update this run made before.
        self.progress.finished.store(true, Ordering::Release);
    }
}
