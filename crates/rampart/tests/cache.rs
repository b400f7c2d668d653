//! The tiered read-through cache, path by path: every `CacheStatus` an answer can
//! come from, the guards on the miss path, and no stale sets.
#![cfg(not(rampart_loom))]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rampart::breaker::{BreakerConfig, CircuitBreaker, SlidingWindow};
use rampart::cache::{
    CacheConfig, CacheStatus, LeaseTimeoutPolicy, LocalLease, MemoryTier, Tier, TieredCache,
};
use rampart::clock::{Clock, Mock};
use rampart::{BoxError, Error, ErrorKind, Loader};
use tokio::sync::watch;

/// A mock clock and how far each load moves it.
type ClockStep = (Arc<Mock>, Duration);

/// A source of truth in memory that counts its loads and can be made to
/// fail, stall or panic.
#[derive(Clone, Default)]
struct Source_ {
    rows: Arc<Mutex<HashMap<u64, String>>>,
    loads: Arc<AtomicUsize>,
    batch_loads: Arc<Mutex<Vec<Vec<u64>>>>,
    fail: Arc<AtomicBool>,
    panic: Arc<AtomicBool>,
    /// When set, loads wait until it reads `true`.
    gate: Arc<Mutex<Option<watch::Receiver<bool>>>>,
    delay: Arc<Mutex<Duration>>,
    /// Moves a mock clock by this much during each load.
    advance_on_load: Arc<Mutex<Option<ClockStep>>>,
}

impl Source_ {
    fn with_rows(n: u64) -> Self {
        let source = Source_::default();
        for k in 0..n {
            source.set(k, &format!("v{k}"));
        }
        source
    }
    fn set(&self, key: u64, value: &str) {
        self.rows.lock().insert(key, value.to_owned());
    }
    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
    fn close_gate(&self) -> watch::Sender<bool> {
        let (tx, rx) = watch::channel(false);
        *self.gate.lock() = Some(rx);
        tx
    }
    async fn before_answer(&self) -> Result<(), BoxError> {
        let gate = self.gate.lock().clone();
        if let Some(mut gate) = gate {
            gate.wait_for(|open| *open).await?;
        }
        if let Some((mock, by)) = self.advance_on_load.lock().as_ref() {
            mock.increment(*by);
        }
        let delay = *self.delay.lock();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.panic.load(Ordering::SeqCst) {
            panic!("source panicked");
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err("source is down".into());
        }
        Ok(())
    }
}

#[async_trait]
impl Loader<u64, String> for Source_ {
    async fn load(&self, key: &u64) -> Result<Option<String>, BoxError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        // Read first, answer later: a slow reply carries what was read.
        let row = self.rows.lock().get(key).cloned();
        self.before_answer().await?;
        Ok(row)
    }

    async fn load_many(&self, keys: &[u64]) -> Result<HashMap<u64, String>, BoxError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.batch_loads.lock().push(keys.to_vec());
        // Read first, answer later, as `load` does.
        let found = {
            let rows = self.rows.lock();
            keys.iter()
                .filter_map(|k| rows.get(k).map(|v| (*k, v.clone())))
                .collect()
        };
        self.before_answer().await?;
        Ok(found)
    }
}

fn config() -> CacheConfig {
    CacheConfig {
        ttl: Duration::from_secs(60),
        grace: Duration::from_secs(10),
        stale_if_error: Duration::from_secs(300),
        jitter: 0.0,
        negative_ttl: Duration::from_secs(5),
        ..CacheConfig::default()
    }
}

fn cache(source: &Source_, clock: &Clock) -> TieredCache<u64, String> {
    TieredCache::builder("users", source.clone())
        .config(config())
        .clock(clock.clone())
        .build()
        .expect("valid config")
}

fn memory_tier(clock: &Clock) -> Arc<dyn Tier<u64, String>> {
    Arc::new(MemoryTier::with_clock(1_000, clock.clone()))
}

/// A cache over `tier`: what another process sharing that tier looks like.
fn over_tier(
    source: &Source_,
    clock: &Clock,
    tier: &Arc<dyn Tier<u64, String>>,
) -> TieredCache<u64, String> {
    TieredCache::builder("users", source.clone())
        .config(config())
        .clock(clock.clone())
        .tier(tier.clone())
        .build()
        .expect("cache")
}

async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..5_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition never held");
}

fn value(lookup: &rampart::cache::Lookup<String>) -> Option<&str> {
    lookup.value().map(String::as_str)
}

/// `get`'s future on a hit is ready at once; polled again after that, it
/// answers an error rather than panicking or answering twice.
#[tokio::test]
async fn a_hit_future_is_ready_at_once_and_refuses_a_second_poll() {
    let (clock, _mock) = Clock::mock();
    let source = Source_::with_rows(3);
    let cache = cache(&source, &clock);
    cache.get(&1).await.expect("fill");
    let mut get = std::pin::pin!(cache.get(&1));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match get.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Ok(lookup)) => assert_eq!(lookup.status(), CacheStatus::Hit),
        other => panic!("a hit is ready at the first poll, got {other:?}"),
    }
    assert!(matches!(
        get.as_mut().poll(&mut cx),
        std::task::Poll::Ready(Err(_))
    ));
    assert_eq!(source.loads(), 1);
}

#[tokio::test]
async fn miss_then_hit() {
    let (clock, mock) = Clock::mock();
    let source = Source_::with_rows(10);
    let cache = cache(&source, &clock);
    let first = cache.get(&3).await.expect("get");
    assert_eq!(
        (first.status(), value(&first)),
        (CacheStatus::Miss, Some("v3"))
    );
    mock.increment(Duration::from_secs(2));
    let second = cache.get(&3).await.expect("get");
    assert_eq!(
        (second.status(), value(&second)),
        (CacheStatus::Hit, Some("v3"))
    );
    assert_eq!(cache.age(&second), Duration::from_secs(2));
    assert_eq!(source.loads(), 1);
}

