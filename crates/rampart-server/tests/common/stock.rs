//! The stock tests' helpers: requests, counts, and a storm of buyers.

use std::time::Duration;

use serde_json::{json, Value};

use super::TestServer;

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

/// `n` buyers at once, one unit each under their own key, over `servers`
/// in turn; the keys that got a reservation, with its id.
pub async fn storm(
    servers: &[&TestServer],
    sku: &str,
    n: usize,
    tag: &str,
) -> Vec<(String, String)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let t = servers[i % servers.len()];
            let (client, url) = (
                t.client.clone(),
                t.url(&format!("/v1/stock/{sku}/reservations")),
            );
            let key = format!("{tag}-{i}");
            tokio::spawn(async move {
                loop {
                    let r = client
                        .post(&url)
                        .header("Idempotency-Key", &key)
                        .json(&json!({ "qty": 1 }))
                        .send()
                        .await
                        .expect("request");
                    let status = r.status().as_u16();
                    let b: Value = r.json().await.expect("json");
                    match (status, code(&b)) {
                        (201, _) => return Some((key, b["id"].as_str().unwrap().to_owned())),
                        (409, "sold_out") => return None,
                        // Shed or the database busy: a buyer retries, same key.
                        (503, _) | (409, "idempotency_in_flight") => {
                            tokio::time::sleep(Duration::from_millis(5)).await
                        }
                        other => panic!("{other:?} {b}"),
                    }
                }
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
