//! What the cache keeps per key and what it answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Instant;

/// Where an answer came from: the `x-cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A fresh L1 entry.
    Hit,
    /// An L1 entry past its TTL but within grace; a refresh was started.
    Stale,
    /// Read from the shared tier.
    L2,
    /// This call loaded it from the source.
    Miss,
    /// This call waited for another call's load and shares its answer.
    Coalesced,
    /// A cached "this key does not exist".
    Negative,
    /// The source failed or a guard refused, and an expired value still in
    /// its stale-if-error window was answered.
    StaleIfError,
}

impl Source {
    /// Every source, for metrics that pre-register one series each.
    pub const ALL: [Source; 7] = [
        Source::Hit,
        Source::Stale,
        Source::L2,
        Source::Miss,
        Source::Coalesced,
        Source::Negative,
        Source::StaleIfError,
    ];

    /// The `x-cache` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Hit => "hit",
            Source::Stale => "stale",
            Source::L2 => "l2",
            Source::Miss => "miss",
            Source::Coalesced => "coalesced",
            Source::Negative => "negative",
            Source::StaleIfError => "stale-if-error",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One cached answer for one key, with its deadlines on the local clock.
#[derive(Debug)]
pub struct Entry<V> {
    pub(crate) value: Option<V>,
    pub(crate) loaded_at: Instant,
    pub(crate) fresh_until: Instant,
    pub(crate) grace_until: Instant,
    pub(crate) error_until: Instant,
    pub(crate) load_time: Duration,
    /// Set by the first stale hit that starts a refresh, so a hot stale key
    /// starts one refresh, not one per request.
    refreshing: AtomicBool,
}

/// What L1 stores per key: the entry plus a copy of what a fresh hit needs,
/// inline in the map's own slot. A fresh hit then reads only memory the map
/// lookup already touched, instead of also chasing the entry's allocation
/// (measured: BENCHMARKS.md, hit path).
pub(crate) struct L1Slot<V> {
    pub(crate) fresh_until: Instant,
    pub(crate) negative: bool,
    pub(crate) entry: Arc<Entry<V>>,
}

impl<V> Clone for L1Slot<V> {
    fn clone(&self) -> Self {
        L1Slot {
            fresh_until: self.fresh_until,
            negative: self.negative,
            entry: Arc::clone(&self.entry),
        }
    }
}

/// How usable an entry is at a given moment.
pub(crate) enum Freshness {
    Fresh,
    /// Past its TTL, within grace: serve, and refresh in the background.
    Stale,
    /// Past grace, within stale-if-error: keep as a fallback, load.
    Fallback,
    Expired,
}

impl<V> Entry<V> {
    pub(crate) fn new(
        value: Option<V>,
        loaded_at: Instant,
        fresh_until: Instant,
        grace_until: Instant,
        error_until: Instant,
        load_time: Duration,
    ) -> Self {
        Entry {
            value,
            loaded_at,
            fresh_until,
            grace_until,
            error_until,
            load_time,
            refreshing: AtomicBool::new(false),
        }
    }

    /// The value; `None` when the key does not exist.
    pub fn value(&self) -> Option<&V> {
        self.value.as_ref()
    }

    /// The copy of this entry's hot fields that L1 keeps inline.
    pub(crate) fn l1_slot(self: &Arc<Self>) -> L1Slot<V> {
        L1Slot {
            fresh_until: self.fresh_until,
            negative: self.value.is_none(),
            entry: Arc::clone(self),
        }
    }

    pub(crate) fn freshness(&self, now: Instant) -> Freshness {
        if now < self.fresh_until {
            Freshness::Fresh
        } else if self.value.is_none() {
            // A negative entry has no grace: absence is cheap to re-check,
            // and a key that was just created should appear soon.
            Freshness::Expired
        } else if now < self.grace_until {
            Freshness::Stale
        } else if now < self.error_until {
            Freshness::Fallback
        } else {
            Freshness::Expired
        }
    }

    /// XFetch (Vattani et al. 2015): refresh early with a probability that
    /// grows as expiry nears and with how long a load takes, so a hot key is
    /// refreshed by one caller before it expires for all of them.
    #[cold]
    pub(crate) fn wants_early_refresh(&self, now: Instant, beta: f64) -> bool {
        let random: f64 = fastrand::f64();
        // ln(random) <= 0; a zero draw means "refresh now".
        let gap = self.load_time.as_secs_f64() * beta * -random.max(f64::MIN_POSITIVE).ln();
        match Duration::try_from_secs_f64(gap) {
            Ok(gap) => now + gap >= self.fresh_until,
            Err(_) => true,
        }
    }

    /// True for exactly one caller until [`refresh_failed`](Self::refresh_failed).
    pub(crate) fn claim_refresh(&self) -> bool {
        // Relaxed: the flag only elects one refresher; the refresh itself is
        // synchronised by the flight and the generations.
        !self.refreshing.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn refresh_failed(&self) {
        self.refreshing.store(false, Ordering::Relaxed);
    }
}

/// An answer: the entry, where it came from, and how old it is.
#[derive(Debug, Clone)]
pub struct Lookup<V> {
    pub(crate) entry: Arc<Entry<V>>,
    pub(crate) source: Source,
    /// When it was answered; the age is derived on demand so the hit path
    /// does not pay for it.
    pub(crate) answered_at: Instant,
}

impl<V> Lookup<V> {
    /// The value; `None` when the key does not exist.
    pub fn value(&self) -> Option<&V> {
        self.entry.value.as_ref()
    }

    /// Where the answer came from (the `x-cache` header).
    pub fn source(&self) -> Source {
        self.source
    }

    /// Time since the value was read from the source (the `age` header).
    pub fn age(&self) -> Duration {
        self.answered_at
            .saturating_duration_since(self.entry.loaded_at)
    }
}
