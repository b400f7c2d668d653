//! What the cache keeps per key and what it answers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Instant;

/// Where an answer came from: the `x-cache` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStatus {
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
    /// The load had not answered within `stale_if_slow`, and an expired
    /// value still in its stale-if-error window was answered; the load goes
    /// on in the background and fills the cache when it lands.
    StaleIfSlow,
}

impl CacheStatus {
    /// Every status, for metrics that pre-register one series each.
    pub const ALL: [CacheStatus; 8] = [
        CacheStatus::Hit,
        CacheStatus::Stale,
        CacheStatus::L2,
        CacheStatus::Miss,
        CacheStatus::Coalesced,
        CacheStatus::Negative,
        CacheStatus::StaleIfError,
        CacheStatus::StaleIfSlow,
    ];

    /// The `x-cache` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Stale => "stale",
            CacheStatus::L2 => "l2",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Negative => "negative",
            CacheStatus::StaleIfError => "stale-if-error",
            CacheStatus::StaleIfSlow => "stale-if-slow",
        }
    }
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One cached answer for one key, with its deadlines on the local clock.
///
/// Kept small: the hit path touches its reference count, and at 100k keys
/// the entries' footprint shows in hit throughput; at 1 M keys it is a
/// third of the memory a key costs. Hence every time after `fresh_until`
/// or before it as a millisecond offset rather than another instant, and
/// the refresh flag folded into the load time's word: 56 bytes with a
/// `Bytes` value, so that with its reference counts it fits glibc's
/// 80-byte chunk rather than the 96-byte one (BENCHMARKS.md, memory per
/// cached key). A size test below holds it there.
#[derive(Debug)]
pub struct Entry<V> {
    pub(crate) value: Option<V>,
    pub(crate) fresh_until: Instant,
    /// How long before `fresh_until` the value was read from the source,
    /// in ms (its age at `fresh_until`).
    fresh_for_ms: u32,
    /// Stale-while-revalidate window after `fresh_until`, in ms.
    grace_ms: u32,
    /// Stale-if-error window after `fresh_until`, in ms.
    error_ms: u32,
    /// How long the load took, in µs (for early refresh; at most
    /// `LOAD_MICROS_MAX`), and in the top bit (`REFRESHING`) whether a
    /// stale hit has started a refresh, so a hot stale key starts one
    /// refresh, not one per request.
    load_micros_and_refreshing: AtomicU32,
}

/// The refresh flag's bit in `load_micros_and_refreshing`.
const REFRESHING: u32 = 1 << 31;
/// The longest load time an entry keeps: ~36 minutes, far past any load
/// timeout.
const LOAD_MICROS_MAX: u32 = REFRESHING - 1;

/// What L1 stores per key: the entry and, inline in the map's own slot (16
/// bytes, like a bare `Arc<str>` value), the moment until which a lookup may
/// answer a plain `hit` without reading further. So the hit path is the map
/// lookup and one comparison (measured: BENCHMARKS.md, hit path).
pub(crate) struct L1Slot<V> {
    /// The entry's fresh deadline for a present value when early refresh is
    /// off; the origin of time otherwise (a negative entry, or early refresh
    /// on), which sends every lookup down the full freshness check.
    pub(crate) hit_until: Instant,
    pub(crate) entry: Arc<Entry<V>>,
}

