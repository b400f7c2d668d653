//! The notice subscriber stays subscribed through what kills
//! subscriptions — a restarted Redis, a stalled one, a dead seed node, a
//! dead Cluster node — and reports every window in which notices may have
//! been missed, both when it opens and when it closes.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rampart::breaker::{BreakerConfig, CircuitBreaker};
use rampart::Tier;
use rampart_redis::conn::GuardedRedis;
use rampart_redis::{Notices, RedisConn, RedisTier};
use support::{PrivateCluster, PrivateRedis};

const LIFE: Duration = Duration::from_secs(600);

/// A subscriber on `urls` that counts gap-handler calls and records the
/// invalidations it hears as `resource/key`.
struct Watched {
    notices: Notices,
    gap_calls: Arc<AtomicUsize>,
    heard: Arc<Mutex<Vec<String>>>,
}

impl Watched {
    fn start(urls: &[String]) -> Watched {
        let notices = Notices::start(urls, Duration::from_millis(500)).expect("notices");
        let gap_calls = Arc::new(AtomicUsize::new(0));
        let heard = Arc::new(Mutex::new(Vec::new()));
        {
            let gap_calls = gap_calls.clone();
            notices.on_gap(move || {
                gap_calls.fetch_add(1, Ordering::SeqCst);
            });
            let heard = heard.clone();
            notices
                .on_invalidate(move |resource, key| heard.lock().push(format!("{resource}/{key}")));
        }
        Watched {
            notices,
            gap_calls,
            heard,
        }
    }

    fn gap_calls(&self) -> usize {
        self.gap_calls.load(Ordering::SeqCst)
    }

    fn heard(&self, notice: &str) -> bool {
        self.heard.lock().iter().any(|n| n == notice)
    }
}

/// Polls `cond` every 10 ms; panics with `what` after `within`. Returns how
/// long it took.
async fn wait_until(what: &str, within: Duration, cond: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < within, "{what} (waited {within:?})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

async fn publish_invalidation(url: &str, resource: &str, key: &str) -> redis::RedisResult<i64> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("PUBLISH")
        .arg(rampart_redis::keys::INVALIDATE_CHANNEL)
        .arg(format!("{resource}\n{key}"))
        .query_async(&mut conn)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_reports_the_gap_when_it_drops_and_when_it_is_back() {
    let mut server = PrivateRedis::start();
    let watched = Watched::start(&[server.url()]);
    let notices = watched.notices.clone();
    let long = Duration::from_secs(10);
    wait_until("first subscription", long, || notices.is_subscribed()).await;
    assert_eq!(watched.gap_calls(), 0, "a first subscription is no gap");
    assert_eq!(notices.subscribed_url(), Some(server.url()));

    tokio::task::block_in_place(|| server.kill());
    wait_until("the drop is reported", long, || watched.gap_calls() == 1).await;
    assert!(!notices.is_subscribed());
    assert_eq!(notices.gaps(), 1);

    // Whatever was published (and cached) while it was down is suspect:
    // the handler runs again once the subscription is back, before it
    // counts as up.
    tokio::task::block_in_place(|| server.restart());
    wait_until("resubscribed after restart", long, || {
        notices.is_subscribed()
    })
    .await;
    assert_eq!(watched.gap_calls(), 2, "the gap handler ran on the way up");
    assert_eq!(notices.subscriptions(), 2);

    let conn = RedisConn::connect(&[server.url()]).await.expect("connect");
    let redis = GuardedRedis::new(
        conn,
        CircuitBreaker::new("r", BreakerConfig::default()),
        Duration::from_secs(1),
    );
    let tier = RedisTier::<u64>::new(redis, "gap", LIFE);
    tier.invalidate(&4).await.expect("invalidate");
    wait_until("invalidations heard again", long, || watched.heard("gap/4")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_is_noticed_by_the_liveness_check() {
    let server = PrivateRedis::start();
    let watched = Watched::start(&[server.url()]);
    let notices = watched.notices.clone();
    let long = Duration::from_secs(10);
    wait_until("first subscription", long, || notices.is_subscribed()).await;

    // The socket stays open and silent: only a PING that is not answered
    // tells the subscription is dead.
    tokio::task::block_in_place(|| server.stop());
    let noticed = wait_until("the stall is noticed", long, || watched.gap_calls() == 1).await;
    assert!(
        noticed < Duration::from_secs(4),
        "took {noticed:?} (PING every 0.5 s, 1 s to answer)"
    );
    assert!(!notices.is_subscribed());

    tokio::task::block_in_place(|| server.cont());
    wait_until("resubscribed after the stall", long, || {
        notices.is_subscribed()
    })
    .await;
    assert_eq!(watched.gap_calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_seed_does_not_keep_the_process_unsubscribed() {
    let mut cluster = PrivateCluster::start();
    tokio::task::block_in_place(|| cluster.kill_node(0));
    let urls = cluster.urls();
    let watched = Watched::start(&urls);
    let notices = watched.notices.clone();
    wait_until(
        "subscribed through another seed",
        Duration::from_secs(10),
        || notices.is_subscribed(),
    )
    .await;
    let through = notices.subscribed_url().expect("subscribed through a URL");
    assert_ne!(through, urls[0], "the dead seed");
    // Heard whichever node the notice is published on.
    let other = urls
        .iter()
        .skip(1)
        .find(|url| **url != through)
        .expect("a third node");
    publish_invalidation(other, "seed", "1")
        .await
        .expect("publish");
    wait_until("heard across the cluster", Duration::from_secs(5), || {
        watched.heard("seed/1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_node_that_carries_the_subscription_moves_it_to_another() {
    let mut cluster = PrivateCluster::start_with_replicas(1);
    let urls = cluster.urls();
    let watched = Watched::start(&urls);
    let notices = watched.notices.clone();
    wait_until("first subscription", Duration::from_secs(10), || {
        notices.is_subscribed()
    })
    .await;
    let carrier = notices.subscribed_url().expect("subscribed");
    let node = cluster.node_of_url(&carrier).expect("one of ours");

    tokio::task::block_in_place(|| cluster.kill_node(node));
    let killed = Instant::now();
    // Up again after a drop (right after the kill it may still look up).
    wait_until("resubscribed elsewhere", Duration::from_secs(10), || {
        notices.gaps() == 1 && notices.is_subscribed()
    })
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "took {:?}",
        killed.elapsed()
    );
    let now = notices.subscribed_url().expect("subscribed");
    assert_ne!(now, carrier);
    assert_eq!(notices.gaps(), 1);

    // An invalidation through the tier (the Cluster fails the dead node
    // over meanwhile) reaches this subscriber.
    let live: Vec<String> = urls.iter().filter(|u| **u != carrier).cloned().collect();
    let conn = RedisConn::connect(&live).await.expect("cluster");
    let redis = GuardedRedis::new(
        conn,
        CircuitBreaker::new("redis", BreakerConfig::default()),
        Duration::from_secs(1),
    );
    let tier = RedisTier::<u64>::new(redis, "moved", LIFE);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !watched.heard("moved/7") {
        assert!(
            Instant::now() < deadline,
            "the invalidation was never heard"
        );
        // Errs until the failover is done; the notice goes out regardless.
        let _ = tier.invalidate(&7).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
