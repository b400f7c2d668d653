//! A bulkhead: at most `max_concurrent` calls run at once, at most
//! `max_queued` more wait (each for at most `max_wait`), everyone else is
//! turned away at once.
//!
//! Why bound the queue as well as the concurrency: a bulkhead with an
//! unbounded queue only moves the pile-up from the dependency into this
//! process's memory, and every queued caller still waits out its own
//! timeout. Rejecting early (`BulkheadFull`) is what lets an overloaded
//! service shed load in microseconds instead of seconds.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::sync::ArcCell;
use crate::{Error, ErrorKind};

/// How many calls a [`Bulkhead`] lets run, how many may wait, and for how
/// long.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct BulkheadConfig {
    /// Calls allowed to run at once. Default 16: enough to keep a typical
    /// connection pool busy, small enough that one slow dependency cannot
    /// take every worker of the process with it.
    pub max_concurrent: usize,
    /// Callers allowed to wait for a slot; the next one gets
    /// [`ErrorKind::BulkheadFull`] without waiting. Default 64 (four waiters per
    /// slot): absorbs a burst, but not a sustained overload.
    pub max_queued: usize,
    /// Longest a caller waits in the queue before [`ErrorKind::BulkheadTimeout`].
    /// Default 500 ms: a queued caller that has waited longer has usually
    /// been given up on by its own caller already, and a cache counts a
    /// refusal against its source's breaker once no slot has been free and
    /// no call answered for this long ([`Bulkhead::stalled`]), so this
    /// bounds how long a stalled source goes unnoticed. `Duration::ZERO`
    /// means "never wait" (and every refusal then counts as a stall).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_wait: Duration,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent: 16,
            max_queued: 64,
            max_wait: Duration::from_millis(500),
        }
    }
}

impl BulkheadConfig {
    /// Checks the config, naming the first bad field.
    ///
    /// [`Bulkhead::new`] never panics on a bad config (see there); call this
    /// where configs are loaded to reject them instead.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent == 0 {
            return Err("max_concurrent must be >= 1".to_owned());
        }
        if self.max_concurrent > Semaphore::MAX_PERMITS {
            return Err(format!(
                "max_concurrent must be <= {} (tokio's semaphore limit), got {}",
                Semaphore::MAX_PERMITS,
                self.max_concurrent
            ));
        }
        Ok(())
    }
}

/// A concurrency limit with a bounded, time-limited wait queue.
///
/// Cloning is cheap and every clone shares the same slots.
///
/// Why `tokio::sync::Semaphore`: it is fair (a freed slot goes to the
/// longest waiter, so a late caller cannot barge past the queue), its
/// waiters are cancel-safe (a dropped `acquire` future leaves the wait list
/// and hands back a slot it was just given), and its owned permits release
/// on drop, so a slot comes back however the holder ends: return, `?`,
/// panic or cancellation. The semaphore alone has no queue bound, hence the
/// separate `queued` counter.
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    /// The limits in force; replaced whole by `set_limits`.
    config: ArcCell<BulkheadConfig>,
    semaphore: Arc<Semaphore>,
    /// Slots to retire when they come back: a shrink below the slots
    /// handed out cannot take them from their holders, so the next ones
    /// released are forgotten instead of returned, until this is paid.
    debt: AtomicUsize,
    /// Serialises `set_limits` (rare), so two resizes never interleave
    /// their reads of the old limit with each other's permit changes.
    resizing: crate::sync::Mutex<()>,
    /// Callers currently waiting for a slot. Only ever changed through
    /// [`QueuePlace`], so a waiter that is cancelled still gives its place
    /// back.
    queued: AtomicUsize,
    /// When the bulkhead last saw its dependency keep up: a slot taken
    /// free, or a call answered ([`BulkheadPermit::answered`]); µs since
    /// `born`. Read by [`Bulkhead::stalled`].
    kept_up_at: AtomicU64,
    born: tokio::time::Instant,
}

impl Bulkhead {
    /// Creates a bulkhead. `name` appears in its errors (name it after the
    /// dependency it guards).
    ///
    /// Never panics: a `max_concurrent` above tokio's
    /// [`Semaphore::MAX_PERMITS`] is lowered to it, and `max_concurrent == 0`
    /// gives a bulkhead that admits nothing (every caller queues and times
    /// out, or is rejected). [`BulkheadConfig::validate`] rejects both.
    pub fn new(name: impl Into<Arc<str>>, config: BulkheadConfig) -> Self {
        let mut config = config;
        config.max_concurrent = config.max_concurrent.min(Semaphore::MAX_PERMITS);
        Bulkhead {
            inner: Arc::new(Inner {
                name: name.into(),
                semaphore: Arc::new(Semaphore::new(config.max_concurrent)),
                config: ArcCell::new(crate::sync::Arc::new(config)),
                queued: AtomicUsize::new(0),
                kept_up_at: AtomicU64::new(0),
                born: tokio::time::Instant::now(),
                debt: AtomicUsize::new(0),
                resizing: crate::sync::Mutex::new(()),
            }),
        }
    }

