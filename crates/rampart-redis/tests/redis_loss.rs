//! Redis loss is not an outage: a private Redis killed mid-test and
//! restarted. While it is down, reads go L1 → local flight → source, fills
//! are skipped, and the breaker makes each call fail fast; when it is back,
//! the tier is used again without anyone doing anything.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rampart::breaker::{BreakerConfig, CircuitBreaker, SlidingWindow, State};
use rampart::cache::{CacheConfig, Source, TieredCache};
use rampart::{BoxError, Loader};
use rampart_redis::conn::Redis;
use rampart_redis::{Notices, RedisConn, RedisLease, RedisTier};
use support::PrivateRedis;

#[derive(Clone, Default)]
struct Rows {
    loads: Arc<AtomicUsize>,
}

#[async_trait]
impl Loader<u64, Bytes> for Rows {
    async fn load(&self, key: &u64) -> Result<Option<Bytes>, BoxError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Ok(Some(Bytes::from(format!("row {key}"))))
    }
}

#[tokio::test]
async fn a_killed_redis_degrades_to_the_source_and_recovers_by_itself() {
    let mut server = PrivateRedis::start();
    let conn = RedisConn::connect(&[server.url()]).await.expect("connect");
    let breaker = CircuitBreaker::new(
        "redis",
        BreakerConfig {
            window: SlidingWindow::Count { calls: 10 },
            minimum_calls: 4,
            open_wait: Duration::from_millis(300),
            half_open_probes: 1,
            ..BreakerConfig::default()
        },
    );
    let redis = Redis::new(conn, breaker.clone(), Duration::from_millis(200));
    let rows = Rows::default();
    let build = || {
        TieredCache::builder("loss", rows.clone())
            .config(CacheConfig {
                jitter: 0.0,
                ..CacheConfig::default()
            })
            .tier(Arc::new(RedisTier::new(redis.clone(), "loss")))
            .lease(Arc::new(RedisLease::new(
                redis.clone(),
                "loss",
                Duration::from_secs(5),
                Notices::default(),
            )))
            .build()
            .expect("cache")
    };
    let a = build();
    assert_eq!(a.get(&1).await.expect("get").source(), Source::Miss);
    assert_eq!(
        build().get(&1).await.expect("get").source(),
        Source::L2,
        "the tier works"
    );

    server.kill();
    // Every read still answers, from the source; after a few failures the
    // breaker opens and Redis is not even tried.
    for k in 10..30 {
        let started = Instant::now();
        let answer = build().get(&k).await.expect("served without Redis");
        assert_eq!(answer.source(), Source::Miss);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "key {k} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(breaker.state(), State::Open, "{:?}", breaker.stats());
    let fast = Instant::now();
    build().get(&99).await.expect("get");
    assert!(
        fast.elapsed() < Duration::from_millis(50),
        "open breaker: no Redis wait ({:?})",
        fast.elapsed()
    );
    assert_eq!(
        a.get(&1).await.expect("get").source(),
        Source::Hit,
        "L1 unaffected"
    );

    server.restart();
    // Recovery needs nobody: after the open wait a probe goes through, the
    // breaker closes, and fills reach Redis again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let writer = build();
        writer.get(&500).await.expect("get");
        if build().get(&500).await.expect("get").source() == Source::L2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered: {:?}",
            breaker.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.invalidate_local(&500);
    }
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_reports_a_gap_and_resubscribes() {
    let mut server = PrivateRedis::start();
    let notices = Notices::start(&server.url()).expect("notices");
    let gaps = Arc::new(AtomicUsize::new(0));
    let heard = Arc::new(parking_lot::Mutex::new(Vec::new()));
    {
        let gaps = gaps.clone();
        notices.on_gap(move || {
            gaps.fetch_add(1, Ordering::SeqCst);
        });
        let heard = heard.clone();
        notices.on_invalidate(move |resource, key| heard.lock().push(format!("{resource}/{key}")));
    }
    let wait_until = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let subscribed = || notices.is_subscribed();
    tokio::task::block_in_place(|| wait_until("first subscription", &subscribed));

    server.kill();
    tokio::task::block_in_place(|| {
        wait_until("the gap is reported", &|| gaps.load(Ordering::SeqCst) == 1)
    });
    assert!(!notices.is_subscribed());

    server.restart();
    tokio::task::block_in_place(|| wait_until("resubscribed after restart", &subscribed));
    let conn = RedisConn::connect(&[server.url()]).await.expect("connect");
    let redis = Redis::new(
        conn,
        CircuitBreaker::new("r", BreakerConfig::default()),
        Duration::from_secs(1),
    );
    let tier = RedisTier::<u64>::new(redis, "gap");
    rampart::Tier::invalidate(&tier, &4)
        .await
        .expect("invalidate");
    tokio::task::block_in_place(|| {
        wait_until("invalidations heard again", &|| {
            heard.lock().contains(&"gap/4".to_owned())
        })
    });
}
