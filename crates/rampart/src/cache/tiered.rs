//! [`TieredCache`]: the read path that ties the guards together.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::admission::Admission;
use super::config::{CacheConfig, LeaseTimeoutPolicy};
use super::entry::{CacheStatus, Entry, Freshness, L1Slot, Lookup};
use super::generation::Generations;
use super::lease::{Acquired, Lease, LeaseGuard};
use super::loader::Loader;
use super::refresh::{self, RefreshQueue};
use super::tier::{FillOutcome, Stored, Tier, TierRead};
use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::clock::{Clock, Instant, WallClock};
use crate::existence::ExistenceFilter;
use crate::flight::{Flight, Role};
use crate::guarded::Guarded;
use crate::limit::{Bulkhead, BulkheadConfig};
use crate::sync::ArcCell;
use crate::{Error, ErrorKind};

/// A read-through cache: L1 in process, an optional shared L2 [`Tier`], an
/// optional cross-process [`Lease`], and a [`Loader`] behind a circuit
/// breaker and a bulkhead. Cheap to clone; clones share everything.
pub struct TieredCache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for TieredCache<K, V> {
    fn clone(&self) -> Self {
        TieredCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<K, V> {
    name: Arc<str>,
    /// The settings in force: swapped whole by `set_config`, loaded (no
    /// lock) by the slow paths that read them. The hit path reads none:
    /// an L1 slot carries its own deadline.
    config: ArcCell<CacheConfig>,
    l1: quick_cache::sync::Cache<K, L1Slot<V>>,
    l1_generations: Generations,
    flight: Flight<K, Fetched<V>>,
    /// Off only to measure a stampede without it (`rampart drill scenario
    /// stampede`): every miss then loads on its own.
    single_flight: bool,
    tier: Option<Arc<dyn Tier<K, V>>>,
    lease: Option<Arc<dyn Lease<K>>>,
    loader: Arc<dyn Loader<K, V>>,
    breaker: Option<CircuitBreaker>,
    bulkhead: Option<Bulkhead>,
    existence: Option<ExistenceFilter>,
    admission: Option<Arc<dyn Admission>>,
    clock: Clock,
    wall: WallClock,
    stats: Counters,
    refreshes: RefreshQueue<K, V>,
}

/// Every key's generation at one moment: what
/// [`TieredCache::fill_loaded`] checks rows read after it against.
pub struct FillTicket {
    /// The cache it was taken from (its shared state's address): another
    /// cache's stripes would mean nothing.
    cache: usize,
    taken_at: Instant,
    generations: Box<[u64]>,
}

/// What one flight produced: shared by its leader and followers.
struct Fetched<V> {
    entry: Arc<Entry<V>>,
    status: CacheStatus,
}

impl<V> Clone for Fetched<V> {
    fn clone(&self) -> Self {
        Fetched {
            entry: Arc::clone(&self.entry),
            status: self.status,
        }
    }
}

/// Counters of the cache's slow paths (hits are counted by the caller from
/// [`Lookup::status`], so the hit path touches no shared counter).
#[derive(Default)]
struct Counters {
    loads: AtomicU64,
    load_errors: AtomicU64,
    tier_errors: AtomicU64,
    fills_refused: AtomicU64,
    refreshes: AtomicU64,
    lease_waits: AtomicU64,
    lease_timeouts: AtomicU64,
    stale_if_slow: AtomicU64,
}

/// A snapshot of a cache's slow-path counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Loads sent to the source (single and batch calls).
    pub loads: u64,
    /// Loads that failed, timed out, panicked or were refused by a guard.
    pub load_errors: u64,
    /// Shared-tier reads or writes that failed (and were skipped).
    pub tier_errors: u64,
    /// Fills refused because the key was invalidated meanwhile.
    pub fills_refused: u64,
    /// Background refreshes started (stale hits and early refreshes).
    pub refreshes: u64,
    /// Times this cache lost a lease and waited for another holder.
    pub lease_waits: u64,
    /// Of those, waits that ran out.
    pub lease_timeouts: u64,
    /// Answers from a kept value because the load was slower than
    /// `stale_if_slow`.
    pub stale_if_slow: u64,
    /// Keys being loaded right now (background refreshes included, from
    /// when they are queued).
    pub in_flight: u64,
    /// Callers waiting on those loads (coalesced onto them) right now.
    pub waiting: u64,
    /// Entries in L1.
    pub l1_entries: u64,
}

fn bump(counter: &AtomicU64) {
    // Relaxed: statistics only, read without ordering requirements.
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Builds a [`TieredCache`].
pub struct TieredCacheBuilder<K, V> {
    name: Arc<str>,
    config: CacheConfig,
    loader: Arc<dyn Loader<K, V>>,
    tier: Option<Arc<dyn Tier<K, V>>>,
    lease: Option<Arc<dyn Lease<K>>>,
    breaker: Option<CircuitBreaker>,
    bulkhead: Option<Bulkhead>,
    existence: Option<ExistenceFilter>,
    admission: Option<Arc<dyn Admission>>,
    clock: Option<Clock>,
    single_flight: bool,
}

impl<K, V> TieredCacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Settings (default: [`CacheConfig::default`]).
    pub fn config(mut self, config: CacheConfig) -> Self {
        self.config = config;
        self
    }

    /// A shared L2 tier (default: none; L1 → source).
    pub fn tier(mut self, tier: Arc<dyn Tier<K, V>>) -> Self {
        self.tier = Some(tier);
        self
    }

    /// A cross-process lease for misses (default: none; the in-process
    /// flight alone dedups loads). Only used together with a tier.
    pub fn lease(mut self, lease: Arc<dyn Lease<K>>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The breaker in front of the loader (default: one named after the
    /// cache with [`BreakerConfig::default`]). `None` removes it.
    pub fn breaker(mut self, breaker: Option<CircuitBreaker>) -> Self {
        self.breaker = breaker;
        self
    }

    /// The bulkhead in front of the loader (default: one named after the
    /// cache with [`BulkheadConfig::default`]). `None` removes it.
    pub fn bulkhead(mut self, bulkhead: Option<Bulkhead>) -> Self {
        self.bulkhead = bulkhead;
        self
    }

    /// An existence filter consulted when L1 misses (default: none). A key
    /// it reports certainly absent is answered [`CacheStatus::Negative`]
    /// without L2 or a load, and nothing is cached for it: a check costs
    /// tens of nanoseconds, and caching would let a stream of random keys
    /// push real entries out of L1. Loads and L2 reads that find a value,
    /// and invalidations, insert their key (a row created behind the
    /// cache's back becomes visible by invalidating its key, or at the
    /// filter's next rebuild).
    pub fn existence(mut self, filter: ExistenceFilter) -> Self {
        self.existence = Some(filter);
        self
    }

    /// A hook asked before each miss goes on to L2 and the source (default:
    /// none); see [`Admission`].
    pub fn admission(mut self, admission: Arc<dyn Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Whether concurrent misses of one key share one load (default: on).
    /// Off, every miss and every refresh runs its own load: the naive
    /// cache a stampede replay needs as its baseline, never a production
    /// setting. Set a lease only with single-flight on (a lease would
    /// coalesce the loads again).
    pub fn single_flight(mut self, on: bool) -> Self {
        self.single_flight = on;
        self
    }

    /// The clock (default: [`Clock::coarse`]).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the settings and builds the cache.
    pub fn build(self) -> Result<TieredCache<K, V>, Error> {
        self.config
            .validate()
            .map_err(|e| Error::invalid_config(format!("cache `{}`: {e}", self.name)))?;
        let clock = self.clock.unwrap_or_else(Clock::coarse);
        Ok(TieredCache {
            inner: Arc::new(Inner {
                l1: quick_cache::sync::Cache::new(self.config.l1_capacity),
                l1_generations: Generations::default(),
                flight: Flight::new(),
                single_flight: self.single_flight,
                tier: self.tier,
                lease: self.lease,
                loader: self.loader,
                breaker: self.breaker,
                bulkhead: self.bulkhead,
                existence: self.existence,
                admission: self.admission,
                wall: WallClock::new(clock.clone()),
                clock,
                stats: Counters::default(),
                refreshes: RefreshQueue::default(),
                config: ArcCell::new(crate::sync::Arc::new(self.config)),
                name: self.name,
            }),
        })
    }
}

impl<K, V> TieredCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts building a cache named `name` over `loader`.
    pub fn builder(
        name: impl Into<Arc<str>>,
        loader: impl Loader<K, V>,
    ) -> TieredCacheBuilder<K, V> {
        let name = name.into();
        TieredCacheBuilder {
            breaker: Some(CircuitBreaker::new(
                Arc::clone(&name),
                BreakerConfig::default(),
            )),
            bulkhead: Some(Bulkhead::new(Arc::clone(&name), BulkheadConfig::default())),
            name,
            config: CacheConfig::default(),
            loader: Arc::new(loader),
            tier: None,
            lease: None,
            existence: None,
            admission: None,
            clock: None,
            single_flight: true,
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The cache's settings in force (a copy: [`set_config`](Self::set_config)
    /// may replace them at any time).
    pub fn config(&self) -> CacheConfig {
        CacheConfig::clone(&self.inner.config.load())
    }

    /// The breaker in front of the loader, if any (for metrics and operators).
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.breaker.as_ref()
    }

    /// The bulkhead in front of the loader, if any.
    pub fn bulkhead(&self) -> Option<&Bulkhead> {
        self.inner.bulkhead.as_ref()
    }

    /// The existence filter consulted on misses, if any.
    pub fn existence(&self) -> Option<&ExistenceFilter> {
        self.inner.existence.as_ref()
    }

    /// How old an answer of this cache is now: the time since its value was
    /// read from the source (the HTTP `Age` header).
    pub fn age(&self, lookup: &Lookup<V>) -> Duration {
        lookup.age_at(self.inner.clock.now())
    }

    /// Looks `key` up, loading it on a miss. `Ok` with no value means the key
    /// does not exist.
    ///
    /// The L1 step runs when `get` is called, not when the future is first
    /// polled: a hit is then a ready value, with no state machine around it
    /// (measured: an `async fn` here cost a fifth of the hit path's
    /// throughput, BENCHMARKS.md). Only a miss allocates its future.
    #[inline(always)]
    pub fn get<'a>(&'a self, key: &'a K) -> Get<'a, V> {
        let fallback = match self.look_in_l1(key) {
            L1::Answer(lookup) => return Get(GetState::Ready(Some(lookup))),
            L1::Fallback(entry) => Some(entry),
            L1::Miss => None,
        };
        Get(GetState::Miss(Box::pin(self.miss(key, fallback))))
    }

    /// Answers from L1 alone, never loading: `None` where [`get`](Self::get)
    /// would go to L2 or the source. A stale answer still starts a
    /// background refresh, as it does in `get`.
    #[inline]
    pub fn get_cached(&self, key: &K) -> Option<Lookup<V>> {
        match self.look_in_l1(key) {
            L1::Answer(lookup) => Some(lookup),
            L1::Fallback(_) | L1::Miss => None,
        }
    }

    /// The L1 step of the read path, without any await. Only the plain
    /// fresh hit is inline; everything else is out of line so the hit path
    /// stays a handful of instructions around the map lookup.
    #[inline(always)]
    fn look_in_l1(&self, key: &K) -> L1<V> {
        let inner = &*self.inner;
        let Some(slot) = inner.l1.get(key) else {
            return L1::Miss;
        };
        let now = inner.clock.now();
        if now < slot.hit_until {
            return L1::Answer(lookup(slot.entry, CacheStatus::Hit));
        }
        self.look_in_l1_slow(key, slot.entry, now)
    }

    #[inline(never)]
    fn look_in_l1_slow(&self, key: &K, entry: Arc<Entry<V>>, now: Instant) -> L1<V> {
        match entry.freshness(now) {
            Freshness::Fresh => {
                if let Some(beta) = self.inner.config.load().early_refresh_beta {
                    if entry.wants_early_refresh(now, beta) {
                        self.spawn_refresh(key, &entry);
                    }
                }
                let status = if entry.value.is_none() {
                    CacheStatus::Negative
                } else {
                    CacheStatus::Hit
                };
                L1::Answer(lookup(entry, status))
            }
            Freshness::Stale => {
                self.spawn_refresh(key, &entry);
                L1::Answer(lookup(entry, CacheStatus::Stale))
            }
            Freshness::Fallback => L1::Fallback(entry),
            Freshness::Expired => L1::Miss,
        }
    }

    /// Everything after an L1 miss. The existence filter is asked here, in
    /// the boxed miss future, not in `get`: `get` is inlined into every
    /// caller, and the check in its miss branch measured ~9 instructions
    /// more per *hit* (callgrind, BENCHMARKS.md); here a certainly-absent
    /// key costs the future's allocation instead, and hits nothing.
    async fn miss(&self, key: &K, fallback: Option<Arc<Entry<V>>>) -> Result<Lookup<V>, Error> {
        if let Some(absent) = self.inner.screen(key) {
            return Ok(absent);
        }
        if let Some(admission) = &self.inner.admission {
            if let Err(err) = admission.admit(1) {
                return self
                    .inner
                    .or_fallback(err, fallback)
                    .map(|kept| lookup(kept.entry, kept.status));
            }
        }
        if let (Some(kept), Some(patience)) = (&fallback, self.inner.config.load().stale_if_slow) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                // The load runs as its own task so that answering from the
                // kept value does not cancel it: it fills the cache when it
                // lands (or fails and is counted).
                let (inner, key) = (Arc::clone(&self.inner), key.clone());
                let kept_for_load = fallback.clone();
                let mut load = runtime.spawn(async move { inner.flown(&key, kept_for_load).await });
                return match tokio::time::timeout(patience, &mut load).await {
                    Ok(Ok((result, role))) => self.inner.settle(result, role, fallback),
                    // The runtime is shutting down: the kept value is all
                    // there is.
                    Ok(Err(_)) => Ok(lookup(Arc::clone(kept), CacheStatus::StaleIfError)),
                    Err(_) => {
                        bump(&self.inner.stats.stale_if_slow);
                        Ok(lookup(Arc::clone(kept), CacheStatus::StaleIfSlow))
                    }
                };
            }
        }
        let inner = &self.inner;
        let (result, role) = inner.flown(key, fallback.clone()).await;
        inner.settle(result, role, fallback)
    }
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The existence filter's verdict on an L1 miss: a negative answer
    /// when the key certainly does not exist.
    #[inline]
    fn screen(&self, key: &K) -> Option<Lookup<V>> {
        let filter = self.existence.as_ref()?;
        if filter.may_contain(key) {
            return None;
        }
        let now = self.clock.now();
        let entry = Entry::new(
            None,
            now,
            now,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        );
        Some(lookup(Arc::new(entry), CacheStatus::Negative))
    }

    /// Tells the existence filter that `key` exists.
    fn exists(&self, key: &K) {
        if let Some(filter) = &self.existence {
            filter.insert(key);
        }
    }

    /// A fresh L1 entry found by a caller that has just become a flight's
    /// leader. It missed L1 before joining, but the previous leader may
    /// have filled L1 and left the flight in between (a descheduled caller
    /// under load): without this second look it would load the key again.
    /// One map read per miss; never on the hit path.
    fn filled_meanwhile(&self, key: &K) -> Option<Fetched<V>> {
        let slot = self.l1.get(key)?;
        if !matches!(slot.entry.freshness(self.clock.now()), Freshness::Fresh) {
            return None;
        }
        let status = if slot.entry.value.is_none() {
            CacheStatus::Negative
        } else {
            CacheStatus::Hit
        };
        Some(Fetched {
            entry: slot.entry,
            status,
        })
    }

    /// One load of `key` through the flight (one leader per key), or, with
    /// single-flight off, this caller's own.
    async fn flown(
        &self,
        key: &K,
        fallback: Option<Arc<Entry<V>>>,
    ) -> (Result<Fetched<V>, Error>, Role) {
        if self.single_flight {
            self.flight
                .run(key.clone(), || async move {
                    match self.filled_meanwhile(key) {
                        Some(fetched) => Ok(fetched),
                        None => self.fetch(key, fallback).await,
                    }
                })
                .await
        } else {
            (self.fetch(key, fallback).await, Role::Leader)
        }
    }

    /// A flight's outcome as this caller's answer.
    fn settle(
        &self,
        result: Result<Fetched<V>, Error>,
        role: Role,
        fallback: Option<Arc<Entry<V>>>,
    ) -> Result<Lookup<V>, Error> {
        match result {
            Ok(fetched) => {
                let status = match (role, fetched.status) {
                    (Role::Follower, CacheStatus::StaleIfError) => CacheStatus::StaleIfError,
                    (Role::Follower, _) => CacheStatus::Coalesced,
                    (Role::Leader, status) => status,
                };
                Ok(lookup(fetched.entry, status))
            }
            // A follower's own fallback, when the leader had none.
            Err(err) => self
                .or_fallback(err, fallback)
                .map(|kept| lookup(kept.entry, kept.status)),
        }
    }
}

impl<K, V> TieredCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Looks many keys up at once; answers are in the order of `keys`.
    ///
    /// Misses go to L2 in one read and to the source in one `load_many`
    /// call. Batches do not take per-key flights or leases: they are meant
    /// for bounded bulk reads (an API batch, warm-up), where one batched
    /// round trip is the saving that matters.
    pub async fn get_many(&self, keys: &[K]) -> Vec<Result<Lookup<V>, Error>> {
        let inner = &self.inner;
        let mut answers: Vec<Option<Result<Lookup<V>, Error>>> =
            keys.iter().map(|_| None).collect();
        let mut fallbacks: Vec<Option<Arc<Entry<V>>>> = keys.iter().map(|_| None).collect();
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let fallback = match self.look_in_l1(key) {
                L1::Answer(lookup) => {
                    answers[i] = Some(Ok(lookup));
                    continue;
                }
                L1::Fallback(entry) => Some(entry),
                L1::Miss => None,
            };
            if let Some(absent) = inner.screen(key) {
                answers[i] = Some(Ok(absent));
                continue;
            }
            fallbacks[i] = fallback;
            missing.push(i);
        }
        if let (Some(admission), false) = (&inner.admission, missing.is_empty()) {
            let count = u32::try_from(missing.len()).unwrap_or(u32::MAX);
            if let Err(err) = admission.admit(count) {
                for i in missing.drain(..) {
                    answers[i] = Some(
                        inner
                            .or_fallback(err.clone(), fallbacks[i].take())
                            .map(|kept| lookup(kept.entry, kept.status)),
                    );
                }
            }
        }
        if !missing.is_empty() {
            let found = inner.fetch_many(keys, &missing, &mut fallbacks).await;
            for (i, answer) in missing.into_iter().zip(found) {
                answers[i] = Some(answer);
            }
        }
        answers.into_iter().map(answered).collect()
    }

