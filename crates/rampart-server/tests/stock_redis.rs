//! Stock with the Redis gate: two instances over PostgreSQL + Redis sell
//! exactly the stock, and the gate agrees with SQL afterwards (also after
//! cancellations); Redis killed mid-sale (a private redis-server) → the
//! sale goes on through SQL, still exact.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::stock::{counts, in_db, put, reserve, rows_in_db, settle, staggered_sale, storm};
use common::{start_with, Schema, TestServer};
use rampart_server::drill::PrivateRedis;
use serde_json::json;
use tokio::sync::RwLock;

async fn instances(schema: &Schema, redis_url: &str, namespace: &str) -> Vec<TestServer> {
    let mut servers = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, redis_url) = (schema.url(), redis_url.to_owned());
        let config = common::config(dir.path(), |c| {
            c.database.url = url;
            c.redis.urls = vec![redis_url];
            c.redis.namespace = namespace.to_owned();
            // Generous on a loaded test machine: a call timing out sends
            // its request to SQL (exact, but the gate then drifts until
            // the reconcile, which the agreement checks must not lean on).
            c.redis.timeout = Duration::from_secs(2);
            c.stock.reconcile_interval = Duration::from_secs(600);
        });
        servers.push(start_with(config, dir).await);
    }
    servers
}

/// The gate agrees with SQL's `available`, at once or after the repair
/// of a drift. On a loaded machine a Redis call can time out or meet an
/// open breaker: a reservation then goes to SQL alone (the gate reads
/// *high* — it lets through buyers SQL refuses — until the periodic
/// reconcile, which this test sets far off, so one reconcile is run here),
/// or a give-back is lost (the gate reads *low*, refusing units SQL could
/// sell: the service must heal that by itself, rebuilding the SKU at the
/// reaper's next tick, 1 s).
async fn gate_agrees(t: &TestServer, sku: &str, sql_available: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut gate = gate_available(t, sku).await.expect("gate has the SKU");
    while gate < sql_available && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gate = gate_available(t, sku).await.expect("gate has the SKU");
    }
    assert!(
        gate >= sql_available,
        "the gate ({gate}) stayed below SQL ({sql_available}) for 5 s: it refuses what SQL can sell"
    );
    if gate != sql_available {
        eprintln!(
            "the gate drifted +{} (Redis calls timed out); reconciling",
            gate - sql_available
        );
        let stock = t.server.state.stock.clone().expect("stock");
        stock.reconcile(sku).await.expect("reconcile");
        assert_eq!(
            gate_available(t, sku).await,
            Some(sql_available),
            "Redis agrees after a reconcile"
        );
    }
}

/// The gate's count, read through the service's own guarded connection.
/// On a loaded machine a few timed-out calls can open the Redis breaker
/// (seen once in four runs): the read is retried until the breaker lets it
/// through again, for at most 20 s.
async fn gate_available(t: &TestServer, sku: &str) -> Option<i64> {
    let stock = t.server.state.stock.clone().expect("stock");
    let gate = stock.gate().expect("gate");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match gate.available(sku).await {
            Ok(available) => return available,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("reading the gate: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the gate could not be read for 20 s: {e}"),
        }
    }
}