    /// Takes a slot, waiting for one if needed.
    ///
    /// A free slot is taken at once. Otherwise the caller joins the queue if
    /// fewer than `max_queued` callers are already waiting, and gets
    /// [`ErrorKind::BulkheadFull`] at once if not. A queued caller gets
    /// [`ErrorKind::BulkheadTimeout`] after `max_wait`.
    ///
    /// Cancel-safe: dropping the future gives back its queue place, and a
    /// slot it had just been handed.
    ///
    /// Waiting uses `tokio::time`, so a call that has to queue must run
    /// inside a Tokio runtime with the time driver enabled.
    pub async fn acquire(&self) -> Result<BulkheadPermit, Error> {
        if let Ok(permit) = self.try_acquire() {
            return Ok(permit);
        }
        let _place = self.join_queue()?;
        let start = tokio::time::Instant::now();
        let wait = Arc::clone(&self.inner.semaphore).acquire_owned();
        let max_wait = self.inner.config.load().max_wait;
        match tokio::time::timeout(max_wait, wait).await {
            Ok(Ok(permit)) => Ok(self.permit(permit)),
            // The semaphore is private and `close` is never called on it.
            Ok(Err(_closed)) => unreachable!("a bulkhead's semaphore is never closed"),
            Err(_elapsed) => Err(ErrorKind::BulkheadTimeout {
                name: Arc::clone(&self.inner.name),
                waited: start.elapsed(),
            }
            .into()),
        }
        // `_place` drops here, leaving the queue whatever the outcome.
    }

    /// Takes a free slot, or fails with [`ErrorKind::BulkheadFull`] at once;
    /// never waits and never joins the queue.
    ///
    /// It cannot jump the queue either: while callers wait, every freed
    /// slot is handed straight to the oldest of them.
    pub fn try_acquire(&self) -> Result<BulkheadPermit, Error> {
        let permit = Arc::clone(&self.inner.semaphore)
            .try_acquire_owned()
            .map_err(|_no_permits_or_closed| self.full())?;
        // A free slot: whatever the dependency is doing, it is not holding
        // every slot.
        self.inner.kept_up();
        Ok(self.permit(permit))
    }

    /// Whether the dependency looks stalled rather than busy: for the last
    /// `max_wait` every slot has been held and no call was answered.
    ///
    /// Why a caller refused by the bulkhead asks this: a refusal while the
    /// dependency is answering (a burst of misses on a cold pool, right
    /// after an outage) is this process's overload, not the dependency's
    /// failure, and counting it against the dependency's breaker re-opens
    /// a breaker that has just closed (measured in `rampart drill scenario
    /// db-outage`: error-free 14 s after the stall instead of 2 s). A
    /// refusal while nothing has moved for a whole `max_wait` is the sign
    /// of a stall, and counting it opens the breaker within about one
    /// wait, long before the stalled calls reach their own timeout.
    pub fn stalled(&self) -> bool {
        let inner = &*self.inner;
        // Relaxed: a timestamp read on its own; nothing else is published
        // through it.
        let kept_up_at = Duration::from_micros(inner.kept_up_at.load(Ordering::Relaxed));
        let now = tokio::time::Instant::now().saturating_duration_since(inner.born);
        now.saturating_sub(kept_up_at) >= inner.config.load().max_wait
    }

    /// Runs `fut` in a slot: [`acquire`](Self::acquire)s one, awaits `fut`,
    /// and releases the slot when `fut` finishes, panics or is dropped.
    ///
    /// `fut` is not polled (so does no work) until a slot is held.
    pub async fn run<F: Future>(&self, fut: F) -> Result<F::Output, Error> {
        let _permit = self.acquire().await?;
        Ok(fut.await)
    }

    fn permit(&self, permit: OwnedSemaphorePermit) -> BulkheadPermit {
        BulkheadPermit {
            permit: Some(permit),
            inner: Arc::clone(&self.inner),
        }
    }

    /// Slots currently handed out.
    pub fn in_flight(&self) -> usize {
        // Relaxed: a gauge (see `queued`). Slots owed to a shrink are
        // still held, so they count.
        let debt = self.inner.debt.load(Ordering::Relaxed);
        (self.inner.config.load().max_concurrent + debt)
            .saturating_sub(self.inner.semaphore.available_permits())
    }

