//! The stock tests' helpers: requests, counts, and a storm of buyers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::RwLock;

use super::{Schema, TestServer};

pub async fn reserve(
    t: &TestServer,
    sku: &str,
    key: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = t
        .client
        .post(t.url(&format!("/v1/stock/{sku}/reservations")))
        .json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("request")
}

/// `POST /v1/reservations/{id}/{action}` (`confirm` or `cancel`) on `t`.
pub async fn settle(t: &TestServer, id: &str, action: &str) -> reqwest::Response {
    t.client
        .post(t.url(&format!("/v1/reservations/{id}/{action}")))
        .send()
        .await
        .expect("request")
}

pub async fn body(response: reqwest::Response) -> Value {
    response.json().await.expect("json")
}

pub async fn counts(t: &TestServer, sku: &str) -> Value {
    let r = t.get(&format!("/v1/stock/{sku}")).await;
    assert_eq!(r.status(), 200);
    body(r).await
}

pub async fn put(
    t: &TestServer,
    sku: &str,
    header: Option<(&str, &str)>,
    total: Value,
) -> reqwest::Response {
    let mut request = t
        .client
        .put(t.url(&format!("/v1/stock/{sku}")))
        .bearer_auth(t.admin_token())
        .json(&json!({ "total": total }));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    request.send().await.expect("request")
}

pub fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

pub fn balanced(c: &Value) {
    let n = |f: &str| c[f].as_i64().expect(f);
    assert_eq!(n("available") + n("held") + n("sold"), n("total"), "{c}");
}

/// Where buyers send their requests; a test may swap an entry (a
/// restarted instance) while they run.
pub type Bases = Arc<RwLock<Vec<String>>>;

/// One buyer: reserves one unit under `key`, retrying (same key) on a
/// shed, a busy key, or a dead instance, attempt `k` on `bases[first + k]`.
/// The reservation's id, or `None` once sold out.
pub async fn buy(
    client: &reqwest::Client,
    bases: &Bases,
    first: usize,
    sku: &str,
    key: &str,
) -> Option<String> {
    for attempt in 0usize..400 {
        let base = {
            let bases = bases.read().await;
            bases[(first + attempt) % bases.len()].clone()
        };
        let sent = client
            .post(format!("{base}/v1/stock/{sku}/reservations"))
            .header("Idempotency-Key", key)
            .json(&json!({ "qty": 1 }))
            .send()
            .await;
        let Ok(r) = sent else {
            // A killed instance: retry, same key.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let status = r.status().as_u16();
        let Ok(b) = r.json::<Value>().await else {
            continue;
        };
        match (status, code(&b)) {
            (201, _) => return Some(b["id"].as_str().expect("id").to_owned()),
            (409, "sold_out") => return None,
            // Shed, or the same key still in flight: back off, doubling
            // from 5 ms to at most 320 ms, so shed buyers do not come back
            // in lockstep (see `storm_size` in tests/stock_redis.rs for
            // what a 10,000-buyer sale costs in a debug build).
            (503, _) | (409, "idempotency_in_flight") => {
                let backoff = 5u64 << attempt.min(6);
                tokio::time::sleep(Duration::from_millis(backoff)).await
            }
            other => panic!("{other:?} {b}"),
        }
    }
    panic!("{key} never got an answer");
}

/// `n` buyers at once, one unit each under their own key, over `servers`
/// in turn; the keys that got a reservation, with its id.
pub async fn storm(
    servers: &[&TestServer],
    sku: &str,
    n: usize,
    tag: &str,
) -> Vec<(String, String)> {
    let bases: Bases = Arc::new(RwLock::new(
        servers.iter().map(|t| t.base.clone()).collect(),
    ));
    let client = servers[0].client.clone();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, bases, sku) = (client.clone(), bases.clone(), sku.to_owned());
            let key = format!("{tag}-{i}");
            tokio::spawn(async move {
                buy(&client, &bases, i, &sku, &key)
                    .await
                    .map(|id| (key, id))
            })
        })
        .collect();
    let mut won = Vec::new();
    for task in tasks {
        if let Some(w) = task.await.expect("task") {
            won.push(w);
        }
    }
    won
}

/// `n` buyers arriving `per_ms` a millisecond (so a fault can land
/// mid-sale), spread over `bases`; the ids of the reservations they got.
pub fn staggered_sale(
    client: reqwest::Client,
    bases: Bases,
    sku: &str,
    n: usize,
    per_ms: usize,
) -> tokio::task::JoinHandle<Vec<String>> {
    let sku = sku.to_owned();
    let per_ms = per_ms.max(1);
    tokio::spawn(async move {
        let buyers: Vec<_> = (0..n)
            .map(|i| {
                let (client, bases, sku) = (client.clone(), bases.clone(), sku.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis((i / per_ms) as u64)).await;
                    buy(&client, &bases, i, &sku, &format!("buyer-{i}")).await
                })
            })
            .collect();
        let mut won = Vec::new();
        for buyer in buyers {
            if let Some(id) = buyer.await.expect("buyer") {
                won.push(id);
            }
        }
        won
    })
}

/// A column of the SKU's stock row, read from the database (not through
/// an instance, which may be busy or dead).
pub async fn in_db(schema: &Schema, sku: &str, column: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(&format!(
        "SELECT {column} FROM {}.stock WHERE sku = $1",
        schema.name
    ))
    .bind(sku)
    .fetch_one(&schema.admin)
    .await
    .expect("stock row");
    n
}

/// The SKU's reservation rows (count, units) in the database.
pub async fn rows_in_db(schema: &Schema, sku: &str) -> (i64, i64) {
    sqlx::query_as(&format!(
        "SELECT COUNT(*), COALESCE(SUM(qty), 0)::BIGINT FROM {}.reservations WHERE sku = $1",
        schema.name
    ))
    .bind(sku)
    .fetch_one(&schema.admin)
    .await
    .expect("rows")
}