#[tokio::test]
async fn missing_keys_are_cached_negatively_for_the_negative_ttl() {
    let (clock, mock) = Clock::mock();
    let source = Source_::with_rows(1);
    let cache = cache(&source, &clock);
    let first = cache.get(&99).await.expect("get");
    assert_eq!((first.status(), value(&first)), (CacheStatus::Miss, None));
    let second = cache.get(&99).await.expect("get");
    assert_eq!(
        (second.status(), value(&second)),
        (CacheStatus::Negative, None)
    );
    assert_eq!(
        source.loads(),
        1,
        "the absent key did not reach the source again"
    );
    source.set(99, "created");
    mock.increment(Duration::from_secs(6));
    let third = cache.get(&99).await.expect("get");
    assert_eq!(
        (third.status(), value(&third)),
        (CacheStatus::Miss, Some("created"))
    );
}

#[tokio::test]
async fn within_grace_the_stale_value_is_served_and_one_refresh_runs() {
    let (clock, mock) = Clock::mock();
    let source = Source_::with_rows(5);
    let cache = cache(&source, &clock);
    cache.get(&1).await.expect("get");
    source.set(1, "new");
    let gate = source.close_gate();
    mock.increment(Duration::from_secs(65));
    for _ in 0..100 {
        let stale = cache.get(&1).await.expect("get");
        assert_eq!(
            (stale.status(), value(&stale)),
            (CacheStatus::Stale, Some("v1"))
        );
    }
    until(|| source.loads() == 2).await;
    assert_eq!(cache.stats().refreshes, 1, "100 stale hits, one refresh");
    gate.send(true).expect("gate");
    until(|| cache.stats().in_flight == 0).await;
    let fresh = cache.get(&1).await.expect("get");
    assert_eq!(
        (fresh.status(), value(&fresh)),
        (CacheStatus::Hit, Some("new"))
    );
    assert_eq!(source.loads(), 2);
}

#[tokio::test]
async fn past_grace_a_failing_source_gets_stale_if_error_until_the_window_ends() {
    let (clock, mock) = Clock::mock();
    let source = Source_::with_rows(5);
    let cache = cache(&source, &clock);
    cache.get(&2).await.expect("get");
    source.fail.store(true, Ordering::SeqCst);
    mock.increment(Duration::from_secs(120));
    let kept = cache.get(&2).await.expect("stale-if-error");
    assert_eq!(
        (kept.status(), value(&kept)),
        (CacheStatus::StaleIfError, Some("v2"))
    );
    assert_eq!(cache.age(&kept), Duration::from_secs(120));
    mock.increment(Duration::from_secs(300));
    match cache.get(&2).await.map_err(Error::into_kind) {
        Err(ErrorKind::Source(e)) => assert!(e.to_string().contains("source is down")),
        other => panic!("past stale-if-error the error shows: {other:?}"),
    }
    // A key never loaded has nothing to fall back on.
    assert!(matches!(
        cache.get(&3).await.map_err(Error::into_kind),
        Err(ErrorKind::Source(_))
    ));
}

#[tokio::test]
async fn an_open_breaker_rejects_fast_and_stale_data_covers_for_it() {
    let (clock, mock) = Clock::mock();
    let source = Source_::with_rows(100);
    let breaker = CircuitBreaker::with_clock(
        "users-db",
        BreakerConfig {
            window: SlidingWindow::Count { calls: 10 },
            minimum_calls: 5,
            failure_rate_threshold: 0.5,
            open_wait: Duration::from_secs(300),
            ..BreakerConfig::default()
        },
        clock.clone(),
    );
    let cache = TieredCache::builder("users", source.clone())
        .config(config())
        .clock(clock.clone())
        .breaker(Some(breaker.clone()))
        .build()
        .expect("cache");
    cache.get(&0).await.expect("warm key 0");
    source.fail.store(true, Ordering::SeqCst);
    // 1 success + 4 failures = 5 calls (the minimum), 80 % failed: open.
    for k in 1..=4 {
        assert!(matches!(
            cache.get(&k).await.map_err(Error::into_kind),
            Err(ErrorKind::Source(_))
        ));
    }
    let loads_when_opened = source.loads();
    match cache.get(&50).await.map_err(Error::into_kind) {
        Err(ErrorKind::BreakerOpen { name, retry_after }) => {
            assert_eq!(&*name, "users-db");
            assert!(retry_after <= Duration::from_secs(300) && !retry_after.is_zero());
        }
        other => panic!("expected the breaker to reject: {other:?}"),
    }
    assert_eq!(
        source.loads(),
        loads_when_opened,
        "a rejected call never reached the source"
    );
    mock.increment(Duration::from_secs(100));
    let kept = cache.get(&0).await.expect("stale-if-error while open");
    assert_eq!(
        (kept.status(), value(&kept)),
        (CacheStatus::StaleIfError, Some("v0"))
    );
    assert_eq!(source.loads(), loads_when_opened);
}

