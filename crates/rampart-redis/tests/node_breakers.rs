//! One breaker per Cluster node: a dead master's slots fail fast, the
//! healthy masters' slots are never refused, and after the failover the
//! promoted replica's slots work again without waiting for the dead
//! master's breaker to probe.
//!
//! With one breaker for the deployment this fails both ways it can: the
//! dead master's calls kept running into the timeout (a third of the calls
//! failing never opened it), or, had it opened, the healthy keys would have
//! been refused with them.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rampart::breaker::{BreakerConfig, CircuitBreaker, SlidingWindow, State};
use rampart::{ErrorKind, Tier};
use rampart_redis::conn::GuardedRedis;
use rampart_redis::keys::KeySet;
use rampart_redis::{RedisConn, RedisTier};
use support::PrivateCluster;

const LIFE: Duration = Duration::from_secs(600);
const TIMEOUT: Duration = Duration::from_millis(300);

/// What the load saw for one key.
#[derive(Debug)]
struct Call {
    dead_node: bool,
    at: Instant,
    took: Duration,
    outcome: Result<(), ErrorKind>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_opens_its_own_breaker_only() {
    // Healthy masters keep serving their slots while one is down (Redis's
    // default refuses every slot until the failover: then there is nothing
    // for a per-node breaker to keep apart).
    let mut cluster =
        PrivateCluster::start_with_args(1, &["--cluster-require-full-coverage", "no"]);
    let conn = RedisConn::connect(&cluster.urls()).await.expect("cluster");
    let config = BreakerConfig {
        window: SlidingWindow::Time { seconds: 5 },
        minimum_calls: 10,
        consecutive_failures: 10,
        // Long: the slots must come back through the slot map, not by
        // probing the dead master's breaker.
        open_wait: Duration::from_secs(30),
        ..BreakerConfig::default()
    };
    let redis = GuardedRedis::new(conn, CircuitBreaker::new("redis", config), TIMEOUT);
    let tier = Arc::new(RedisTier::<u64>::new(redis.clone(), "nb", LIFE));

    // The slot map arrives within a refresh: the deployment's own breaker
    // and one per master.
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.breakers().all().len() < 4 {
        assert!(Instant::now() < deadline, "no slot map");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead_name = format!("redis@127.0.0.1:{}", cluster.node_port(0));
    // Node 0's slots, as the Cluster itself says (not as the code under
    // test maps them).
    let ranges: Vec<(i64, i64, i64)> = {
        let mut node = redis::Client::open(cluster.node_url(1))
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut node)
            .await
            .expect("CLUSTER SLOTS");
        let int = |v: &redis::Value| match v {
            redis::Value::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        };
        slots
            .iter()
            .map(|range| match &range[2] {
                redis::Value::Array(master) => (int(&range[0]), int(&range[1]), int(&master[1])),
                other => panic!("not a node: {other:?}"),
            })
            .collect()
    };
    let port_0 = cluster.node_port(0);
    let on_node_0 = |key: u64| {
        let slot = KeySet::new("nb", &key.to_string()).slot();
        ranges.iter().any(|&(start, end, port)| {
            (start..=end).contains(&i64::from(slot)) && port == i64::from(port_0)
        })
    };
    let keys: Vec<u64> = (0..90).collect();
    let dead_keys = keys.iter().filter(|&&k| on_node_0(k)).count();
    assert!(
        dead_keys > 10 && dead_keys < 60,
        "{dead_keys} of 90 keys on node 0"
    );
    for key in &keys {
        tier.get(key).await.expect("read before the kill");
    }

    tokio::task::block_in_place(|| cluster.kill_node(0));
    let killed = Instant::now();

    // Load over every key from four tasks until the dead master's slots
    // answer again (the replica promoted) or 20 s pass.
    let calls = Arc::new(Mutex::new(Vec::<Call>::new()));
    let recovered = Arc::new(Mutex::new(None::<Instant>));
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            let (tier, calls, recovered) = (tier.clone(), calls.clone(), recovered.clone());
            let dead: Vec<bool> = keys.iter().map(|&k| on_node_0(k)).collect();
            tokio::spawn(async move {
                let mut i = task;
                while recovered.lock().is_none() && killed.elapsed() < Duration::from_secs(20) {
                    let key = i % 90;
                    i += 4;
                    let began = Instant::now();
                    let outcome = tier.get(&(key as u64)).await;
                    let call = Call {
                        dead_node: dead[key],
                        at: began,
                        took: began.elapsed(),
                        outcome: outcome.map(|_| ()).map_err(|e| e.kind().clone()),
                    };
                    if call.dead_node
                        && call.outcome.is_ok()
                        && began > killed + Duration::from_millis(500)
                    {
                        recovered.lock().get_or_insert(began);
                    }
                    calls.lock().push(call);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("load task");
    }
    let calls = std::mem::take(&mut *calls.lock());
    let recovered = recovered.lock().unwrap_or_else(|| {
        let last: Vec<String> = calls
            .iter()
            .filter(|c| c.dead_node)
            .rev()
            .take(5)
            .map(|c| format!("{:?} after the kill: {:?}", c.at - killed, c.outcome))
            .collect();
        let slot = KeySet::new("nb", "0").slot();
        panic!(
            "the dead master's slots never answered again in 20 s; last calls: {last:#?}; \
             breakers now: {:?}; key 0's: {}",
            redis
                .breakers()
                .all()
                .iter()
                .map(|b| (b.name().to_owned(), b.state()))
                .collect::<Vec<_>>(),
            redis.breakers().for_slot(slot).name()
        )
    });

    // The dead master's breaker opened, and while it was open its slots
    // were refused at once.
    let refused: Vec<&Call> = calls
        .iter()
        .filter(|c| c.dead_node && c.at < recovered)
        .filter(|c| matches!(c.outcome, Err(ErrorKind::BreakerOpen { .. })))
        .collect();
    assert!(
        refused.len() > 20,
        "the dead master's breaker hardly refused: {} refusals",
        refused.len()
    );
    let slowest = refused.iter().map(|c| c.took).max().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(50),
        "a refusal took {slowest:?}"
    );
    let first_refusal = refused.iter().map(|c| c.at).min().unwrap_or(recovered);
    eprintln!(
        "first refusal {:?} after the kill; slots back {:?} after it; {} calls, {} refused",
        first_refusal - killed,
        recovered - killed,
        calls.len(),
        refused.len()
    );

    // The healthy masters' slots were never refused by a breaker, and no
    // healthy node's breaker left Closed.
    let healthy_refused = calls
        .iter()
        .filter(|c| !c.dead_node && matches!(c.outcome, Err(ErrorKind::BreakerOpen { .. })))
        .count();
    assert_eq!(healthy_refused, 0, "healthy slots refused");
    for breaker in redis.breakers().all() {
        if breaker.name() != dead_name {
            assert_eq!(breaker.state(), State::Closed, "{}", breaker.name());
        }
    }
    let dead = redis
        .breakers()
        .all()
        .into_iter()
        .find(|b| b.name() == dead_name)
        .expect("the dead master's breaker");
    assert_eq!(dead.state(), State::Open);

    // After the promotion the keys answer through the new master's own
    // (closed) breaker: every key again.
    for key in &keys {
        tier.get(key).await.expect("read after the failover");
    }
}