impl<V> Clone for L1Slot<V> {
    fn clone(&self) -> Self {
        L1Slot {
            hit_until: self.hit_until,
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
    /// An entry fresh until `fresh_until`, then stale for `grace`, then kept
    /// as a fallback until `stale_if_error` after `fresh_until`. Windows
    /// longer than ~49 days are cut to that.
    pub(crate) fn new(
        value: Option<V>,
        loaded_at: Instant,
        fresh_until: Instant,
        grace: Duration,
        stale_if_error: Duration,
        load_time: Duration,
    ) -> Self {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let load_micros = u32::try_from(load_time.as_micros())
            .unwrap_or(u32::MAX)
            .min(LOAD_MICROS_MAX);
        Entry {
            value,
            fresh_until,
            fresh_for_ms: ms(fresh_until.saturating_duration_since(loaded_at)),
            grace_ms: ms(grace),
            error_ms: ms(stale_if_error),
            load_micros_and_refreshing: AtomicU32::new(load_micros),
        }
    }

    /// When the value was read from the source (to the millisecond; an age
    /// past ~49 days at `fresh_until` reads as that).
    pub(crate) fn loaded_at(&self) -> Instant {
        self.fresh_until
            .checked_sub(Duration::from_millis(u64::from(self.fresh_for_ms)))
            .unwrap_or(Instant::ORIGIN)
    }

    /// The value; `None` when the key does not exist.
    pub fn value(&self) -> Option<&V> {
        self.value.as_ref()
    }

    /// The slot L1 keeps for this entry; `early_refresh` says whether hits
    /// must roll the XFetch dice (then none may take the short cut).
    pub(crate) fn l1_slot(self: &Arc<Self>, early_refresh: bool) -> L1Slot<V> {
        let plain_hit = self.value.is_some() && !early_refresh;
        L1Slot {
            hit_until: if plain_hit {
                self.fresh_until
            } else {
                Instant::ORIGIN
            },
            entry: Arc::clone(self),
        }
    }

    pub(crate) fn freshness(&self, now: Instant) -> Freshness {
        if now < self.fresh_until {
            return Freshness::Fresh;
        }
        if self.value.is_none() {
            // A negative entry has no grace: absence is cheap to re-check,
            // and a key that was just created should appear soon.
            return Freshness::Expired;
        }
        let past = now.saturating_duration_since(self.fresh_until);
        if past < Duration::from_millis(u64::from(self.grace_ms)) {
            Freshness::Stale
        } else if past < Duration::from_millis(u64::from(self.error_ms)) {
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
        let load_micros = self.load_micros_and_refreshing.load(Ordering::Relaxed) & LOAD_MICROS_MAX;
        let load_time = Duration::from_micros(u64::from(load_micros));
        let gap = load_time.as_secs_f64() * beta * -random.max(f64::MIN_POSITIVE).ln();
        match Duration::try_from_secs_f64(gap) {
            Ok(gap) => now + gap >= self.fresh_until,
            Err(_) => true,
        }
    }

    /// True for exactly one caller until [`refresh_failed`](Self::refresh_failed).
    pub(crate) fn claim_refresh(&self) -> bool {
        // Relaxed: the flag only elects one refresher; the refresh itself is
        // synchronised by the flight and the generations.
        self.load_micros_and_refreshing
            .fetch_or(REFRESHING, Ordering::Relaxed)
            & REFRESHING
            == 0
    }

    pub(crate) fn refresh_failed(&self) {
        self.load_micros_and_refreshing
            .fetch_and(!REFRESHING, Ordering::Relaxed);
    }
}

/// An answer: the entry and where it came from.
///
/// Two words, so that a hit travels through [`get`]'s future in registers
/// (a third word, the answer's time, cost a quarter of the hit path's
/// throughput: BENCHMARKS.md). Its age is asked of the cache, which owns
/// the clock: [`TieredCache::age`].
///
/// [`get`]: super::TieredCache::get
/// [`TieredCache::age`]: super::TieredCache::age
#[derive(Debug, Clone)]
pub struct Lookup<V> {
    pub(crate) entry: Arc<Entry<V>>,
    pub(crate) status: CacheStatus,
}

impl<V> Lookup<V> {
    /// The value; `None` when the key does not exist.
    pub fn value(&self) -> Option<&V> {
        self.entry.value.as_ref()
    }

    /// Where the answer came from (the `x-cache` header).
    pub fn status(&self) -> CacheStatus {
        self.status
    }

    /// Time from when the value was read from the source until `now` (on
    /// the clock of the cache that answered).
    pub fn age_at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.entry.loaded_at())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry with its two reference counts must fit glibc's 80-byte
    /// chunk (72 bytes of payload): a byte more costs 16 a cached key.
    #[test]
    fn an_entry_of_bytes_stays_within_glibcs_80_byte_chunk() {
        assert_eq!(std::mem::size_of::<Entry<bytes::Bytes>>(), 56);
    }

    /// The refresh flag and the load time share a word: setting and
    /// clearing one leaves the other.
    #[test]
    fn the_refresh_flag_leaves_the_load_time_alone() {
        let at = Instant::ORIGIN + Duration::from_secs(100);
        let entry = Entry::new(
            Some(1u8),
            at,
            at + Duration::from_secs(60),
            Duration::from_secs(10),
            Duration::from_secs(300),
            Duration::from_micros(1_234),
        );
        assert!(entry.claim_refresh());
        assert!(!entry.claim_refresh());
        let word = entry.load_micros_and_refreshing.load(Ordering::Relaxed);
        assert_eq!(word & LOAD_MICROS_MAX, 1_234);
        entry.refresh_failed();
        assert!(entry.claim_refresh());
        assert_eq!(entry.loaded_at(), at);
        let slow = Entry::new(
            Some(1u8),
            at,
            at,
            Duration::ZERO,
            Duration::ZERO,
            Duration::MAX,
        );
        assert!(
            slow.claim_refresh(),
            "a huge load time must not set the flag"
        );
    }
}
