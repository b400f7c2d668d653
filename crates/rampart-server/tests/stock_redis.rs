//! Stock with the Redis gate: two instances over PostgreSQL + Redis sell
//! exactly the stock, and the gate agrees with SQL afterwards (also after
//! cancellations); Redis killed mid-sale (a private redis-server) → the
//! sale goes on through SQL, still exact.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::stock::{counts, put, storm};
use common::{start_with, Schema, TestServer};
use serde_json::json;

/// A redis-server of this test's own, killed on drop.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        // Owned from here: dropped (killed and waited for) on any panic.
        let redis = PrivateRedis { child, port };
        for _ in 0..100 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let mut pong = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut pong).is_ok() {
                    return redis;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("private redis-server on {port} did not come up");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

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

async fn gate_available(t: &TestServer, sku: &str) -> Option<i64> {
    let stock = t.server.state.stock.clone().expect("stock");
    stock
        .gate()
        .expect("gate")
        .available(sku)
        .await
        .expect("redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_with_the_redis_gate_sell_exactly_and_agree_with_sql() {
    let schema = Schema::create("stock_gate").await;
    let redis = PrivateRedis::start();
    let servers = instances(&schema, &redis.url(), &schema.name).await;
    let (a, b) = (&servers[0], &servers[1]);
    assert_eq!(
        put(a, "HOT", Some(("If-None-Match", "*")), json!(100))
            .await
            .status(),
        201
    );
    let won = storm(&[a, b], "HOT", 1_000, "gate").await;
    assert_eq!(won.len(), 100, "exactly the stock");
    let ids: HashSet<_> = won.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 100);
    // Retries under the same keys, each on the other instance: replays.
    let again = storm(&[b, a], "HOT", 1_000, "gate").await;
    assert_eq!(again.len(), 100, "the winners' retries are replays");
    let mut again_ids: Vec<_> = again.iter().map(|(_, id)| id.clone()).collect();
    let mut won_ids: Vec<_> = won.iter().map(|(_, id)| id.clone()).collect();
    again_ids.sort();
    won_ids.sort();
    assert_eq!(again_ids, won_ids);
    let c = counts(a, "HOT").await;
    assert_eq!(
        (c["available"].as_i64(), c["held"].as_i64()),
        (Some(0), Some(100))
    );
    assert_eq!(gate_available(a, "HOT").await, Some(0), "Redis agrees");
    // Ten cancellations: SQL and the gate both get the units back.
    for (_, id) in won.iter().take(10) {
        let r = a
            .client
            .post(a.url(&format!("/v1/reservations/{id}/cancel")))
            .send()
            .await
            .expect("cancel");
        assert_eq!(r.status(), 200);
    }
    assert_eq!(counts(b, "HOT").await["available"], 10);
    assert_eq!(gate_available(b, "HOT").await, Some(10));
    let more = storm(&[a, b], "HOT", 50, "gate-more").await;
    assert_eq!(more.len(), 10);
    assert_eq!(counts(a, "HOT").await["available"], 0);
    assert_eq!(gate_available(a, "HOT").await, Some(0));
    for t in servers {
        t.server.shutdown().await.expect("shutdown");
    }
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_sale_the_sale_stays_exact() {
    let schema = Schema::create("stock_gate_kill").await;
    let mut redis = PrivateRedis::start();
    let servers = instances(&schema, &redis.url(), &schema.name).await;
    let (a, b) = (&servers[0], &servers[1]);
    let total = 300;
    assert_eq!(
        put(a, "HOT", Some(("If-None-Match", "*")), json!(total))
            .await
            .status(),
        201
    );
    let sale = {
        let urls = [a.url(""), b.url("")];
        let client = a.client.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for i in 0..1_000usize {
                let (client, base) = (client.clone(), urls[i % 2].clone());
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(i as u64)).await;
                    let key = format!("buyer-{i}");
                    loop {
                        let r = client
                            .post(format!("{base}/v1/stock/HOT/reservations"))
                            .header("Idempotency-Key", &key)
                            .json(&json!({ "qty": 1 }))
                            .send()
                            .await
                            .expect("request");
                        let status = r.status().as_u16();
                        let body: serde_json::Value = r.json().await.expect("json");
                        match (status, body["code"].as_str()) {
                            (201, _) => return Some(body["id"].as_str().expect("id").to_owned()),
                            (409, Some("sold_out")) => return None,
                            (503, _) | (409, Some("idempotency_in_flight")) => {
                                tokio::time::sleep(Duration::from_millis(10)).await
                            }
                            other => panic!("{other:?} {body}"),
                        }
                    }
                }));
            }
            let mut won = Vec::new();
            for t in tasks {
                if let Some(id) = t.await.expect("buyer") {
                    won.push(id);
                }
            }
            won
        })
    };
    // Read from the database: the instances are busy (a 503 is theirs to give).
    let held_now = || async {
        let (held,): (i64,) = sqlx::query_as(&format!(
            "SELECT held FROM {}.stock WHERE sku = 'HOT'",
            schema.name
        ))
        .fetch_one(&schema.admin)
        .await
        .expect("held");
        held
    };
    while held_now().await < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.kill();
    let at_kill = held_now().await;
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
    let (rows,): (i64,) = sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM {}.reservations WHERE sku = 'HOT'",
        schema.name
    ))
    .fetch_one(&schema.admin)
    .await
    .expect("rows");
    assert_eq!(rows, total);
    for t in servers {
        t.server.shutdown().await.expect("shutdown");
    }
    schema.drop().await;
}
