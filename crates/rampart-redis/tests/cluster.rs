//! The tier, lease and notices on a private 3-master Redis Cluster: every
//! key's value, generation, fences and lease share a hash tag, so the Lua
//! scripts run on its slot's node; keys spread over the nodes.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rampart::breaker::{BreakerConfig, CircuitBreaker};
use rampart::cache::{Acquired, CacheConfig, CacheStatus, FillOutcome, TieredCache};
use rampart::{BoxError, Lease, Loader, Tier};
use rampart_redis::conn::GuardedRedis;
use rampart_redis::deploy::{RedisDeployment, TierOptions};
use rampart_redis::keys::KeySet;
use rampart_redis::{Notices, RedisConn, RedisLease, RedisTier};
use support::{stored, PrivateCluster};

/// Long enough never to matter in these tests.
const LIFE: Duration = Duration::from_secs(600);

#[derive(Clone, Default)]
struct Rows {
    loads: Arc<AtomicUsize>,
}

#[async_trait]
impl Loader<u64, Bytes> for Rows {
    async fn load(&self, key: &u64) -> Result<Option<Bytes>, BoxError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(Some(Bytes::from(format!("row {key}"))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_and_lease_work_across_cluster_slots() {
    let cluster = PrivateCluster::start();
    let conn = RedisConn::connect(&cluster.urls()).await.expect("cluster");
    assert!(matches!(conn, RedisConn::Cluster(_)));
    let redis = GuardedRedis::new(
        conn,
        CircuitBreaker::new("redis", BreakerConfig::default()),
        Duration::from_secs(2),
    );
    let tier = RedisTier::<u64>::new(redis.clone(), "c", LIFE);

    // Keys on different slots: fill, read, fence and generation checks.
    let mut slots = std::collections::HashSet::new();
    for key in 0..30u64 {
        let mut node = redis::Client::open(cluster.node_url(0))
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(KeySet::new("c", &key.to_string()).value)
            .query_async(&mut node)
            .await
            .expect("keyslot");
        slots.insert(slot / 5462); // which third of the slot space
        let generation = tier.get(&key).await.expect("get").generation;
        assert_eq!(
            tier.fill(&key, stored("v"), generation, 2)
                .await
                .expect("fill"),
            FillOutcome::Stored
        );
        assert_eq!(
            tier.fill(&key, stored("old"), generation, 1)
                .await
                .expect("fill"),
            FillOutcome::Refused
        );
        tier.invalidate(&key).await.expect("invalidate");
        assert_eq!(
            tier.fill(&key, stored("stale"), generation, 3)
                .await
                .expect("fill"),
            FillOutcome::Refused
        );
    }
    assert_eq!(slots.len(), 3, "keys spread over all three masters");

    // Leases and release notices across "processes" on the cluster.
    let notices = Notices::start(&cluster.urls(), Duration::from_secs(2)).expect("notices");
    while !notices.is_subscribed() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lease = RedisLease::<u64>::new(
        redis.clone(),
        "c",
        Duration::from_secs(5),
        LIFE,
        notices.clone(),
    );
    let Acquired::Won(held) = lease.acquire(&7).await.expect("acquire") else {
        panic!("free");
    };
    let Acquired::Lost(wait) = lease.acquire(&7).await.expect("acquire") else {
        panic!("two holders");
    };
    drop(held);
    tokio::time::timeout(Duration::from_secs(2), wait)
        .await
        .expect("the release notice crossed the cluster");

    // Three caches, one cold key: one load.
    let rows = Rows::default();
    let config = CacheConfig {
        jitter: 0.0,
        ..CacheConfig::default()
    };
    let mut caches = Vec::new();
    for _ in 0..3 {
        // Each "process" sets up its Redis half as the server does.
        let process = RedisDeployment::connect(
            &cluster.urls(),
            Duration::from_secs(2),
            CircuitBreaker::new("redis", BreakerConfig::default()),
            "test",
        )
        .await
        .expect("cluster");
        // Losers are woken by release notices: subscribed before the race.
        while !process.notices().is_subscribed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let cache = process
            .attach(
                TieredCache::builder("c", rows.clone()).config(config.clone()),
                "c",
                &config,
                TierOptions {
                    replicas: 1,
                    lease_ttl: Some(Duration::from_secs(5)),
                },
            )
            .build()
            .expect("cache");
        caches.push(cache);
    }
    let tasks: Vec<_> = caches
        .iter()
        .flat_map(|c| (0..20).map(move |_| c.clone()))
        .map(|c| tokio::spawn(async move { c.get(&1_000).await }))
        .collect();
    let mut misses = 0;
    for task in tasks {
        let answer = task.await.expect("task").expect("get");
        misses += usize::from(answer.status() == CacheStatus::Miss);
    }
    assert_eq!(rows.loads.load(Ordering::SeqCst), 1);
    assert_eq!(misses, 1);
}

async fn keyspace_hits(url: &str) -> u64 {
    let mut conn = redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("keyspace_hits:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_is_split_over_replicas_and_invalidated_in_all() {
    let cluster = PrivateCluster::start();
    let conn = RedisConn::connect(&cluster.urls()).await.expect("cluster");
    let redis = GuardedRedis::new(
        conn,
        CircuitBreaker::new("redis", BreakerConfig::default()),
        Duration::from_secs(2),
    );
    let tier = RedisTier::<u64>::new(redis.clone(), "hot", LIFE).replicas(6);
    let generation = tier.get(&1).await.expect("get").generation;
    assert_eq!(
        tier.fill(&1, stored("hot row"), generation, 1)
            .await
            .expect("fill"),
        FillOutcome::Stored
    );

    // Six copies under six hash tags, on more than one node.
    let mut node = redis::Client::open(cluster.node_url(0))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let mut thirds = std::collections::HashSet::new();
    for r in 0..6 {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(KeySet::replica("hot", "1", r).value)
            .query_async(&mut node)
            .await
            .expect("keyslot");
        thirds.insert(slot / 5462);
    }
    assert!(
        thirds.len() >= 2,
        "copies in different slots on different nodes"
    );

    // Reads spread: several nodes answer hits.
    let before: Vec<u64> =
        futures_util::future::join_all((0..3).map(|i| keyspace_hits_owned(cluster.node_url(i))))
            .await;
    for _ in 0..60 {
        let read = tier.get(&1).await.expect("get");
        assert_eq!(
            read.entry.and_then(|e| e.value),
            Some(Bytes::from_static(b"hot row"))
        );
    }
    let after: Vec<u64> =
        futures_util::future::join_all((0..3).map(|i| keyspace_hits_owned(cluster.node_url(i))))
            .await;
    let nodes_hit = before.iter().zip(&after).filter(|(b, a)| a > b).count();
    assert!(
        nodes_hit >= 2,
        "hits per node before {before:?} after {after:?}"
    );

    // Invalidation clears every copy, and a fill from before it is refused everywhere.
    tier.invalidate(&1).await.expect("invalidate");
    for _ in 0..30 {
        assert!(
            tier.get(&1).await.expect("get").entry.is_none(),
            "a copy survived"
        );
    }
    assert_eq!(
        tier.fill(&1, stored("stale"), generation, 2)
            .await
            .expect("fill"),
        FillOutcome::Refused
    );
    for _ in 0..30 {
        assert!(
            tier.get(&1).await.expect("get").entry.is_none(),
            "a stale copy was written"
        );
    }
}

async fn keyspace_hits_owned(url: String) -> u64 {
    keyspace_hits(&url).await
}

/// The stock gate's scripts on a Cluster. RESERVE and RELEASE declare all
/// their keys, but REAP and LOAD build the per-request key names inside
/// Lua from the SKU's prefix: legal on a Cluster only because every name
/// carries the SKU's hash tag, so the script never leaves its slot. SKUs
/// on every master, each sold exactly, with keys written by LOAD and read
/// by RESERVE and REAP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_gate_sells_exactly_on_every_cluster_node() {
    use rampart_redis::stock::{GateAnswer, RedisStock};

    let cluster = PrivateCluster::start();
    let conn = RedisConn::connect(&cluster.urls()).await.expect("cluster");
    let redis = GuardedRedis::new(
        conn,
        CircuitBreaker::new("redis", BreakerConfig::default()),
        Duration::from_secs(2),
    );
    let gate = RedisStock::new(redis, "t", 60_000);
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms");
    let later = now_ms + 60_000;

    // Enough SKUs that their tags fall on all three masters.
    let mut node = redis::Client::open(cluster.node_url(0))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let skus: Vec<String> = (0..12).map(|i| format!("sku-{i}")).collect();
    let mut thirds = std::collections::HashSet::new();
    for sku in &skus {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(KeySet::new("t:stock", sku).tag)
            .query_async(&mut node)
            .await
            .expect("keyslot");
        thirds.insert(slot / 5462);
    }
    assert_eq!(thirds.len(), 3, "SKUs on all three masters");

    for sku in &skus {
        // LOAD: 20 units free and one live hold of 2 under key `pre`, whose
        // key name the script builds.
        gate.load(sku, 20, &[("pre".to_owned(), later, 2)])
            .await
            .expect("load");
        assert_eq!(
            gate.reserve(sku, "pre", 2, later).await.expect("reserve"),
            GateAnswer::Seen,
            "LOAD wrote the request key on {sku}'s node"
        );
    }

    // 30 buyers of one unit per SKU, all at once: exactly 20 held each.
    let tasks: Vec<_> = skus
        .iter()
        .flat_map(|sku| (0..30).map(move |b| (sku.clone(), format!("buyer-{b}"))))
        .map(|(sku, key)| {
            let gate = gate.clone();
            tokio::spawn(async move { (sku.clone(), gate.reserve(&sku, &key, 1, later).await) })
        })
        .collect();
    let mut held = std::collections::HashMap::<String, usize>::new();
    for task in tasks {
        let (sku, answer) = task.await.expect("task");
        match answer.expect("reserve") {
            GateAnswer::Held { .. } => *held.entry(sku).or_default() += 1,
            GateAnswer::SoldOut { available } => assert_eq!(available, 0),
            other => panic!("{sku}: unexpected {other:?}"),
        }
    }
    for sku in &skus {
        assert_eq!(held.get(sku), Some(&20), "{sku} sold exactly its stock");
        assert_eq!(gate.available(sku).await.expect("available"), Some(0));
        // A cancel of the loaded hold gives its units back once, however
        // often it is repeated.
        assert!(gate
            .release(sku, "pre", 2, true, true)
            .await
            .expect("release"));
        assert!(!gate
            .release(sku, "pre", 2, true, true)
            .await
            .expect("release"));
        assert_eq!(gate.available(sku).await.expect("available"), Some(2));
    }

    // REAP reads each expired hold's quantity from a key it names itself.
    for sku in &skus {
        gate.load(
            sku,
            0,
            &[
                ("late".to_owned(), now_ms - 1, 3),
                ("live".to_owned(), later, 4),
            ],
        )
        .await
        .expect("load");
        assert_eq!(gate.reap(sku, now_ms).await.expect("reap"), 1, "{sku}");
        assert_eq!(
            gate.available(sku).await.expect("available"),
            Some(3),
            "{sku}"
        );
        assert_eq!(
            gate.reap(sku, now_ms).await.expect("reap"),
            0,
            "reaped once"
        );
    }
}