    /// Callers currently waiting for a slot.
    pub fn queued(&self) -> usize {
        // Relaxed: a gauge for metrics and tests; nothing is read on the
        // strength of its value, so no ordering with other memory is needed.
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// The name given to [`new`](Self::new).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The config in force (after the clamping described at
    /// [`new`](Self::new)); a copy, as [`set_limits`](Self::set_limits) may
    /// replace it.
    pub fn config(&self) -> BulkheadConfig {
        BulkheadConfig::clone(&self.inner.config.load())
    }

    /// Changes the limits while the bulkhead runs. Refused (the running
    /// limits kept) when `config` fails [`BulkheadConfig::validate`].
    ///
    /// Growing adds slots at once (waiters take them in order). Shrinking
    /// takes the free slots at once and never interrupts a running call:
    /// slots above the new limit are retired as their holders release
    /// them, so `in_flight` falls to the new limit as calls finish (a
    /// slot released while the change is being made may still be handed
    /// to one more caller first). A new `max_queued` or
    /// `max_wait` applies to callers arriving after the change.
    pub fn set_limits(&self, config: BulkheadConfig) -> Result<(), Error> {
        config
            .validate()
            .map_err(|e| Error::invalid_config(format!("bulkhead `{}`: {e}", self.inner.name)))?;
        let inner = &*self.inner;
        let _one_at_a_time = inner.resizing.lock();
        let old = inner.config.load().max_concurrent;
        let new = config.max_concurrent;
        if new > old {
            // Cancel retirements still owed before adding slots.
            let paid = take_up_to(&inner.debt, new - old);
            inner.semaphore.add_permits(new - old - paid);
        } else if new < old {
            let cut = old - new;
            let taken = inner.semaphore.forget_permits(cut);
            // Relaxed: `debt` publishes nothing but itself; every update
            // is an atomic read-modify-write, so none is lost.
            inner.debt.fetch_add(cut - taken, Ordering::Relaxed);
        }
        inner.config.store(crate::sync::Arc::new(config));
        Ok(())
    }

    /// Reserves a queue place, or fails if `max_queued` callers already wait.
    fn join_queue(&self) -> Result<QueuePlace<'_>, Error> {
        let max_queued = self.inner.config.load().max_queued;
        self.inner
            .queued
            // Relaxed: the bound needs only the atomicity of the
            // read-modify-write (each update sees the latest value in the
            // counter's modification order, so two callers can never both
            // take the last place); the counter publishes no other data,
            // so there is nothing for acquire/release to order. A CAS loop
            // rather than `fetch_add` + undo, so the count never even
            // transiently exceeds `max_queued`.
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max_queued).then(|| n + 1)
            })
            .map(|_| QueuePlace(&self.inner.queued))
            .map_err(|_| self.full())
    }

    fn full(&self) -> Error {
        let config = self.inner.config.load();
        ErrorKind::BulkheadFull {
            name: Arc::clone(&self.inner.name),
            max_concurrent: config.max_concurrent,
            max_queued: config.max_queued,
        }
        .into()
    }
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.inner.name)
            .field("config", &self.config())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}

/// One place in a bulkhead's queue, given back on drop, so the count stays
/// right when the waiting future is dropped mid-wait.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        // Relaxed: same reasoning as in `join_queue`; the decrement only has
        // to be atomic, and it cannot underflow because it pairs with the
        // increment that created this place.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A slot in a [`Bulkhead`], released when dropped: on return, on `?`, on
/// panic (drops run during unwinding) and on cancellation (the holding
/// future is dropped).
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct BulkheadPermit {
    /// Taken in `drop`: returned to the semaphore, or forgotten to pay a
    /// shrink's debt.
    permit: Option<OwnedSemaphorePermit>,
    inner: Arc<Inner>,
}

impl BulkheadPermit {
    /// The call this slot was held for got its answer from the dependency
    /// (see [`Bulkhead::stalled`]); releases the slot.
    pub fn answered(self) {
        self.inner.kept_up();
    }
}

impl Inner {
    fn kept_up(&self) {
        let now = tokio::time::Instant::now().saturating_duration_since(self.born);
        let micros = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        // Relaxed: a timestamp, never lowered (`fetch_max`); a read that
        // misses the newest store only errs towards "stalled" by the
        // microseconds between two answers.
        if self.kept_up_at.load(Ordering::Relaxed) < micros {
            self.kept_up_at.fetch_max(micros, Ordering::Relaxed);
        }
    }
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            // One relaxed load when nothing is owed (the common case).
            if take_up_to(&self.inner.debt, 1) == 1 {
                permit.forget();
            }
        }
    }
}

/// Takes up to `n` from `counter` without going below zero; returns what
/// was taken.
fn take_up_to(counter: &AtomicUsize, n: usize) -> usize {
    // Relaxed: the counter publishes no other data; the CAS makes each
    // take atomic, so two takers never both take the last unit.
    match counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |owed| {
        (owed > 0).then(|| owed - owed.min(n))
    }) {
        Ok(owed) => owed.min(n),
        Err(_) => 0,
    }
}

impl fmt::Debug for BulkheadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadPermit").finish_non_exhaustive()
    }
}