/// Past grace, a kept value is served when the source is slow, not only
/// when it fails: the caller waits `stale_if_slow`, not `load_timeout`, and
/// the load goes on in the background and fills the cache.
#[tokio::test]
async fn past_grace_a_stalled_source_gets_stale_if_slow_and_the_load_lands_later() {
    let (clock, mock) = Clock::mock();
    let source = Source_::with_rows(5);
    let cache = TieredCache::builder("users", source.clone())
        .config(CacheConfig {
            stale_if_slow: Some(Duration::from_millis(50)),
            load_timeout: Duration::from_secs(30),
            ..config()
        })
        .clock(clock.clone())
        .build()
        .expect("cache");
    cache.get(&2).await.expect("get");
    mock.increment(Duration::from_secs(120));
    source.set(2, "new");
    let gate = source.close_gate();
    let started = std::time::Instant::now();
    let kept = cache.get(&2).await.expect("stale-if-slow");
    assert_eq!(
        (kept.status(), value(&kept)),
        (CacheStatus::StaleIfSlow, Some("v2"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited {:?} for a stalled source",
        started.elapsed()
    );
    assert_eq!(cache.stats().stale_if_slow, 1);
    // The load was not cancelled by the answer: it lands when the source does.
    gate.send(true).expect("gate");
    until(|| cache.get_cached(&2).is_some()).await;
    let fresh = cache.get(&2).await.expect("get");
    assert_eq!(
        (fresh.status(), value(&fresh)),
        (CacheStatus::Hit, Some("new"))
    );
    assert_eq!(source.loads(), 2);
}

/// A cache whose loads go through `breaker` and a bulkhead of `limits`
/// (no stale-if-slow, loads bounded only by a long timeout).
fn behind_breaker_and_bulkhead(
    source: &Source_,
    breaker: BreakerConfig,
    limits: rampart::limit::BulkheadConfig,
) -> (TieredCache<u64, String>, CircuitBreaker) {
    let breaker = CircuitBreaker::new("users-db", breaker);
    let cache = TieredCache::builder("users", source.clone())
        .config(CacheConfig {
            stale_if_slow: None,
            load_timeout: Duration::from_secs(60),
            ..config()
        })
        .clock(Clock::new())
        .breaker(Some(breaker.clone()))
        .bulkhead(Some(rampart::limit::Bulkhead::new("users-db", limits)))
        .build()
        .expect("cache");
    (cache, breaker)
}

/// A stalled source finishes no call, so no outcome reaches the breaker
/// until each load runs into `load_timeout`. The bulkhead's rejections of
/// the callers queued behind the stalled loads count against the source,
/// so the breaker opens within about one bulkhead wait.
#[tokio::test]
async fn bulkhead_rejections_open_the_breaker_while_the_source_stalls() {
    let source = Source_::with_rows(100);
    let _gate = source.close_gate();
    let (cache, breaker) = behind_breaker_and_bulkhead(
        &source,
        BreakerConfig {
            minimum_calls: 5,
            ..BreakerConfig::default()
        },
        rampart::limit::BulkheadConfig {
            max_concurrent: 2,
            max_queued: 100,
            max_wait: Duration::from_millis(100),
        },
    );
    let callers: Vec<_> = (0..20u64)
        .map(|k| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(&k).await })
        })
        .collect();
    let started = std::time::Instant::now();
    for _ in 0..5_000 {
        if breaker.state() == rampart::breaker::State::Open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        breaker.state(),
        rampart::breaker::State::Open,
        "the breaker stayed closed while the source stalled"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        source.loads(),
        2,
        "only the bulkhead's two slots reached the source"
    );
    for caller in callers {
        caller.abort();
    }
}

/// The other side of the test above: a source that answers, met by more
/// misses than the bulkhead admits (the burst of expired keys right after
/// an outage). Its refusals are this process's overload, not the source's
/// failure, and must not open the breaker: counted, the burst re-opened a
/// breaker that had just closed (`rampart drill scenario db-outage`).
#[tokio::test]
async fn bulkhead_refusals_while_the_source_answers_leave_the_breaker_closed() {
    let source = Source_::with_rows(1_000);
    *source.delay.lock() = Duration::from_millis(5);
    let (cache, breaker) = behind_breaker_and_bulkhead(
        &source,
        BreakerConfig {
            minimum_calls: 5,
            consecutive_failures: 3,
            ..BreakerConfig::default()
        },
        rampart::limit::BulkheadConfig {
            max_concurrent: 2,
            max_queued: 2,
            max_wait: Duration::from_millis(500),
        },
    );
    let mut refused = 0;
    for wave in 0..3u64 {
        // Forty distinct cold keys at once: two run, two queue, the rest
        // are refused at once.
        let callers: Vec<_> = (0..40u64)
            .map(|k| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get(&(wave * 40 + k)).await })
            })
            .collect();
        for caller in callers {
            match caller.await.expect("task") {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::BulkheadFull { .. }) => refused += 1,
                Err(e) => panic!("wave {wave}: {e}"),
            }
        }
    }
    assert!(refused >= 60, "only {refused} refusals: no overload made");
    assert_eq!(
        breaker.state(),
        rampart::breaker::State::Closed,
        "{refused} refusals of a source that answered opened the breaker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_gets_of_a_cold_key_load_once() {
    let clock = Clock::new();
    let source = Source_::with_rows(1);
    *source.delay.lock() = Duration::from_millis(20);
    let cache = cache(&source, &clock);
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(&0).await })
        })
        .collect();
    let mut by_source: HashMap<CacheStatus, usize> = HashMap::new();
    for task in tasks {
        let answer = task.await.expect("task").expect("get");
        assert_eq!(value(&answer), Some("v0"));
        *by_source.entry(answer.status()).or_default() += 1;
    }
    assert_eq!(source.loads(), 1);
    assert_eq!(by_source.get(&CacheStatus::Miss), Some(&1), "{by_source:?}");
    let others: usize = by_source
        .iter()
        .filter(|(s, _)| **s != CacheStatus::Miss)
        .map(|(s, n)| {
            assert!(
                matches!(s, CacheStatus::Coalesced | CacheStatus::Hit),
                "{s:?}"
            );
            n
        })
        .sum();
    assert_eq!(others, 999);
}

/// The naive baseline `rampart drill scenario stampede` measures against:
/// with single-flight off, concurrent misses of one key each load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_single_flight_off_every_concurrent_miss_loads() {
    let clock = Clock::new();
    let source = Source_::with_rows(1);
    let gate = source.close_gate();
    let cache = TieredCache::builder("users", source.clone())
        .config(config())
        .clock(clock.clone())
        .bulkhead(None)
        .single_flight(false)
        .build()
        .expect("valid config");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(&0).await })
        })
        .collect();
    // All twenty are in the source at once before any answers.
    until(|| source.loads() == 20).await;
    gate.send(true).expect("gate");
    for task in tasks {
        let answer = task.await.expect("task").expect("get");
        assert_eq!(value(&answer), Some("v0"));
        assert_eq!(answer.status(), CacheStatus::Miss);
    }
    assert_eq!(source.loads(), 20);
    // Once it is cached, a hit is a hit as before.
    assert_eq!(cache.get(&0).await.expect("get").status(), CacheStatus::Hit);
    assert_eq!(source.loads(), 20);
}