/// Buyers in the two-instance storm, for a tenth as many units:
/// `RAMPART_STOCK_BUYERS`, 2,000 for 200 by default (~2 s). The issue's
/// storm is 10,000 for 1,000 (`RAMPART_STOCK_BUYERS=10000`): it passes,
/// but takes minutes in a debug build, for two measured reasons. (1) The
/// servers' listen backlog: with tokio's default of 1024 the kernel
/// dropped 199,691 handshakes in one run (`nstat TcpExtListenOverflows`),
/// each a client retrying a second or more later: 404 s. With
/// `server.listen_backlog = 4096`: none dropped, 143 s and 268 s in two
/// runs. (2) What is left is shedding: over 1,024 requests in flight per
/// instance each gets a 503 at once, and the buyers come back; the first
/// storm saw ~98,000 503s for its 10,000 buyers (232 s of the 268), the
/// test process (two debug servers and 10,000 debug clients on 2 cores)
/// answering a few hundred requests a second. That is the test machine's
/// pace, not the service's (BENCHMARKS.md has the release figures).
fn storm_size() -> (usize, i64) {
    let buyers = std::env::var("RAMPART_STOCK_BUYERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n >= 10)
        .unwrap_or(2_000);
    (buyers, (buyers / 10) as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_with_the_redis_gate_sell_exactly_and_agree_with_sql() {
    let schema = Schema::create("stock_gate").await;
    let redis = PrivateRedis::start().await.expect("private redis-server");
    let servers = instances(&schema, &redis.url(), &schema.name).await;
    let (a, b) = (&servers[0], &servers[1]);
    let (buyers, units) = storm_size();
    assert_eq!(
        put(a, "HOT", Some(("If-None-Match", "*")), json!(units))
            .await
            .status(),
        201
    );
    // The storm (10,000 buyers for 1,000 units with
    // RAMPART_STOCK_BUYERS=10000) over both instances, arriving ten a
    // millisecond. Spread, not all in one instant, so that a loaded test
    // machine times few Redis calls out (each sends its buyer to SQL
    // alone: still exact, but the gate drifts up until a reconcile, which
    // `gate_agrees` allows once).
    let bases = Arc::new(RwLock::new(vec![a.base.clone(), b.base.clone()]));
    let mut won = staggered_sale(a.client.clone(), bases.clone(), "HOT", buyers, 10)
        .await
        .expect("sale");
    assert_eq!(won.len(), units as usize, "exactly the stock");
    let ids: HashSet<_> = won.iter().collect();
    assert_eq!(ids.len(), units as usize);
    // The same storm again, every buyer retrying under its own key, each
    // on the other instance: the winners' retries are replays (the same
    // reservation), the others still sold out; nothing sold twice.
    let flipped = Arc::new(RwLock::new(vec![b.base.clone(), a.base.clone()]));
    let mut again = staggered_sale(a.client.clone(), flipped, "HOT", buyers, 10)
        .await
        .expect("retries");
    won.sort();
    again.sort();
    assert_eq!(again, won);
    let c = counts(a, "HOT").await;
    assert_eq!(
        (c["available"].as_i64(), c["held"].as_i64()),
        (Some(0), Some(units))
    );
    assert_eq!(rows_in_db(&schema, "HOT").await, (units, units));
    gate_agrees(a, "HOT", 0).await;
    // Ten cancellations: SQL and the gate both get the units back.
    for id in won.iter().take(10) {
        assert_eq!(settle(a, id, "cancel").await.status(), 200);
    }
    assert_eq!(counts(b, "HOT").await["available"], 10);
    gate_agrees(b, "HOT", 10).await;
    let more = storm(&[a, b], "HOT", 50, "gate-more").await;
    assert_eq!(more.len(), 10);
    assert_eq!(counts(a, "HOT").await["available"], 0);
    gate_agrees(a, "HOT", 0).await;
    for t in servers {
        t.server.shutdown().await.expect("shutdown");
    }
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_sale_the_sale_stays_exact() {
    let schema = Schema::create("stock_gate_kill").await;
    let mut redis = PrivateRedis::start().await.expect("private redis-server");
    let servers = instances(&schema, &redis.url(), &schema.name).await;
    let (a, b) = (&servers[0], &servers[1]);
    // 900 units for 1,000 buyers a millisecond apart: the sale lasts about
    // a second, so the kill lands mid-sale even when the poll below is slow
    // (with 300 units a loaded CI machine once saw the sale end first).
    let total = 900;
    assert_eq!(
        put(a, "HOT", Some(("If-None-Match", "*")), json!(total))
            .await
            .status(),
        201
    );
    let bases = Arc::new(RwLock::new(vec![a.base.clone(), b.base.clone()]));
    let sale = staggered_sale(a.client.clone(), bases, "HOT", 1_000, 1);
    while in_db(&schema, "HOT", "held").await < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.kill();
    let at_kill = in_db(&schema, "HOT", "held").await;
    assert!(at_kill < total, "Redis died mid-sale ({at_kill} held)");
    let won = sale.await.expect("sale");
    let distinct: HashSet<_> = won.iter().collect();
    assert_eq!(distinct.len(), won.len());
    assert_eq!(won.len() as i64, total, "exactly the stock, Redis or not");
    let c = counts(b, "HOT").await;
    assert_eq!(
        (c["available"].as_i64(), c["held"].as_i64()),
        (Some(0), Some(total))
    );
    assert_eq!(rows_in_db(&schema, "HOT").await, (total, total));
    for t in servers {
        t.server.shutdown().await.expect("shutdown");
    }
    schema.drop().await;
}

/// A give-back that never reached Redis: a cancel while Redis is dead
/// leaves the gate short of the cancelled units. The instance marks the
/// SKU and rebuilds it from SQL at the reaper's next tick (1 s), not at
/// the periodic reconcile (600 s here): within seconds of Redis coming
/// back (empty, as a restarted cache is), the gate holds what SQL holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_give_back_lost_while_redis_is_dead_is_rebuilt_at_the_next_tick() {
    let schema = Schema::create("stock_gate_drift").await;
    let mut redis = PrivateRedis::start().await.expect("private redis-server");
    let servers = instances(&schema, &redis.url(), &schema.name).await;
    let a = &servers[0];
    assert_eq!(
        put(a, "DRIFT", Some(("If-None-Match", "*")), json!(5))
            .await
            .status(),
        201
    );
    let r = reserve(a, "DRIFT", Some("drift-1"), json!({ "qty": 2 })).await;
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    gate_agrees(a, "DRIFT", 3).await;

    redis.kill();
    let r = settle(a, &id, "cancel").await;
    assert_eq!(r.status(), 200, "SQL takes the cancel with Redis dead");
    assert_eq!(counts(a, "DRIFT").await["available"], 5);
    redis.restart().await.expect("restart redis-server");

    // Polled, never reconciled here (`gate_agrees` would): a reconcile
    // would hide a missing rebuild.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gate_available(a, "DRIFT").await != Some(5) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gate was not rebuilt within 10 s of Redis coming back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in servers {
        t.server.shutdown().await.expect("shutdown");
    }
    schema.drop().await;
}