    /// Drops `key` from L1 and L2. A load that began before this call will
    /// not store its result, and callers from now on do not join it.
    ///
    /// The key is also added to the existence filter, if any: invalidating
    /// is how a row created behind the cache's back is made visible before
    /// the filter's next rebuild.
    pub async fn invalidate(&self, key: &K) -> Result<(), Error> {
        let inner = &self.inner;
        inner.exists(key);
        // L1 is bumped before and after the tier is cleared. Before: loads
        // already running must not fill L1, and callers from now on must not
        // join them. After: a read in between found the old row still in L2
        // and put it back into L1 under the new generation; the second bump
        // drops it. (Clearing the tier first alone would leave L1 serving the
        // old row while the tier call runs, and keep it if that call fails.)
        let drop_from_l1 = || {
            inner
                .l1_generations
                .invalidate(key, || inner.l1.remove(key));
        };
        drop_from_l1();
        inner.flight.forget(key);
        let cleared = match &inner.tier {
            Some(tier) => tier.invalidate(key).await,
            None => Ok(()),
        };
        drop_from_l1();
        inner.flight.forget(key);
        cleared
    }

    /// Drops `key` from this process's L1 only (another process invalidated
    /// it in the shared tier and told us).
    /// The key is added to the existence filter, as in
    /// [`invalidate`](Self::invalidate).
    pub fn invalidate_local(&self, key: &K) {
        let inner = &self.inner;
        inner.exists(key);
        inner
            .l1_generations
            .invalidate(key, || inner.l1.remove(key));
        inner.flight.forget(key);
    }