#[tokio::test]
async fn a_second_process_reads_the_shared_tier() {
    let (clock, _mock) = Clock::mock();
    let source = Source_::with_rows(10);
    let tier = memory_tier(&clock);
    let (a, b) = (
        over_tier(&source, &clock, &tier),
        over_tier(&source, &clock, &tier),
    );
    assert_eq!(a.get(&4).await.expect("get").status(), CacheStatus::Miss);
    let from_b = b.get(&4).await.expect("get");
    assert_eq!(
        (from_b.status(), value(&from_b)),
        (CacheStatus::L2, Some("v4"))
    );
    assert_eq!(b.get(&4).await.expect("get").status(), CacheStatus::Hit);
    assert_eq!(b.get(&77).await.expect("get").status(), CacheStatus::Miss);
    assert_eq!(
        a.get(&77).await.expect("get").status(),
        CacheStatus::Negative,
        "negative entries are shared too"
    );
    assert_eq!(source.loads(), 2);
}

#[tokio::test]
async fn across_processes_the_lease_lets_one_load_and_the_others_read_l2() {
    let clock = Clock::new();
    let source = Source_::with_rows(10);
    let gate = source.close_gate();
    let tier = memory_tier(&clock);
    let lease = Arc::new(LocalLease::with_clock(
        Duration::from_secs(10),
        clock.clone(),
    ));
    let processes: Vec<_> = (0..3)
        .map(|_| {
            TieredCache::builder("users", source.clone())
                .config(config())
                .clock(clock.clone())
                .tier(tier.clone())
                .lease(lease.clone())
                .build()
                .expect("cache")
        })
        .collect();
    let tasks: Vec<_> = processes
        .iter()
        .flat_map(|p| (0..10).map(move |_| p.clone()))
        .map(|p| tokio::spawn(async move { p.get(&5).await }))
        .collect();
    until(|| source.loads() == 1).await;
    until(|| processes.iter().map(|p| p.stats().lease_waits).sum::<u64>() == 2).await;
    gate.send(true).expect("gate");
    let mut by_source: HashMap<CacheStatus, usize> = HashMap::new();
    for task in tasks {
        let answer = task.await.expect("task").expect("get");
        assert_eq!(value(&answer), Some("v5"));
        *by_source.entry(answer.status()).or_default() += 1;
    }
    assert_eq!(source.loads(), 1, "one load across three processes");
    assert_eq!(by_source.get(&CacheStatus::Miss), Some(&1), "{by_source:?}");
    assert_eq!(
        by_source.get(&CacheStatus::L2),
        Some(&2),
        "the two lease losers read L2: {by_source:?}"
    );
    assert_eq!(
        by_source.get(&CacheStatus::Coalesced),
        Some(&27),
        "{by_source:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lease_wait_that_runs_out_follows_the_policy() {
    let clock = Clock::new();
    let source = Source_::with_rows(10);
    let tier = memory_tier(&clock);
    let lease = Arc::new(LocalLease::with_clock(
        Duration::from_secs(60),
        clock.clone(),
    ));
    // Another process holds the lease and never finishes.
    let rampart::cache::Acquired::Won(_held) = rampart::Lease::acquire(lease.as_ref(), &1)
        .await
        .expect("lease")
    else {
        panic!("the lease was free");
    };
    let build = |policy| {
        TieredCache::builder("users", source.clone())
            .config(CacheConfig {
                lease_wait: Duration::from_millis(200),
                on_lease_timeout: policy,
                ..config()
            })
            .clock(clock.clone())
            .tier(tier.clone())
            .lease(lease.clone())
            .build()
            .expect("cache")
    };
    let failing = build(LeaseTimeoutPolicy::Fail);
    match failing.get(&1).await.map_err(Error::into_kind) {
        Err(ErrorKind::LeaseWaitTimeout(waited)) => assert_eq!(waited, Duration::from_millis(200)),
        other => panic!("expected LeaseWaitTimeout, got {other:?}"),
    }
    assert_eq!(source.loads(), 0);
    let loading = build(LeaseTimeoutPolicy::Load);
    let answer = loading.get(&1).await.expect("loads after the wait");
    assert_eq!(
        (answer.status(), value(&answer)),
        (CacheStatus::Miss, Some("v1"))
    );
    assert_eq!(
        loading.get(&1).await.expect("get").status(),
        CacheStatus::Hit,
        "L1 was filled"
    );
    let l2 = tier.get(&1).await.expect("tier");
    assert!(l2.entry.is_none(), "L2 is left to the lease holder");
    assert_eq!(loading.stats().lease_timeouts, 1);
}

/// The lease holder died mid-load (its guard is never dropped, so no
/// release and no notice): the loser must not sit out its whole
/// `lease_wait`. It re-tries the lease while waiting and loads as soon as
/// the orphaned lease expires.
#[tokio::test]
async fn an_orphaned_lease_costs_its_expiry_not_the_whole_wait() {
    let clock = Clock::new();
    let source = Source_::with_rows(10);
    let tier = memory_tier(&clock);
    let lease = Arc::new(LocalLease::with_clock(
        Duration::from_millis(200),
        clock.clone(),
    ));
    let rampart::cache::Acquired::Won(held) = rampart::Lease::acquire(lease.as_ref(), &3)
        .await
        .expect("lease")
    else {
        panic!("the lease was free");
    };
    // The holder's process is gone: its lease is never released.
    std::mem::forget(held);
    let cache = TieredCache::builder("users", source.clone())
        .config(CacheConfig {
            lease_wait: Duration::from_secs(10),
            on_lease_timeout: LeaseTimeoutPolicy::Fail,
            ..config()
        })
        .clock(clock.clone())
        .tier(tier.clone())
        .lease(lease.clone())
        .build()
        .expect("cache");
    let started = std::time::Instant::now();
    let answer = cache.get(&3).await.expect("loaded after the lease expired");
    let took = started.elapsed();
    assert_eq!(
        (answer.status(), value(&answer)),
        (CacheStatus::Miss, Some("v3"))
    );
    assert!(
        took < Duration::from_secs(5),
        "waited {took:?}: the orphaned lease cost the whole lease_wait"
    );
    assert_eq!(cache.stats().lease_timeouts, 0);
    assert!(
        tier.get(&3).await.expect("tier").entry.is_some(),
        "the new holder filled L2"
    );
}

#[tokio::test]
async fn an_invalidation_during_a_load_refuses_its_fill() {
    let clock = Clock::new();
    let source = Source_::with_rows(10);
    let tier = memory_tier(&clock);
    let cache = TieredCache::builder("users", source.clone())
        .config(config())
        .clock(clock.clone())
        .tier(tier.clone())
        .build()
        .expect("cache");
    let gate = source.close_gate();
    let reader = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(&7).await })
    };
    until(|| source.loads() == 1).await;
    // The row changes and the writer invalidates while the old read runs.
    source.set(7, "updated");
    cache.invalidate(&7).await.expect("invalidate");
    gate.send(true).expect("gate");
    let old = reader.await.expect("task").expect("get");
    assert_eq!(
        value(&old),
        Some("v7"),
        "the caller gets what its load read"
    );
    assert_eq!(
        cache.stats().fills_refused,
        1,
        "the L2 fill was refused, so L1 was not even tried"
    );
    assert!(
        tier.get(&7).await.expect("tier").entry.is_none(),
        "no stale set in L2"
    );
    let next = cache.get(&7).await.expect("get");
    assert_eq!(
        (next.status(), value(&next)),
        (CacheStatus::Miss, Some("updated")),
        "no stale set in L1"
    );
}

