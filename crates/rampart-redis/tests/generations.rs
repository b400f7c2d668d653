//! What the tier keeps in Redis, and for how long, on a private Redis (the
//! tests flush and restart it): generations never repeat across a lost
//! generation key, bookkeeping keys expire after the longest entry life,
//! a lost fence counter restarts above the fences it issued, hot-key
//! copies of different keys never share a name, and an invalidation
//! reaches every copy it can even when one fails.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rampart::breaker::{BreakerConfig, CircuitBreaker};
use rampart::cache::{Acquired, CacheConfig, CacheStatus, FillOutcome, TieredCache};
use rampart::{BoxError, Lease, Loader, Tier};
use rampart_redis::bounds::max_entry_life;
use rampart_redis::conn::GuardedRedis;
use rampart_redis::keys::KeySet;
use rampart_redis::{Notices, RedisConn, RedisLease, RedisTier};
use support::{guarded, stored, PrivateRedis};

const LIFE: Duration = Duration::from_secs(600);

async fn query<T: redis::FromRedisValue>(server: &PrivateRedis, cmd: &redis::Cmd) -> T {
    let mut conn = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("probe connection");
    cmd.query_async(&mut conn).await.expect("probe command")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_that_read_a_generation_before_it_was_lost_is_refused() {
    let mut server = PrivateRedis::start();
    let tier = RedisTier::<u64>::new(guarded(&server, Duration::from_secs(2)).await, "aba", LIFE);

    // Lost to FLUSHALL (or eviction).
    let before = tier.get(&1).await.expect("get").generation;
    let () = query(&server, &redis::cmd("FLUSHALL")).await;
    assert_eq!(
        tier.fill(&1, stored("old"), before, 0).await.expect("fill"),
        FillOutcome::Refused,
        "the generation is gone: the fill must not land"
    );
    let after = tier.get(&1).await.expect("get").generation;
    assert_ne!(after, before, "a new life starts from a new epoch");
    assert_eq!(
        tier.fill(&1, stored("old"), before, 0).await.expect("fill"),
        FillOutcome::Refused,
        "nor after the key is read again"
    );
    assert_eq!(
        tier.fill(&1, stored("new"), after, 0).await.expect("fill"),
        FillOutcome::Stored,
        "the normal path still stores"
    );

    // Lost to a restart (persistence is off).
    let before = tier.get(&2).await.expect("get").generation;
    tokio::task::block_in_place(|| server.restart());
    let mut refused = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        // The connection comes back by itself; until then the fill errs.
        if let Ok(outcome) = tier.fill(&2, stored("old"), before, 0).await {
            refused = outcome == FillOutcome::Refused;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused,
        "the fill from before the restart landed (or never ran)"
    );
    assert_ne!(tier.get(&2).await.expect("get").generation, before);
}

/// A batch fill (fence 0: warm-up and batch reads take no lease) replaces
/// an entry written under a lease when the generation matches, and keeps
/// the stored fence, so an older lease's late fill is still refused.
#[tokio::test]
async fn an_unfenced_batch_fill_replaces_a_fenced_entry_but_keeps_its_fence() {
    // Fences as large as real ones (Redis TIME in µs): two of them differ in
    // digits a Lua number printed by `tostring` would drop.
    const LEASED: u64 = 1_764_800_000_000_005;
    let server = PrivateRedis::start();
    for replicas in [1, 3] {
        let tier = RedisTier::<u64>::new(
            guarded(&server, Duration::from_secs(2)).await,
            "batch",
            LIFE,
        )
        .replicas(replicas);
        let key = u64::from(replicas);
        let generation = tier.get(&key).await.expect("get").generation;
        assert_eq!(
            tier.fill(&key, stored("leased"), generation, LEASED)
                .await
                .expect("fill"),
            FillOutcome::Stored
        );
        assert_eq!(
            tier.fill(&key, stored("batch"), generation, 0)
                .await
                .expect("fill"),
            FillOutcome::Stored,
            "replicas={replicas}: a batch could never refresh a key once filled under a lease"
        );
        let read = tier.get(&key).await.expect("get");
        assert_eq!(
            read.entry.and_then(|e| e.value),
            Some(Bytes::from_static(b"batch"))
        );
        assert_eq!(
            tier.fill(&key, stored("late"), generation, LEASED - 2)
                .await
                .expect("fill"),
            FillOutcome::Refused,
            "replicas={replicas}: the stored fence was lowered (or lost digits) by the batch fill"
        );
    }
}

#[tokio::test]
async fn invalidating_a_lost_generation_starts_from_a_random_epoch() {
    let server = PrivateRedis::start();
    let tier = RedisTier::<u64>::new(
        guarded(&server, Duration::from_secs(2)).await,
        "epoch",
        LIFE,
    );
    // Counting from 0 would make this 1, the same in every life.
    tier.invalidate(&1).await.expect("invalidate");
    let first = tier.get(&1).await.expect("get").generation;
    let () = query(&server, &redis::cmd("FLUSHALL")).await;
    tier.invalidate(&1).await.expect("invalidate");
    let second = tier.get(&1).await.expect("get").generation;
    assert_ne!(first, second, "generations repeated across a loss");
    assert!(second < 1 << 53, "a Lua double holds it exactly: {second}");
}

#[derive(Clone)]
struct Nothing;

#[async_trait]
impl Loader<u64, Bytes> for Nothing {
    async fn load(&self, _key: &u64) -> Result<Option<Bytes>, BoxError> {
        Ok(None)
    }
}

#[tokio::test]
async fn bookkeeping_keys_expire_after_the_longest_entry_life() {
    let server = PrivateRedis::start();
    let redis = guarded(&server, Duration::from_secs(2)).await;
    let config = CacheConfig {
        ttl: Duration::from_secs(10),
        jitter: 0.0,
        grace: Duration::from_secs(1),
        stale_if_error: Duration::from_secs(15),
        load_timeout: Duration::from_secs(5),
        ..CacheConfig::default()
    };
    let life = max_entry_life(&config);
    assert_eq!(life, Duration::from_secs(30));
    let cache = TieredCache::builder("bounded", Nothing)
        .config(config.clone())
        .tier(Arc::new(RedisTier::new(redis.clone(), "bounded", life)))
        .lease(Arc::new(RedisLease::new(
            redis.clone(),
            "bounded",
            Duration::from_secs(5),
            life,
            Notices::default(),
        )))
        .build()
        .expect("cache");
    let tier = RedisTier::<u64>::new(redis, "bounded", life);

    let bounded = |what: String, pttl: i64| {
        assert!(
            pttl > 0 && pttl <= life.as_millis() as i64,
            "{what}: PTTL {pttl} ms, bound {life:?}"
        );
    };
    // A miss on a key that does not exist (anyone can cause those).
    assert_eq!(
        cache.get(&404).await.expect("get").status(),
        CacheStatus::Miss
    );
    let keys = KeySet::new("bounded", "404");
    for key in [&keys.generation, &keys.fence, &keys.value] {
        bounded(
            key.clone(),
            query(&server, redis::cmd("PTTL").arg(key)).await,
        );
    }
    // An invalidation of a key never seen.
    tier.invalidate(&405).await.expect("invalidate");
    let keys = KeySet::new("bounded", "405");
    bounded(
        keys.generation.clone(),
        query(&server, redis::cmd("PTTL").arg(&keys.generation)).await,
    );
}

#[tokio::test]
async fn a_lost_fence_counter_restarts_above_the_fences_it_issued() {
    let server = PrivateRedis::start();
    let redis = guarded(&server, Duration::from_secs(2)).await;
    let lease = RedisLease::<u64>::new(
        redis.clone(),
        "fence",
        Duration::from_secs(5),
        LIFE,
        Notices::default(),
    );
    let tier = RedisTier::<u64>::new(redis, "fence", LIFE);
    let generation = tier.get(&1).await.expect("get").generation;
    let Acquired::Won(first) = lease.acquire(&1).await.expect("acquire") else {
        panic!("free");
    };
    let issued = first.fence();
    assert_eq!(
        tier.fill(&1, stored("v1"), generation, issued)
            .await
            .expect("fill"),
        FillOutcome::Stored
    );
    drop(first);
    // The counter is lost (evicted, or expired) while the stored fence
    // lives on next to the value.
    let keys = KeySet::new("fence", "1");
    let _: i64 = query(&server, redis::cmd("DEL").arg(&keys.fence)).await;
    let mut second = None;
    for _ in 0..100 {
        // The first lease's release runs in the background.
        if let Acquired::Won(guard) = lease.acquire(&1).await.expect("acquire") {
            second = Some(guard);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = second.expect("the released lease is free again");
    assert!(
        second.fence() > issued,
        "restarted at {} below the stored fence {issued}",
        second.fence()
    );
    assert_eq!(
        tier.fill(&1, stored("v2"), generation, second.fence())
            .await
            .expect("fill"),
        FillOutcome::Stored,
        "the new holder can fill"
    );
}

#[tokio::test]
async fn hot_key_copies_of_different_keys_never_share_a_name() {
    let server = PrivateRedis::start();
    let tier =
        RedisTier::<String>::new(guarded(&server, Duration::from_secs(2)).await, "hot", LIFE)
            .replicas(3);
    let (k, k1) = ("K".to_owned(), "K~1".to_owned());
    for key in [&k, &k1] {
        let generation = tier.get(key).await.expect("get").generation;
        assert_eq!(
            tier.fill(key, stored(key), generation, 0)
                .await
                .expect("fill"),
            FillOutcome::Stored
        );
    }
    let all_copies_hold = |key: &'static str| {
        let server = &server;
        async move {
            let mut held = Vec::new();
            for r in 0..3 {
                let name = KeySet::replica("hot", key, r).value;
                held.push(query::<i64>(server, redis::cmd("EXISTS").arg(name)).await == 1);
            }
            held
        }
    };
    assert_eq!(all_copies_hold("K").await, [true; 3]);
    assert_eq!(all_copies_hold("K~1").await, [true; 3]);

    tier.invalidate(&k).await.expect("invalidate");
    assert_eq!(all_copies_hold("K").await, [false; 3]);
    assert_eq!(
        all_copies_hold("K~1").await,
        [true; 3],
        "invalidating K touched K~1"
    );
    for _ in 0..30 {
        let read = tier.get(&k1).await.expect("get");
        assert_eq!(
            read.entry.and_then(|e| e.value),
            Some(Bytes::from_static(b"K~1"))
        );
    }

    let generation = tier.get(&k).await.expect("get").generation;
    tier.fill(&k, stored("K"), generation, 0)
        .await
        .expect("fill");
    tier.invalidate(&k1).await.expect("invalidate");
    assert_eq!(
        all_copies_hold("K").await,
        [true; 3],
        "invalidating K~1 touched K"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_clears_every_copy_it_can_and_always_tells_the_others() {
    let server = PrivateRedis::start();
    let tier = RedisTier::<u64>::new(
        guarded(&server, Duration::from_secs(2)).await,
        "partial",
        LIFE,
    )
    .replicas(3);
    let notices = Notices::start(&[server.url()], Duration::from_secs(2)).expect("notices");
    let heard = Arc::new(parking_lot::Mutex::new(Vec::new()));
    {
        let heard = heard.clone();
        notices.on_invalidate(move |resource, key| heard.lock().push(format!("{resource}/{key}")));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !notices.is_subscribed() {
        assert!(Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let generation = tier.get(&1).await.expect("get").generation;
    assert_eq!(
        tier.fill(&1, stored("v"), generation, 0)
            .await
            .expect("fill"),
        FillOutcome::Stored
    );
    let copy = |r| KeySet::replica("partial", "1", r);
    for r in 0..3 {
        let held: i64 = query(&server, redis::cmd("EXISTS").arg(copy(r).value)).await;
        assert_eq!(held, 1, "copy {r} was filled");
    }

    // A client that may not touch copy 1 (as if its node were gone): its
    // script fails there, and only there.
    let () = query(
        &server,
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("partial")
            .arg("on")
            .arg(">secret")
            .arg(format!("~{}*", copy(0).tag))
            .arg(format!("~{}*", copy(2).tag))
            .arg("&*")
            .arg("+@all"),
    )
    .await;
    let conn = RedisConn::connect(&[format!(
        "redis://partial:secret@127.0.0.1:{}/",
        server.port()
    )])
    .await
    .expect("connect");
    let partial = RedisTier::<u64>::new(
        GuardedRedis::new(
            conn,
            CircuitBreaker::new("partial", BreakerConfig::default()),
            Duration::from_secs(2),
        ),
        "partial",
        LIFE,
    )
    .replicas(3);

    assert!(
        partial.invalidate(&1).await.is_err(),
        "a failed copy is reported"
    );
    let left: Vec<i64> = {
        let mut left = Vec::new();
        for r in 0..3 {
            left.push(query(&server, redis::cmd("EXISTS").arg(copy(r).value)).await);
        }
        left
    };
    assert_eq!(
        left,
        [0, 1, 0],
        "copies 0 and 2 cleared past the failing copy 1"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !heard.lock().contains(&"partial/1".to_owned()) {
        assert!(
            Instant::now() < deadline,
            "the invalidation notice was not published"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