    /// Drops every key from this process's L1, and refuses the fills of
    /// loads already running. For when this process may have missed
    /// invalidations (its notice subscription dropped): from here on, keys
    /// are revalidated against L2.
    pub fn clear_local(&self) {
        let inner = &self.inner;
        inner.l1_generations.invalidate_all(|| inner.l1.clear());
    }

    /// Whether a shared tier (L2) sits under L1; without one,
    /// [`fill_loaded`](Self::fill_loaded) is open.
    pub fn has_tier(&self) -> bool {
        self.inner.tier.is_some()
    }

    /// Every key's generation as of now. Take it *before* reading rows
    /// from the source by a path other than the [`Loader`] (a warm-up that
    /// scans whole rows), then hand those rows to
    /// [`fill_loaded`](Self::fill_loaded), which refuses the keys
    /// invalidated in between.
    pub fn fill_ticket(&self) -> FillTicket {
        FillTicket {
            cache: Arc::as_ptr(&self.inner) as usize,
            // Before the snapshot: a row is never older than this.
            taken_at: self.inner.clock.now(),
            generations: self.inner.l1_generations.snapshot(),
        }
    }

    /// Puts rows read from the source since `ticket` was taken into L1, as
    /// a load of them would: the same TTL, jitter and windows, counted from
    /// when the ticket was taken (a row may have been read any time after:
    /// its TTL errs short, never long), the keys added to the existence
    /// filter. A key L1 already holds keeps what it holds (a load or an
    /// invalidation handled it since it was last filled). A key invalidated
    /// since the ticket (or one sharing its generation stripe: a wasted
    /// fill, never a stale one) is refused: returned, for the caller to
    /// load through [`get_many`](Self::get_many), so a scan that meets many
    /// invalidations still warms every key.
    ///
    /// Why it exists: a warm-up that reads whole rows in one pass needs no
    /// second query per key (BENCHMARKS.md, warm-up at the source's pace).
    ///
    /// Only for a cache without a shared tier: a tier fill is fenced by a
    /// generation read from the tier *before* the load, which a scan cannot
    /// read for keys it has not seen yet. With a tier this is
    /// `InvalidConfig`; load the keys through [`get_many`](Self::get_many).
    pub fn fill_loaded(
        &self,
        rows: Vec<(K, V)>,
        ticket: &FillTicket,
        load_time: Duration,
    ) -> Result<Vec<K>, Error> {
        let inner = &self.inner;
        if inner.tier.is_some() {
            return Err(Error::invalid_config(format!(
                "cache {}: fill_loaded needs a cache without a shared tier; use get_many",
                inner.name
            )));
        }
        if ticket.cache != Arc::as_ptr(inner) as usize {
            return Err(Error::invalid_config(format!(
                "cache {}: a fill ticket from another cache",
                inner.name
            )));
        }
        let loaded_at = ticket.taken_at;
        let early_refresh = inner.config.load().early_refresh_beta.is_some();
        let mut refused = Vec::new();
        for (key, value) in rows {
            inner.exists(&key);
            if inner.l1.contains_key(&key) {
                continue;
            }
            let stored = inner.stored(Some(value), loaded_at, load_time);
            let slot = Arc::new(inner.entry_from_stored(stored)).l1_slot(early_refresh);
            let put =
                inner
                    .l1_generations
                    .fill_if_unchanged_since(&key, &ticket.generations, || {
                        inner.l1.insert(key.clone(), slot)
                    });
            if put.is_none() {
                bump(&inner.stats.fills_refused);
                refused.push(key);
            }
        }
        Ok(refused)
    }