/// Rows read by a scan (a warm-up reading whole rows) go into L1 as a
/// load would put them: hits afterwards, no load, and fresh for the TTL.
/// A key invalidated after the ticket was taken is refused (its row may
/// predate the invalidation); a key L1 already holds keeps what it holds;
/// a cache with a shared tier refuses the whole call.
#[tokio::test]
async fn rows_filled_after_a_ticket_are_hits_unless_invalidated_since() {
    let (clock, mock) = Clock::mock();
    let source = Source_::with_rows(10);
    let cache = cache(&source, &clock);
    cache.get(&4).await.expect("get");
    let loads_before = source.loads();

    let ticket = cache.fill_ticket();
    let rows: Vec<(u64, String)> = (0..6).map(|k| (k, format!("scanned {k}"))).collect();
    let refused = cache
        .fill_loaded(rows, &ticket, Duration::from_millis(1))
        .expect("no tier");
    assert!(refused.is_empty(), "five rows put in, key 4 already held");
    let kept = cache.get(&4).await.expect("get");
    assert_eq!(
        (kept.status(), value(&kept)),
        (CacheStatus::Hit, Some("v4"))
    );
    mock.increment(Duration::from_secs(59));
    for k in [0, 1, 2, 3, 5] {
        let scanned = cache.get(&k).await.expect("get");
        assert_eq!(
            (scanned.status(), value(&scanned)),
            (CacheStatus::Hit, Some(format!("scanned {k}").as_str()))
        );
    }
    assert_eq!(source.loads(), loads_before);

    // Key 7 is read by the scan, then changed and invalidated before the
    // fill: its scanned row must not land.
    let ticket = cache.fill_ticket();
    let rows = vec![(7, "scanned 7".to_owned())];
    source.set(7, "new 7");
    cache.invalidate(&7).await.expect("invalidate");
    let refused = cache
        .fill_loaded(rows, &ticket, Duration::from_millis(1))
        .expect("no tier");
    assert_eq!((refused, cache.stats().fills_refused), (vec![7], 1));
    let refused = cache.get(&7).await.expect("get");
    assert_eq!(
        (refused.status(), value(&refused)),
        (CacheStatus::Miss, Some("new 7"))
    );

    let tiered = over_tier(&source, &clock, &memory_tier(&clock));
    let ticket = tiered.fill_ticket();
    let err = tiered
        .fill_loaded(vec![(1, "x".into())], &ticket, Duration::ZERO)
        .expect_err("a tier needs get_many");
    assert!(matches!(err.kind(), ErrorKind::InvalidConfig(_)), "{err}");
    // A ticket from another cache compares against unrelated stripes.
    let err = cache
        .fill_loaded(vec![(1, "x".into())], &tiered.fill_ticket(), Duration::ZERO)
        .expect_err("not its ticket");
    assert!(matches!(err.kind(), ErrorKind::InvalidConfig(_)), "{err}");
}

