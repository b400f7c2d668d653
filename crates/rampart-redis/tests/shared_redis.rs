//! The tier, the lease and the notices against the machine's Redis on
//! 127.0.0.1:6379 (`RAMPART_TEST_REDIS_URL` to point elsewhere). Nothing here
//! stops Redis; each test uses its own resource name, so keys never collide.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rampart::breaker::{BreakerConfig, CircuitBreaker};
use rampart::cache::{Acquired, CacheConfig, CacheStatus, FillOutcome, Stored, TieredCache};
use rampart::{BoxError, Lease, Loader, Tier};
use rampart_redis::conn::GuardedRedis;
use rampart_redis::deploy::{local_cache, RedisDeployment, TierOptions};
use rampart_redis::keys::KeySet;
use rampart_redis::{Notices, RedisConn, RedisLease, RedisTier};
use tokio::sync::watch;

/// Long enough never to matter in these tests.
const LIFE: Duration = Duration::from_secs(600);

/// The namespace the "processes" below put their resources under.
const NAMESPACE: &str = "test";

fn url() -> String {
    std::env::var("RAMPART_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn resource(test: &str) -> String {
    format!("t{}-{test}-{}", std::process::id(), fastrand::u32(..))
}

async fn redis() -> GuardedRedis {
    let conn = RedisConn::connect(&[url()])
        .await
        .expect("Redis on 127.0.0.1:6379");
    GuardedRedis::new(
        conn,
        CircuitBreaker::new("redis", BreakerConfig::default()),
        Duration::from_secs(2),
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn stored(value: &str) -> Stored<Bytes> {
    let now = now_ms();
    Stored {
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        loaded_at_ms: now,
        fresh_until_ms: now + 60_000,
        grace_until_ms: now + 70_000,
        error_until_ms: now + 300_000,
        load_micros: 100,
    }
}

#[tokio::test]
async fn fills_check_generation_and_fence() {
    let tier = RedisTier::<u64>::new(redis().await, resource("fill"), LIFE);
    let read = tier.get(&1).await.expect("get");
    assert!(read.entry.is_none());
    let generation = read.generation;
    assert_eq!(
        tier.fill(&1, stored("a"), generation, 5)
            .await
            .expect("fill"),
        FillOutcome::Stored
    );
    let read = tier.get(&1).await.expect("get");
    assert_eq!(
        read.entry.and_then(|e| e.value),
        Some(Bytes::from_static(b"a"))
    );
    // An older fence (a holder that outlived its lease) is refused.
    assert_eq!(
        tier.fill(&1, stored("old"), generation, 3)
            .await
            .expect("fill"),
        FillOutcome::Refused
    );
    assert_eq!(
        tier.fill(&1, stored("newer"), generation, 6)
            .await
            .expect("fill"),
        FillOutcome::Stored
    );
    // A fill that read the generation before an invalidation is refused.
    tier.invalidate(&1).await.expect("invalidate");
    assert!(tier.get(&1).await.expect("get").entry.is_none(), "deleted");
    assert_eq!(
        tier.fill(&1, stored("stale"), generation, 7)
            .await
            .expect("fill"),
        FillOutcome::Refused
    );
    let fresh = tier.get(&1).await.expect("get").generation;
    assert_eq!(fresh, generation + 1);
    assert_eq!(
        tier.fill(&1, stored("b"), fresh, 1).await.expect("fill"),
        FillOutcome::Stored,
        "fences reset with the entry"
    );
}

#[tokio::test]
async fn a_lease_has_one_holder_a_growing_fence_and_wakes_its_waiters() {
    let url = url();
    let notices = Notices::start(&[url], Duration::from_secs(2)).expect("notices");
    for _ in 0..200 {
        if notices.is_subscribed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(notices.is_subscribed());
    let lease = RedisLease::<u64>::new(
        redis().await,
        resource("lease"),
        Duration::from_secs(5),
        LIFE,
        notices,
    );
    let Acquired::Won(first) = lease.acquire(&9).await.expect("acquire") else {
        panic!("the lease was free");
    };
    let Acquired::Lost(wait) = lease.acquire(&9).await.expect("acquire") else {
        panic!("two holders");
    };
    let started = std::time::Instant::now();
    let fence = first.fence();
    drop(first);
    tokio::time::timeout(Duration::from_secs(2), wait)
        .await
        .expect("the release notice woke the waiter");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "woken by the notice, not a timeout"
    );
    let Acquired::Won(second) = lease.acquire(&9).await.expect("acquire") else {
        panic!("released lease not free");
    };
    assert!(
        second.fence() > fence,
        "fences grow: {} then {}",
        fence,
        second.fence()
    );
}

#[tokio::test]
async fn the_watchdog_keeps_a_long_load_s_lease() {
    let lease = RedisLease::<u64>::new(
        redis().await,
        resource("watchdog"),
        Duration::from_millis(300),
        LIFE,
        Notices::default(),
    );
    let Acquired::Won(held) = lease.acquire(&1).await.expect("acquire") else {
        panic!("free");
    };
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        matches!(lease.acquire(&1).await.expect("acquire"), Acquired::Lost(_)),
        "still held after 3 lease lengths"
    );
    drop(held);
}

/// A source that counts loads and can hold them at a gate.
#[derive(Clone)]
struct Rows {
    loads: Arc<AtomicUsize>,
    gate: watch::Receiver<bool>,
    version: Arc<parking_lot::Mutex<String>>,
}

#[async_trait]
impl Loader<u64, Bytes> for Rows {
    async fn load(&self, key: &u64) -> Result<Option<Bytes>, BoxError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let value = format!("{key}:{}", self.version.lock());
        let mut gate = self.gate.clone();
        gate.wait_for(|open| *open).await?;
        Ok(Some(Bytes::from(value)))
    }
}

/// One "process": its own connection, notice subscriber and cache, set up
/// the way the server sets them up.
async fn process(rows: &Rows, name: &str, lease_ttl: Duration) -> TieredCache<u64, Bytes> {
    let deployment = RedisDeployment::connect(
        &[url()],
        Duration::from_secs(2),
        CircuitBreaker::new("redis", BreakerConfig::default()),
        NAMESPACE,
    )
    .await
    .expect("Redis on 127.0.0.1:6379");
    for _ in 0..200 {
        if deployment.notices().is_subscribed() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let config = CacheConfig {
        jitter: 0.0,
        lease_wait: Duration::from_secs(5),
        ..CacheConfig::default()
    };
    let cache = deployment
        .attach(
            TieredCache::builder(name.to_owned(), rows.clone()).config(config.clone()),
            name,
            &config,
            TierOptions {
                replicas: 1,
                lease_ttl: Some(lease_ttl),
            },
        )
        .build()
        .expect("cache");
    deployment.wire_notices([(
        name.to_owned(),
        local_cache(cache.clone(), |raw| raw.parse::<u64>().ok()),
    )]);
    cache
}

#[tokio::test]
async fn three_processes_load_a_cold_key_once() {
    let name = resource("once");
    let (open, gate) = watch::channel(false);
    let rows = Rows {
        loads: Arc::new(AtomicUsize::new(0)),
        gate,
        version: Arc::new(parking_lot::Mutex::new("v1".into())),
    };
    let mut processes = Vec::new();
    for _ in 0..3 {
        processes.push(process(&rows, &name, Duration::from_secs(5)).await);
    }
    let tasks: Vec<_> = processes
        .iter()
        .flat_map(|p| (0..100).map(move |_| p.clone()))
        .map(|p| tokio::spawn(async move { p.get(&77).await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    open.send(true).expect("open");
    let mut by_source: HashMap<CacheStatus, usize> = HashMap::new();
    for task in tasks {
        let answer = task.await.expect("task").expect("get");
        assert_eq!(answer.value().map(|v| v.as_ref()), Some(&b"77:v1"[..]));
        *by_source.entry(answer.status()).or_default() += 1;
    }
    assert_eq!(
        rows.loads.load(Ordering::SeqCst),
        1,
        "one load across three processes: {by_source:?}"
    );
    assert_eq!(by_source.get(&CacheStatus::Miss), Some(&1), "{by_source:?}");
    assert_eq!(by_source.get(&CacheStatus::L2), Some(&2), "{by_source:?}");
}

#[tokio::test]
async fn a_holder_that_outlived_its_lease_cannot_overwrite_newer_data() {
    let name = resource("fence");
    let (open_a, gate_a) = watch::channel(false);
    let rows_a = Rows {
        loads: Arc::new(AtomicUsize::new(0)),
        gate: gate_a,
        version: Arc::new(parking_lot::Mutex::new("old".into())),
    };
    let (_open_b, gate_b) = watch::channel(true);
    let rows_b = Rows {
        loads: Arc::new(AtomicUsize::new(0)),
        gate: gate_b,
        version: Arc::new(parking_lot::Mutex::new("new".into())),
    };
    let a = process(&rows_a, &name, Duration::from_secs(30)).await;
    let b = process(&rows_b, &name, Duration::from_secs(30)).await;
    let stalled = {
        let a = a.clone();
        tokio::spawn(async move { a.get(&5).await })
    };
    while rows_a.loads.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A stalls long enough for its lease to lapse (as if paused): the lease
    // key is gone, B takes a new lease with a higher fence and fills.
    let mut conn = redis::Client::open(url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let _: i64 = redis::cmd("DEL")
        .arg(KeySet::new(&format!("{NAMESPACE}:{name}"), "5").lease)
        .query_async(&mut conn)
        .await
        .expect("del");
    let from_b = b.get(&5).await.expect("get");
    assert_eq!(
        (from_b.status(), from_b.value().map(|v| v.as_ref())),
        (CacheStatus::Miss, Some(&b"5:new"[..]))
    );
    // A wakes up with its old row and tries to fill: refused by the fence.
    open_a.send(true).expect("open");
    let late = stalled.await.expect("task").expect("get");
    assert_eq!(
        late.value().map(|v| v.as_ref()),
        Some(&b"5:old"[..]),
        "A's caller gets what A read"
    );
    assert!(a.stats().fills_refused >= 1, "{:?}", a.stats());
    let c = process(&rows_b, &name, Duration::from_secs(30)).await;
    let shared = c.get(&5).await.expect("get");
    assert_eq!(
        (shared.status(), shared.value().map(|v| v.as_ref())),
        (CacheStatus::L2, Some(&b"5:new"[..])),
        "L2 still holds the newer row"
    );
}

#[tokio::test]
async fn an_invalidation_reaches_every_process_l1() {
    let name = resource("bus");
    let (_open, gate) = watch::channel(true);
    let rows = Rows {
        loads: Arc::new(AtomicUsize::new(0)),
        gate,
        version: Arc::new(parking_lot::Mutex::new("v1".into())),
    };
    // Each process's notices are wired to its own L1, as in the server.
    let a = process(&rows, &name, Duration::from_secs(5)).await;
    let b = process(&rows, &name, Duration::from_secs(5)).await;
    a.get(&3).await.expect("get");
    assert_eq!(b.get(&3).await.expect("get").status(), CacheStatus::L2);
    assert_eq!(b.get(&3).await.expect("get").status(), CacheStatus::Hit);
    *rows.version.lock() = "v2".into();
    a.invalidate(&3).await.expect("invalidate");
    let mut dropped = false;
    for _ in 0..200 {
        if b.get_cached(&3).is_none() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(dropped, "b's L1 copy was dropped by the bus");
    let fresh = b.get(&3).await.expect("get");
    assert_eq!(fresh.value().map(|v| v.as_ref()), Some(&b"3:v2"[..]));
}

#[tokio::test]
async fn a_batch_is_read_and_filled_through_redis_in_one_go() {
    let name = resource("batch");
    let (_open, gate) = watch::channel(true);
    let rows = Rows {
        loads: Arc::new(AtomicUsize::new(0)),
        gate,
        version: Arc::new(parking_lot::Mutex::new("v".into())),
    };
    let a = process(&rows, &name, Duration::from_secs(5)).await;
    let b = process(&rows, &name, Duration::from_secs(5)).await;
    let keys: Vec<u64> = (1..=50).collect();
    for answer in a.get_many(&keys).await {
        assert_eq!(answer.expect("answer").status(), CacheStatus::Miss);
    }
    for (key, answer) in keys.iter().zip(b.get_many(&keys).await) {
        let answer = answer.expect("answer");
        assert_eq!(
            answer.status(),
            CacheStatus::L2,
            "key {key} from the shared tier"
        );
        assert_eq!(
            answer.value().map(|v| v.to_vec()),
            Some(format!("{key}:v").into_bytes())
        );
    }
}