    /// The slow-path counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.stats;
        let read = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            loads: read(&c.loads),
            load_errors: read(&c.load_errors),
            tier_errors: read(&c.tier_errors),
            fills_refused: read(&c.fills_refused),
            refreshes: read(&c.refreshes),
            lease_waits: read(&c.lease_waits),
            lease_timeouts: read(&c.lease_timeouts),
            stale_if_slow: read(&c.stale_if_slow),
            in_flight: (self.inner.flight.in_flight() + self.inner.refreshes.outstanding()) as u64,
            waiting: self.inner.flight.waiting() as u64,
            l1_entries: self.inner.l1.len() as u64,
        }
    }

    /// Queues one background refresh of `key`, unless one is running;
    /// refreshes go to the source in batches (see `refresh.rs`). Kept out
    /// of line so the hit path around it stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn spawn_refresh(&self, key: &K, entry: &Arc<Entry<V>>) {
        // Outside a tokio runtime there is nobody to run it; the next caller
        // past grace loads synchronously instead.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !entry.claim_refresh() {
            return;
        }
        bump(&self.inner.stats.refreshes);
        if self.inner.refreshes.push(key.clone(), Arc::clone(entry)) {
            runtime.spawn(Arc::clone(&self.inner).drain_refreshes());
        }
    }
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The refresh drain: after a short window, refreshes the queued keys
    /// a batch at a time (one L2 read, one `load_many`, the fills checked
    /// against generations as any batch's), until the queue is empty. A
    /// key whose refresh failed may be claimed again by its next stale hit.
    /// Batches skip the per-key flight, as `get_many` does: a key being
    /// refreshed is within grace, so its callers are answered stale and
    /// none of them loads it meanwhile.
    async fn drain_refreshes(self: Arc<Self>) {
        tokio::time::sleep(refresh::WINDOW).await;
        loop {
            let batch = self.refreshes.take();
            if batch.is_empty() {
                return;
            }
            let keys: Vec<K> = batch.iter().map(|(key, _)| key.clone()).collect();
            let all: Vec<usize> = (0..keys.len()).collect();
            let mut no_fallbacks: Vec<Option<Arc<Entry<V>>>> = vec![None; keys.len()];
            let answers = self.fetch_many(&keys, &all, &mut no_fallbacks).await;
            for ((_, entry), answer) in batch.iter().zip(answers) {
                // A stale-if-error answer (the load failed, L2 still had the
                // old value) is a failed refresh too: without this the key
                // stayed claimed and was never refreshed until past grace.
                let refreshed = matches!(&answer, Ok(a) if a.status != CacheStatus::StaleIfError);
                if !refreshed {
                    entry.refresh_failed();
                }
            }
        }
    }
}