/// A scan racing writers on two threads: a writer changes each key in the
/// source and invalidates it while a scanner (ticket, read row by row,
/// fill) runs. Whatever the interleaving, no key may end up cached with a
/// value older than the source's. Checking the generation at fill time
/// instead of the ticket's lets the scanner's old rows land (seen failing
/// within the first rounds when tried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanned_rows_never_outlive_an_invalidation_made_during_the_scan() {
    const KEYS: u64 = 64;
    for round in 0..200u64 {
        let (clock, _mock) = Clock::mock();
        let source = Source_::with_rows(KEYS);
        let cache = cache(&source, &clock);
        let writer = tokio::spawn({
            let (source, cache) = (source.clone(), cache.clone());
            async move {
                for k in (0..KEYS).rev() {
                    source.set(k, &format!("new {k}"));
                    cache.invalidate(&k).await.expect("invalidate");
                    if k % 4 == round % 4 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        let scanner = tokio::spawn({
            let (source, cache) = (source.clone(), cache.clone());
            async move {
                let ticket = cache.fill_ticket();
                let mut rows = Vec::new();
                for k in 0..KEYS {
                    let row = source.rows.lock().get(&k).cloned();
                    rows.extend(row.map(|v| (k, v)));
                    if k % 8 == round % 8 {
                        tokio::task::yield_now().await;
                    }
                }
                cache
                    .fill_loaded(rows, &ticket, Duration::ZERO)
                    .expect("no tier")
            }
        });
        writer.await.expect("writer");
        scanner.await.expect("scanner");
        for k in 0..KEYS {
            if let Some(cached) = cache.get_cached(&k) {
                assert_eq!(
                    value(&cached),
                    Some(format!("new {k}").as_str()),
                    "round {round}: key {k} kept a row read before its invalidation"
                );
            }
        }
    }
}

/// Two processes share L2; the other one invalidates while this one's load
/// runs, and its notice never reaches us (lost, or not sent yet). L2 refuses
/// our fill; the old row must not land in our L1 either, single or batch.
#[tokio::test]
async fn a_fill_refused_by_l2_does_not_land_in_l1() {
    let clock = Clock::new();
    let source = Source_::with_rows(10);
    let tier = memory_tier(&clock);
    let (ours, theirs) = (
        over_tier(&source, &clock, &tier),
        over_tier(&source, &clock, &tier),
    );
    for batch in [false, true] {
        let key = if batch { 8 } else { 7 };
        let gate = source.close_gate();
        let loads = source.loads();
        let reader = {
            let ours = ours.clone();
            tokio::spawn(async move {
                if batch {
                    let mut answers = ours.get_many(&[key]).await;
                    answers.pop().expect("one answer")
                } else {
                    ours.get(&key).await
                }
            })
        };
        until(|| source.loads() == loads + 1).await;
        source.set(key, "updated");
        theirs.invalidate(&key).await.expect("invalidate");
        gate.send(true).expect("gate");
        let old = reader.await.expect("task").expect("get");
        assert_eq!(
            value(&old),
            Some(format!("v{key}").as_str()),
            "batch={batch}"
        );
        let next = ours.get(&key).await.expect("get");
        assert_eq!(
            (next.status(), value(&next)),
            (CacheStatus::Miss, Some("updated")),
            "batch={batch}: the refused old row was kept in L1"
        );
    }
}

/// The in-process tier keeps the Redis tier's fence contract: a batch fill
/// (fence 0, no lease) replaces an entry written under a lease when the
/// generation matches, and keeps its fence for later fenced fills.
#[tokio::test]
async fn the_memory_tier_takes_unfenced_batch_fills_and_keeps_the_fence() {
    let clock = Clock::new();
    let tier = memory_tier(&clock);
    let generation = tier.get(&1).await.expect("get").generation;
    let entry = |v: &str| rampart::cache::Stored {
        value: Some(v.to_owned()),
        loaded_at_ms: 0,
        fresh_until_ms: u64::MAX / 2,
        grace_until_ms: u64::MAX / 2,
        error_until_ms: u64::MAX / 2,
        load_micros: 1,
    };
    use rampart::cache::FillOutcome::{Refused, Stored};
    assert_eq!(
        tier.fill(&1, entry("leased"), generation, 5)
            .await
            .expect("fill"),
        Stored
    );
    assert_eq!(
        tier.fill(&1, entry("batch"), generation, 0)
            .await
            .expect("fill"),
        Stored,
        "a batch could never refresh a key once filled under a lease"
    );
    assert_eq!(
        tier.get(&1).await.expect("get").entry.and_then(|e| e.value),
        Some("batch".to_owned())
    );
    assert_eq!(
        tier.fill(&1, entry("late"), generation, 3)
            .await
            .expect("fill"),
        Refused,
        "the batch fill lowered the stored fence"
    );
}

/// A tier whose invalidation waits for a gate, so a read can run between
/// the cache's L1 step and its L2 step.
struct SlowInvalidation {
    tier: Arc<dyn Tier<u64, String>>,
    gate: Mutex<Option<watch::Receiver<bool>>>,
}

#[async_trait]
impl Tier<u64, String> for SlowInvalidation {
    async fn get(&self, key: &u64) -> Result<rampart::cache::TierRead<String>, Error> {
        self.tier.get(key).await
    }
    async fn fill(
        &self,
        key: &u64,
        entry: rampart::cache::Stored<String>,
        generation: u64,
        fence: u64,
    ) -> Result<rampart::cache::FillOutcome, Error> {
        self.tier.fill(key, entry, generation, fence).await
    }
    async fn invalidate(&self, key: &u64) -> Result<(), Error> {
        let gate = self.gate.lock().clone();
        if let Some(mut gate) = gate {
            let _ = gate.wait_for(|open| *open).await;
        }
        self.tier.invalidate(key).await
    }
}

/// A read between dropping the key from L1 and clearing it in L2 finds the
/// old row in L2 and puts it back into L1; the invalidation must not end
/// with that row cached.
#[tokio::test]
async fn a_read_during_an_invalidation_does_not_keep_the_old_row() {
    let clock = Clock::new();
    let source = Source_::with_rows(10);
    let (open, closed) = watch::channel(false);
    let tier = Arc::new(SlowInvalidation {
        tier: memory_tier(&clock),
        gate: Mutex::new(Some(closed)),
    });
    let cache = TieredCache::builder("users", source.clone())
        .config(config())
        .clock(clock.clone())
        .tier(tier.clone())
        .build()
        .expect("cache");
    assert_eq!(
        cache.get(&7).await.expect("get").status(),
        CacheStatus::Miss
    );
    source.set(7, "updated");
    let invalidating = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.invalidate(&7).await })
    };
    // L1 has been dropped once the read goes past it.
    let mut between = None;
    for _ in 0..5_000 {
        let read = cache.get(&7).await.expect("get");
        if read.status() != CacheStatus::Hit {
            between = Some(read);
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let between = between.expect("the invalidation never dropped L1");
    assert_eq!(
        (between.status(), value(&between)),
        (CacheStatus::L2, Some("v7")),
        "the read in between found the old row in L2"
    );
    open.send(true).expect("gate");
    invalidating.await.expect("task").expect("invalidate");
    let after = cache.get(&7).await.expect("get");
    assert_eq!(
        (after.status(), value(&after)),
        (CacheStatus::Miss, Some("updated")),
        "the old row survived the invalidation in L1"
    );
}

#[tokio::test]
async fn ttl_jitter_spreads_expiry() {
    let (clock, mock) = Clock::mock();
    let source = Source_::with_rows(400);
    let cache = TieredCache::builder("users", source.clone())
        .config(CacheConfig {
            jitter: 0.2,
            ..config()
        })
        .clock(clock)
        .build()
        .expect("cache");
    for k in 0..400 {
        cache.get(&k).await.expect("get");
    }
    // Each check looks at keys no earlier check touched: a stale answer
    // starts a refresh, which would give that key a new TTL.
    let count_hits = |cache: TieredCache<u64, String>, keys: std::ops::Range<u64>| async move {
        let mut hits = 0;
        for k in keys {
            hits += usize::from(cache.get(&k).await.expect("get").status() == CacheStatus::Hit);
        }
        hits
    };
    mock.increment(Duration::from_secs(47)); // below 60 × 0.8: all fresh
    assert_eq!(count_hits(cache.clone(), 0..400).await, 400);
    mock.increment(Duration::from_secs(13)); // 60 s: about half expired
    let hits = count_hits(cache.clone(), 0..200).await;
    assert!(
        (40..=160).contains(&hits),
        "{hits} of 200 still fresh at the mean TTL"
    );
    mock.increment(Duration::from_secs(13)); // above 60 × 1.2: none fresh
    assert_eq!(count_hits(cache, 200..400).await, 0);
}

#[tokio::test]
async fn early_refresh_refreshes_a_hot_key_before_it_expires() {
    let (clock, mock) = Clock::mock();
    let source = Source_::with_rows(3);
    // Each load takes one second of mock time: XFetch weighs that.
    *source.advance_on_load.lock() = Some((mock.clone(), Duration::from_secs(1)));
    let cache = TieredCache::builder("users", source.clone())
        .config(CacheConfig {
            early_refresh_beta: Some(1.0),
            ..config()
        })
        .clock(clock.clone())
        .build()
        .expect("cache");
    cache.get(&1).await.expect("get");
    // Long before expiry the chance is e^-59 per hit: nothing happens.
    for _ in 0..1_000 {
        assert_eq!(cache.get(&1).await.expect("get").status(), CacheStatus::Hit);
    }
    assert_eq!(cache.stats().refreshes, 0);
    // Half a second before expiry the chance is e^-0.5 per hit.
    mock.increment(Duration::from_millis(58_500));
    for _ in 0..100 {
        assert_eq!(cache.get(&1).await.expect("get").status(), CacheStatus::Hit);
        if cache.stats().refreshes > 0 {
            break;
        }
    }
    assert_eq!(
        cache.stats().refreshes,
        1,
        "one early refresh right before expiry"
    );
    until(|| source.loads() == 2).await;
}

#[tokio::test]
async fn a_panicking_loader_is_an_error_for_that_call_only() {
    let (clock, _mock) = Clock::mock();
    let source = Source_::with_rows(3);
    let cache = cache(&source, &clock);
    source.panic.store(true, Ordering::SeqCst);
    match cache.get(&1).await.map_err(Error::into_kind) {
        Err(ErrorKind::LoadPanicked(m)) => assert!(m.contains("source panicked")),
        other => panic!("expected LoadPanicked, got {other:?}"),
    }
    source.panic.store(false, Ordering::SeqCst);
    assert_eq!(
        cache.get(&1).await.expect("get").status(),
        CacheStatus::Miss
    );
}

/// A panic is this process's bug on one input, not the source failing:
/// it must not open the breaker on the keys that load fine (the source
/// answered every query).
#[tokio::test]
async fn panicking_loads_leave_the_breaker_closed_for_the_other_keys() {
    let (clock, _mock) = Clock::mock();
    let source = Source_::with_rows(20);
    let breaker = CircuitBreaker::new(
        "users-db",
        BreakerConfig {
            minimum_calls: 5,
            consecutive_failures: 3,
            ..BreakerConfig::default()
        },
    );
    let cache = TieredCache::builder("users", source.clone())
        .config(config())
        .clock(clock)
        .breaker(Some(breaker.clone()))
        .build()
        .expect("cache");
    source.panic.store(true, Ordering::SeqCst);
    for k in 0..10u64 {
        match cache.get(&k).await.map_err(Error::into_kind) {
            Err(ErrorKind::LoadPanicked(_)) => {}
            other => panic!("key {k}: expected LoadPanicked, got {other:?}"),
        }
    }
    assert_eq!(breaker.state(), rampart::breaker::State::Closed);
    source.panic.store(false, Ordering::SeqCst);
    assert_eq!(
        cache.get(&15).await.expect("an unrelated key").status(),
        CacheStatus::Miss
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_source_times_out_and_counts_as_a_failure() {
    let clock = Clock::new();
    let source = Source_::with_rows(3);
    *source.delay.lock() = Duration::from_secs(30);
    let cache = TieredCache::builder("users", source.clone())
        .config(CacheConfig {
            load_timeout: Duration::from_millis(500),
            ..config()
        })
        .clock(clock)
        .build()
        .expect("cache");
    match cache.get(&1).await.map_err(Error::into_kind) {
        Err(ErrorKind::LoadTimeout(limit)) => assert_eq!(limit, Duration::from_millis(500)),
        other => panic!("expected LoadTimeout, got {other:?}"),
    }
    let breaker = cache.breaker().expect("default breaker");
    assert_eq!(breaker.stats().failures, 1);
}

#[tokio::test]
async fn get_many_loads_only_the_misses_in_one_batch() {
    let (clock, _mock) = Clock::mock();
    let source = Source_::with_rows(10);
    let tier = memory_tier(&clock);
    let (a, b) = (
        over_tier(&source, &clock, &tier),
        over_tier(&source, &clock, &tier),
    );
    b.get(&2).await.expect("into L2");
    a.get(&1).await.expect("into a's L1");
    let loads_before = source.loads();
    let answers = a.get_many(&[1, 2, 3, 42, 3]).await;
    let got: Vec<(CacheStatus, Option<&str>)> = answers
        .iter()
        .map(|r| {
            let l = r.as_ref().expect("answer");
            (l.status(), l.value().map(String::as_str))
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (CacheStatus::Hit, Some("v1")),
            (CacheStatus::L2, Some("v2")),
            (CacheStatus::Miss, Some("v3")),
            (CacheStatus::Miss, None),
            (CacheStatus::Miss, Some("v3")),
        ]
    );
    assert_eq!(source.loads(), loads_before + 1, "one batch call");
    assert_eq!(
        source.batch_loads.lock().last(),
        Some(&vec![3, 42]),
        "only misses, each once"
    );
    assert_eq!(
        a.get(&42).await.expect("get").status(),
        CacheStatus::Negative
    );
    assert_eq!(
        b.get(&3).await.expect("get").status(),
        CacheStatus::L2,
        "the batch filled L2"
    );
}

#[tokio::test]
async fn get_many_falls_back_per_key_when_the_source_fails() {
    let (clock, mock) = Clock::mock();
    let source = Source_::with_rows(10);
    let cache = cache(&source, &clock);
    cache.get(&1).await.expect("get");
    mock.increment(Duration::from_secs(100));
    source.fail.store(true, Ordering::SeqCst);
    let answers = cache.get_many(&[1, 2]).await;
    let first = answers[0].as_ref().expect("fallback");
    assert_eq!(
        (first.status(), value(first)),
        (CacheStatus::StaleIfError, Some("v1"))
    );
    assert!(matches!(
        answers[1].as_ref().map_err(Error::kind),
        Err(ErrorKind::Source(_))
    ));
}

#[test]
fn bad_settings_are_refused_with_the_field_named() {
    let source = Source_::with_rows(1);
    let cases: Vec<(CacheConfig, &str)> = vec![
        (
            CacheConfig {
                l1_capacity: 0,
                ..config()
            },
            "l1_capacity",
        ),
        (
            CacheConfig {
                ttl: Duration::ZERO,
                ..config()
            },
            "ttl",
        ),
        (
            CacheConfig {
                jitter: 1.5,
                ..config()
            },
            "jitter",
        ),
        (
            CacheConfig {
                grace: Duration::from_secs(500),
                ..config()
            },
            "stale_if_error",
        ),
        (
            CacheConfig {
                early_refresh_beta: Some(-1.0),
                ..config()
            },
            "early_refresh_beta",
        ),
        (
            CacheConfig {
                load_timeout: Duration::ZERO,
                ..config()
            },
            "load_timeout",
        ),
        (
            CacheConfig {
                lease_wait: Duration::ZERO,
                ..config()
            },
            "lease_wait",
        ),
    ];
    for (bad, field) in cases {
        match TieredCache::builder("users", source.clone())
            .config(bad)
            .build()
            .map_err(Error::into_kind)
        {
            Err(ErrorKind::InvalidConfig(message)) => {
                assert!(
                    message.contains(field) && message.contains("users"),
                    "{message}"
                )
            }
            Ok(_) => panic!("{field}: accepted"),
            Err(other) => panic!("{field}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn clear_local_drops_l1_and_refuses_fills_already_running() {
    let clock = Clock::new();
    let source = Source_::with_rows(10);
    let cache = cache(&source, &clock);
    cache.get(&1).await.expect("get");
    cache.get(&2).await.expect("get");
    let gate = source.close_gate();
    let running = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(&3).await })
    };
    until(|| source.loads() == 3).await;
    cache.clear_local();
    gate.send(true).expect("gate");
    assert_eq!(
        running.await.expect("task").expect("get").status(),
        CacheStatus::Miss
    );
    assert!(
        cache.get_cached(&1).is_none() && cache.get_cached(&2).is_none(),
        "L1 emptied"
    );
    assert!(
        cache.get_cached(&3).is_none(),
        "the fill begun before the clear was refused"
    );
}

// ------------------------------------------------------- live settings

/// `set_config`: a shorter TTL applies from the next fill; an invalid
/// config is refused and the running one stays.
#[tokio::test]
async fn set_config_shortens_the_ttl_from_the_next_fill_and_refuses_an_invalid_one() {
    let (clock, mock) = Clock::mock();
    let source = Source_::with_rows(2);
    let cache = cache(&source, &clock);
    cache.get(&1).await.expect("get");
    cache
        .set_config(CacheConfig {
            ttl: Duration::from_secs(2),
            grace: Duration::ZERO,
            ..config()
        })
        .expect("valid");
    assert_eq!(cache.config().ttl, Duration::from_secs(2));
    cache.get(&0).await.expect("get"); // filled under the new TTL
    mock.increment(Duration::from_secs(3));
    assert_eq!(
        cache.get(&0).await.expect("get").status(),
        CacheStatus::Miss
    );
    assert_eq!(
        cache.get(&1).await.expect("get").status(),
        CacheStatus::Hit,
        "an entry keeps the deadline it was stored with"
    );
    let refused = cache.set_config(CacheConfig {
        jitter: 2.0,
        ..config()
    });
    assert!(
        matches!(refused.as_ref().map_err(|e| e.kind()), Err(ErrorKind::InvalidConfig(m)) if m.contains("jitter")),
        "{refused:?}"
    );
    assert_eq!(cache.config().ttl, Duration::from_secs(2), "kept");
}