/// Every slot of a batch is answered by construction (from L1, L2, the
/// source or a fallback); an empty one would be a bug here, reported as an
/// error for that key rather than a panic.
fn answered<V>(answer: Option<Result<Lookup<V>, Error>>) -> Result<Lookup<V>, Error> {
    answer.unwrap_or_else(|| Err(Error::source("internal: a batch key was left unanswered")))
}

fn lookup<V>(entry: Arc<Entry<V>>, status: CacheStatus) -> Lookup<V> {
    Lookup { entry, status }
}

/// Whether an error is one that stale-if-error covers: the source failed or
/// a guard refused. A panic is a bug, not an outage: it is not masked.
fn can_serve_stale(err: &Error) -> bool {
    !matches!(err.kind(), ErrorKind::LoadPanicked(_))
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The miss path for one key, run by a flight's leader.
    async fn fetch(&self, key: &K, fallback: Option<Arc<Entry<V>>>) -> Result<Fetched<V>, Error> {
        // Read before anything else: an invalidation from here on refuses
        // our L1 fill.
        let l1_generation = self.l1_generations.current(key);
        let mut fallback = fallback;
        let mut tier_generation = None;
        let mut lease_guard: Option<LeaseGuard> = None;

        if let Some(tier) = &self.tier {
            match self
                .read_tier(tier.as_ref(), key, l1_generation, &mut fallback)
                .await
            {
                TierLookup::Fresh(fetched) => return Ok(fetched),
                TierLookup::Missing(generation) => tier_generation = generation,
            }
            if let Some(lease) = &self.lease {
                match self
                    .win_lease(
                        tier.as_ref(),
                        lease.as_ref(),
                        key,
                        l1_generation,
                        &mut fallback,
                    )
                    .await
                {
                    LeaseOutcome::Won(guard, generation) => {
                        lease_guard = Some(guard);
                        tier_generation = generation;
                    }
                    LeaseOutcome::Filled(fetched) => return Ok(fetched),
                    LeaseOutcome::TimedOut => {
                        bump(&self.stats.lease_timeouts);
                        let config = self.config.load();
                        let waited = config.lease_wait;
                        if config.on_lease_timeout == LeaseTimeoutPolicy::Fail {
                            return self
                                .or_fallback(ErrorKind::LeaseWaitTimeout(waited).into(), fallback);
                        }
                        // The holder is responsible for L2; we fill L1 only.
                        tier_generation = None;
                    }
                    // The lease store is down: load anyway (the bulkhead
                    // still bounds it), and leave L2 to a lease holder.
                    LeaseOutcome::Unavailable => {
                        bump(&self.stats.tier_errors);
                        tier_generation = None;
                    }
                }
            }
        }

        let loaded_at = self.clock.now();
        let started = self.clock.precise_now();
        let loaded = match self.load_one(key).await {
            Ok(value) => value,
            Err(err) => return self.or_fallback(err, fallback),
        };
        if loaded.is_some() {
            self.exists(key);
        }
        let load_time = self.clock.precise_now().saturating_duration_since(started);
        let stored = self.stored(loaded, loaded_at, load_time);
        let mut refused = false;
        if let (Some(tier), Some(generation)) = (&self.tier, tier_generation) {
            let fence = lease_guard.as_ref().map_or(0, LeaseGuard::fence);
            refused = self
                .fill_tier(tier.as_ref(), key, stored.clone(), generation, fence)
                .await
                == Some(FillOutcome::Refused);
        }
        // Released only after L2 holds the value, so the losers find it.
        drop(lease_guard);
        // L2 refused the fill: the key was invalidated (in any process)
        // since we read its generation, or a newer load already stored. Our
        // value may be the old row: answer this caller with it, but keep it
        // out of L1, where it would outlive the invalidation for a whole TTL.
        let entry = if refused {
            Arc::new(self.entry_from_stored(stored))
        } else {
            self.fill_l1(key, stored, l1_generation)
        };
        Ok(Fetched {
            entry,
            status: CacheStatus::Miss,
        })
    }

    /// Takes the key's lease, or waits for its holder's value.
    ///
    /// A loser does not trust one notice-or-timeout wait: the holder may
    /// have died mid-load (its lease then expires), or its release notice
    /// may have been lost (a pub/sub reconnect). So while waiting it wakes
    /// on the notice *or* every `lease_retry`, re-reads L2 and tries the
    /// lease again; whoever wins then loads, so an orphaned lease costs at
    /// most one retry interval past its expiry, not a whole `lease_wait`
    /// per request.
    async fn win_lease(
        &self,
        tier: &dyn Tier<K, V>,
        lease: &dyn Lease<K>,
        key: &K,
        l1_generation: u64,
        fallback: &mut Option<Arc<Entry<V>>>,
    ) -> LeaseOutcome<V> {
        let deadline = tokio::time::Instant::now() + self.config.load().lease_wait;
        let mut waited = false;
        loop {
            match lease.acquire(key).await {
                Ok(Acquired::Won(guard)) => {
                    // Double check: the previous holder may have filled L2
                    // between our read and our win.
                    return match self.read_tier(tier, key, l1_generation, fallback).await {
                        TierLookup::Fresh(fetched) => LeaseOutcome::Filled(fetched),
                        TierLookup::Missing(generation) => LeaseOutcome::Won(guard, generation),
                    };
                }
                Ok(Acquired::Lost(notice)) => {
                    if !waited {
                        waited = true;
                        bump(&self.stats.lease_waits);
                    }
                    let now = tokio::time::Instant::now();
                    if now >= deadline {
                        return LeaseOutcome::TimedOut;
                    }
                    let step = (deadline - now).min(self.config.load().lease_retry);
                    // Woken by the notice or by the step; either way, look.
                    let _ = tokio::time::timeout(step, notice).await;
                    if let TierLookup::Fresh(fetched) =
                        self.read_tier(tier, key, l1_generation, fallback).await
                    {
                        return LeaseOutcome::Filled(fetched);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return LeaseOutcome::TimedOut;
                    }
                }
                Err(_) => return LeaseOutcome::Unavailable,
            }
        }
    }

    /// Batch miss path: L2 in one read, then the source in one call.
    async fn fetch_many(
        &self,
        keys: &[K],
        missing: &[usize],
        fallbacks: &mut [Option<Arc<Entry<V>>>],
    ) -> Vec<Result<Lookup<V>, Error>> {
        let l1_generations: Vec<u64> = missing
            .iter()
            .map(|&i| self.l1_generations.current(&keys[i]))
            .collect();
        let mut answers: Vec<Option<Result<Lookup<V>, Error>>> =
            missing.iter().map(|_| None).collect();
        let mut tier_generations: Vec<Option<u64>> = missing.iter().map(|_| None).collect();

        if let Some(tier) = &self.tier {
            let wanted: Vec<K> = missing.iter().map(|&i| keys[i].clone()).collect();
            match tier.get_many(&wanted).await {
                Ok(reads) => {
                    for (j, read) in reads.into_iter().enumerate().take(missing.len()) {
                        let key = &keys[missing[j]];
                        let fallback = &mut fallbacks[missing[j]];
                        match self.use_tier_read(key, read, l1_generations[j], fallback) {
                            TierLookup::Fresh(f) => {
                                answers[j] = Some(Ok(lookup(f.entry, f.status)))
                            }
                            TierLookup::Missing(generation) => tier_generations[j] = generation,
                        }
                    }
                }
                Err(_) => bump(&self.stats.tier_errors),
            }
        }

        let to_load: Vec<usize> = (0..missing.len())
            .filter(|&j| answers[j].is_none())
            .collect();
        if !to_load.is_empty() {
            // A key asked for twice is loaded and filled once.
            let mut seen = HashSet::with_capacity(to_load.len());
            let wanted: Vec<K> = to_load
                .iter()
                .map(|&j| &keys[missing[j]])
                .filter(|key| seen.insert(*key))
                .cloned()
                .collect();
            let loaded_at = self.clock.now();
            let started = self.clock.precise_now();
            match self.load_many(&wanted).await {
                Ok(mut found) => {
                    for key in found.keys() {
                        self.exists(key);
                    }
                    let load_time = self.clock.precise_now().saturating_duration_since(started);
                    // Build each key's entry once, fill L2 in one batch
                    // (one round trip on a pipelining tier), then L1.
                    let mut first_of: HashMap<&K, usize> = HashMap::with_capacity(wanted.len());
                    for &j in &to_load {
                        first_of.entry(&keys[missing[j]]).or_insert(j);
                    }
                    // Values are moved, not cloned, from the load to L1: a
                    // clone of a `Bytes` made from a `Vec` allocates its
                    // shared header (32 bytes a key at 1 M warmed keys);
                    // only a tier fill, which keeps its own handle, clones.
                    let mut stored: HashMap<&K, Stored<V>> = first_of
                        .keys()
                        .map(|key| (*key, self.stored(found.remove(*key), loaded_at, load_time)))
                        .collect();
                    // Keys whose L2 fill was refused (invalidated meanwhile):
                    // answered, but kept out of L1, as in `fetch`.
                    let mut refused: HashSet<&K> = HashSet::new();
                    if let Some(tier) = &self.tier {
                        let fills: Vec<(&K, Stored<V>, u64)> = first_of
                            .iter()
                            .filter_map(|(key, &j)| {
                                let generation = tier_generations[j]?;
                                Some((*key, stored[key].clone(), generation))
                            })
                            .collect();
                        if !fills.is_empty() {
                            let filled_keys: Vec<&K> = fills.iter().map(|f| f.0).collect();
                            let fills = fills
                                .into_iter()
                                .map(|(key, stored, generation)| {
                                    (key.clone(), stored, generation, 0)
                                })
                                .collect();
                            let outcomes = self.fill_tier_many(tier.as_ref(), fills).await;
                            for (key, outcome) in filled_keys.into_iter().zip(outcomes) {
                                if outcome == Some(FillOutcome::Refused) {
                                    refused.insert(key);
                                }
                            }
                        }
                    }
                    let mut filled: HashMap<&K, Arc<Entry<V>>> =
                        HashMap::with_capacity(wanted.len());
                    for &j in &to_load {
                        let key = &keys[missing[j]];
                        let entry = match filled.get(key) {
                            Some(entry) => Arc::clone(entry),
                            None => {
                                // Each distinct key reaches here once (`filled`).
                                let Some(value) = stored.remove(key) else {
                                    continue;
                                };
                                let entry = if refused.contains(key) {
                                    Arc::new(self.entry_from_stored(value))
                                } else {
                                    self.fill_l1(key, value, l1_generations[j])
                                };
                                filled.insert(key, Arc::clone(&entry));
                                entry
                            }
                        };
                        answers[j] = Some(Ok(lookup(entry, CacheStatus::Miss)));
                    }
                }
                Err(err) => {
                    for &j in &to_load {
                        let fallback = fallbacks[missing[j]].take();
                        answers[j] = Some(
                            self.or_fallback(err.clone(), fallback)
                                .map(|f| lookup(f.entry, f.status)),
                        );
                    }
                }
            }
        }
        answers.into_iter().map(answered).collect()
    }

    /// Reads L2; a fresh entry fills L1. A stale one becomes the fallback if
    /// there is none yet. Tier errors are counted and treated as a miss.
    async fn read_tier(
        &self,
        tier: &dyn Tier<K, V>,
        key: &K,
        l1_generation: u64,
        fallback: &mut Option<Arc<Entry<V>>>,
    ) -> TierLookup<V> {
        let read = match tier.get(key).await {
            Ok(read) => read,
            Err(_) => {
                bump(&self.stats.tier_errors);
                return TierLookup::Missing(None);
            }
        };
        self.use_tier_read(key, read, l1_generation, fallback)
    }

    /// What one L2 read means: a fresh entry fills L1 and is the answer; a
    /// stale one becomes the fallback if there is none yet; otherwise the
    /// key is missing, with the generation a fill must present.
    fn use_tier_read(
        &self,
        key: &K,
        read: TierRead<V>,
        l1_generation: u64,
        fallback: &mut Option<Arc<Entry<V>>>,
    ) -> TierLookup<V> {
        if let Some(stored) = read.entry {
            let entry = self.entry_from_stored(stored);
            match entry.freshness(self.clock.now()) {
                Freshness::Fresh => {
                    let status = if entry.value.is_some() {
                        // Another process loaded it: this filter may not
                        // have it yet (a row newer than our last build).
                        self.exists(key);
                        CacheStatus::L2
                    } else {
                        CacheStatus::Negative
                    };
                    let entry = self.fill_l1_entry(key, entry, l1_generation);
                    return TierLookup::Fresh(Fetched { entry, status });
                }
                Freshness::Stale | Freshness::Fallback => {
                    if fallback.is_none() {
                        *fallback = Some(Arc::new(entry));
                    }
                }
                Freshness::Expired => {}
            }
        }
        TierLookup::Missing(Some(read.generation))
    }

    /// Fills L2; `None` when the tier failed (counted; the caller goes on
    /// without L2, as on a read error).
    async fn fill_tier(
        &self,
        tier: &dyn Tier<K, V>,
        key: &K,
        stored: Stored<V>,
        generation: u64,
        fence: u64,
    ) -> Option<FillOutcome> {
        match tier.fill(key, stored, generation, fence).await {
            Ok(outcome) => {
                if outcome == FillOutcome::Refused {
                    bump(&self.stats.fills_refused);
                }
                Some(outcome)
            }
            Err(_) => {
                bump(&self.stats.tier_errors);
                None
            }
        }
    }

    /// Many fills; one outcome per fill, in order (`None` each when the
    /// tier failed).
    async fn fill_tier_many(
        &self,
        tier: &dyn Tier<K, V>,
        fills: Vec<(K, Stored<V>, u64, u64)>,
    ) -> Vec<Option<FillOutcome>> {
        let count = fills.len();
        match tier.fill_many(fills).await {
            Ok(outcomes) => outcomes
                .into_iter()
                .map(|outcome| {
                    if outcome == FillOutcome::Refused {
                        bump(&self.stats.fills_refused);
                    }
                    Some(outcome)
                })
                .collect(),
            Err(_) => {
                bump(&self.stats.tier_errors);
                vec![None; count]
            }
        }
    }

    fn fill_l1(&self, key: &K, stored: Stored<V>, generation: u64) -> Arc<Entry<V>> {
        let entry = self.entry_from_stored(stored);
        self.fill_l1_entry(key, entry, generation)
    }

    /// Inserts into L1 unless the key was invalidated since `generation` was
    /// read; either way the caller gets the entry to answer with.
    fn fill_l1_entry(&self, key: &K, entry: Entry<V>, generation: u64) -> Arc<Entry<V>> {
        let entry = Arc::new(entry);
        let filled = self.l1_generations.fill_if_current(key, generation, || {
            self.l1.insert(
                key.clone(),
                entry.l1_slot(self.config.load().early_refresh_beta.is_some()),
            );
        });
        if filled.is_none() {
            bump(&self.stats.fills_refused);
        }
        entry
    }

    fn or_fallback(
        &self,
        err: Error,
        fallback: Option<Arc<Entry<V>>>,
    ) -> Result<Fetched<V>, Error> {
        match fallback {
            Some(entry) if can_serve_stale(&err) => Ok(Fetched {
                entry,
                status: CacheStatus::StaleIfError,
            }),
            _ => Err(err),
        }
    }

    /// Loads one key through the breaker and the bulkhead, bounded by the
    /// load timeout, with panics contained and counted as failures.
    async fn load_one(&self, key: &K) -> Result<Option<V>, Error> {
        self.guarded(self.loader.load(key)).await
    }

    async fn load_many(&self, keys: &[K]) -> Result<HashMap<K, V>, Error> {
        self.guarded(self.loader.load_many(keys)).await
    }

    async fn guarded<T>(
        &self,
        load: impl std::future::Future<Output = Result<T, crate::BoxError>>,
    ) -> Result<T, Error> {
        bump(&self.stats.loads);
        let result = self.guarded_inner(load).await;
        if result.is_err() {
            bump(&self.stats.load_errors);
        }
        result
    }

    async fn guarded_inner<T>(
        &self,
        load: impl std::future::Future<Output = Result<T, crate::BoxError>>,
    ) -> Result<T, Error> {
        Guarded::new(self.config.load().load_timeout)
            .maybe_breaker(self.breaker.as_ref())
            .maybe_bulkhead(self.bulkhead.as_ref())
            .call(async { load.await.map_err(Error::source) }, |waited| {
                ErrorKind::LoadTimeout(waited).into()
            })
            .await
    }

    /// Builds what a fill stores: deadlines from the settings, the TTL
    /// jittered so that keys loaded together do not expire together.
    fn stored(&self, value: Option<V>, loaded_at: Instant, load_time: Duration) -> Stored<V> {
        let config = self.config.load();
        let loaded_at_ms = self
            .wall
            .unix_ms()
            .saturating_sub(as_ms(self.clock.now().saturating_duration_since(loaded_at)));
        let (fresh, grace, error) = if value.is_some() {
            let spread = config.jitter * (2.0 * fastrand::f64() - 1.0);
            let ttl = config.ttl.mul_f64(1.0 + spread);
            (ttl, ttl + config.grace, ttl + config.stale_if_error)
        } else {
            (
                config.negative_ttl,
                config.negative_ttl,
                config.negative_ttl,
            )
        };
        Stored {
            value,
            loaded_at_ms,
            fresh_until_ms: loaded_at_ms.saturating_add(as_ms(fresh)),
            grace_until_ms: loaded_at_ms.saturating_add(as_ms(grace)),
            error_until_ms: loaded_at_ms.saturating_add(as_ms(error)),
            load_micros: u64::try_from(load_time.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// Turns wall-clock deadlines into deadlines on the local clock.
    fn entry_from_stored(&self, stored: Stored<V>) -> Entry<V> {
        let now = self.clock.now();
        let now_ms = self.wall.unix_ms();
        // A deadline in the past that the local clock cannot express (a mock
        // clock starts at zero) is clamped to now; `shift` remembers by how
        // much, so the windows after it keep their absolute ends.
        let (fresh_until, shift) = if stored.fresh_until_ms >= now_ms {
            (
                now + Duration::from_millis(stored.fresh_until_ms - now_ms),
                0,
            )
        } else {
            let ago = now_ms - stored.fresh_until_ms;
            match now.checked_sub(Duration::from_millis(ago)) {
                Some(at) => (at, 0),
                None => (now, ago),
            }
        };
        let window = |until_ms: u64| {
            Duration::from_millis(
                until_ms
                    .saturating_sub(stored.fresh_until_ms)
                    .saturating_sub(shift),
            )
        };
        let age = Duration::from_millis(now_ms.saturating_sub(stored.loaded_at_ms));
        let loaded_at = now.checked_sub(age).unwrap_or(now);
        Entry::new(
            stored.value,
            loaded_at,
            fresh_until,
            window(stored.grace_until_ms),
            window(stored.error_until_ms),
            Duration::from_micros(stored.load_micros),
        )
    }
}

fn as_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The future of [`TieredCache::get`]: ready at once on an L1 answer, the
/// boxed miss path otherwise.
#[must_use = "a future does nothing unless awaited"]
pub struct Get<'a, V>(GetState<'a, V>);

/// Why this shape (each measured on the hit path, BENCHMARKS.md): the
/// answer sits in an `Option` that `poll` takes, a one-byte store and two
/// scalar loads. An enum with a third `Done` state made `poll` move the
/// whole enum out with `mem::replace`, a wide load over the narrow stores
/// that had just built it, which stalls store forwarding; two separate
/// fields made the drop glue too big to inline.
enum GetState<'a, V> {
    Ready(Option<Lookup<V>>),
    Miss(MissFuture<'a, V>),
}

type MissFuture<'a, V> = Pin<Box<dyn Future<Output = Result<Lookup<V>, Error>> + Send + 'a>>;

/// Live reconfiguration, kept apart from the read path.
impl<K, V> TieredCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Replaces the settings while the cache runs: validated first (an
    /// invalid config is refused and the running one stays), then swapped
    /// whole, so a reader sees either the old settings or the new, never a
    /// mix. Entries already cached keep the deadlines they were stored
    /// with (a shorter `ttl` applies from each key's next fill, within the
    /// old `ttl` at most); a new `l1_capacity` resizes L1 at once (evicting
    /// if it shrank). The hit path reads no setting, so it costs nothing.
    pub fn set_config(&self, config: CacheConfig) -> Result<(), Error> {
        config
            .validate()
            .map_err(|e| Error::invalid_config(format!("cache `{}`: {e}", self.inner.name)))?;
        if config.l1_capacity != self.inner.config.load().l1_capacity {
            let capacity = u64::try_from(config.l1_capacity).unwrap_or(u64::MAX);
            self.inner.l1.set_capacity(capacity);
        }
        self.inner.config.store(crate::sync::Arc::new(config));
        Ok(())
    }
}

impl<V> Future for Get<'_, V> {
    type Output = Result<Lookup<V>, Error>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            GetState::Ready(answer) => match answer.take() {
                Some(lookup) => Poll::Ready(Ok(lookup)),
                None => Poll::Ready(Err(polled_twice())),
            },
            GetState::Miss(miss) => miss.as_mut().poll(cx),
        }
    }
}

#[cold]
fn polled_twice() -> Error {
    Error::source("TieredCache::get polled after completion")
}

/// What L1 alone can say about a key.
enum L1<V> {
    /// An answer (fresh, negative or stale-within-grace).
    Answer(Lookup<V>),
    /// Only an expired value kept for stale-if-error: load.
    Fallback(Arc<Entry<V>>),
    /// Nothing usable: load.
    Miss,
}

/// How a miss's attempt at the key's lease ended.
enum LeaseOutcome<V> {
    /// We hold it; the key's L2 generation as read after winning.
    Won(LeaseGuard, Option<u64>),
    /// Another holder's value arrived in L2 (now also in L1).
    Filled(Fetched<V>),
    /// `lease_wait` ran out with the lease held elsewhere.
    TimedOut,
    /// The lease store failed.
    Unavailable,
}

enum TierLookup<V> {
    /// L2 had a fresh entry (now also in L1).
    Fresh(Fetched<V>),
    /// Nothing fresh; the key's generation if the read succeeded.
    Missing(Option<u64>),
}
