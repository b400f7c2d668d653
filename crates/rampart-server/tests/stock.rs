//! Stock over HTTP: reserve, replay, confirm, cancel, expire, the admin
//! PUT, and concurrent sales that never oversell — on the embedded SQLite
//! and on PostgreSQL across two instances, grouped and per request.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::stock::{balanced, body, code, counts, put, reserve, settle, storm};
use common::{start, start_with, Schema};
use serde_json::{json, Value};

#[tokio::test]
async fn a_flash_sale_on_the_embedded_default() {
    let t = start(|c| {
        c.stock.hold_for = Duration::from_millis(300);
        c.stock.reap_interval = Duration::from_millis(50);
    })
    .await;
    // Demo stock: the first demo SKUs have their products.stock.
    let demo = counts(&t, "SKU-0000001").await;
    assert_eq!(demo["total"], 13, "{demo}");
    assert_eq!(demo["available"], 13);

    let admin = put(&t, "FLASH-1", Some(("If-None-Match", "*")), json!(3)).await;
    assert_eq!(admin.status(), 201);
    assert_eq!(admin.headers()["etag"], "\"1\"");

    // Input errors name what is wrong.
    let r = reserve(&t, "FLASH-1", None, json!({ "qty": 1 })).await;
    assert_eq!(
        (r.status().as_u16(), code(&body(r).await).to_owned()),
        (400, "missing_idempotency_key".into())
    );
    for bad in [
        json!({ "qty": 0 }),
        json!({ "qty": -1 }),
        json!({ "qty": "1" }),
        json!({}),
        json!({ "qty": 1, "x": 2 }),
        json!([1]),
    ] {
        let r = reserve(&t, "FLASH-1", Some("bad"), bad.clone()).await;
        assert_eq!(r.status(), 400, "{bad}");
        let b = body(r).await;
        assert_eq!(code(&b), "bad_request");
        assert!(
            b["detail"].as_str().unwrap().contains("qty") || bad == json!([1]),
            "{b}"
        );
    }
    let r = reserve(&t, "NO-SUCH", Some("k0"), json!({ "qty": 1 })).await;
    assert_eq!(
        (r.status().as_u16(), code(&body(r).await).to_owned()),
        (404, "unknown_sku".into())
    );

    // Reserve, replay, reuse.
    let first = reserve(&t, "FLASH-1", Some("order-1"), json!({ "qty": 2 })).await;
    assert_eq!(first.status(), 201);
    assert_eq!(first.headers()["idempotent-replayed"], "false");
    let first = body(first).await;
    assert_eq!(
        (first["qty"].as_i64(), first["state"].as_str()),
        (Some(2), Some("held"))
    );
    let again = reserve(&t, "FLASH-1", Some("order-1"), json!({ "qty": 2 })).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(body(again).await, first);
    let reused = reserve(&t, "FLASH-1", Some("order-1"), json!({ "qty": 1 })).await;
    assert_eq!(reused.status(), 422);
    assert_eq!(code(&body(reused).await), "idempotency_key_reused");

    // Sold out says what is left.
    let r = reserve(&t, "FLASH-1", Some("order-2"), json!({ "qty": 2 })).await;
    assert_eq!(r.status(), 409);
    let b = body(r).await;
    assert_eq!(code(&b), "sold_out");
    assert!(b["detail"].as_str().unwrap().contains("1 left"), "{b}");
    let c = counts(&t, "FLASH-1").await;
    assert_eq!(
        (c["available"].as_i64(), c["held"].as_i64()),
        (Some(1), Some(2))
    );

    // Confirm (twice: the same answer), then cancel is refused.
    let id = first["id"].as_str().unwrap();
    let r = settle(&t, id, "confirm").await;
    assert_eq!(r.status(), 200);
    assert_eq!(body(r).await["state"], "confirmed");
    assert_eq!(settle(&t, id, "confirm").await.status(), 200);
    let r = settle(&t, id, "cancel").await;
    assert_eq!(
        (r.status().as_u16(), code(&body(r).await).to_owned()),
        (409, "reservation_settled".into())
    );
    let r = settle(&t, "r-nope", "confirm").await;
    assert_eq!(
        (r.status().as_u16(), code(&body(r).await).to_owned()),
        (404, "unknown_reservation".into())
    );

    // Cancel returns the unit.
    let r = body(reserve(&t, "FLASH-1", Some("order-3"), json!({ "qty": 1 })).await).await;
    assert_eq!(
        settle(&t, r["id"].as_str().unwrap(), "cancel")
            .await
            .status(),
        200
    );
    assert_eq!(counts(&t, "FLASH-1").await["available"], 1);

    // Expiry returns it too (the reaper), and a late confirm is 410.
    let r = body(reserve(&t, "FLASH-1", Some("order-4"), json!({ "qty": 1 })).await).await;
    assert_eq!(counts(&t, "FLASH-1").await["available"], 0);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let c = counts(&t, "FLASH-1").await;
    assert_eq!(
        (
            c["available"].as_i64(),
            c["held"].as_i64(),
            c["sold"].as_i64()
        ),
        (Some(1), Some(0), Some(2)),
        "{c}"
    );
    let late = settle(&t, r["id"].as_str().unwrap(), "confirm").await;
    assert_eq!(
        (late.status().as_u16(), code(&body(late).await).to_owned()),
        (410, "reservation_expired".into())
    );

    // The admin PUT: preconditions, held and sold kept.
    assert_eq!(put(&t, "FLASH-1", None, json!(5)).await.status(), 428);
    assert_eq!(
        put(&t, "FLASH-1", Some(("If-None-Match", "*")), json!(5))
            .await
            .status(),
        412
    );
    assert_eq!(
        put(&t, "FLASH-1", Some(("If-Match", "\"1\"")), json!(5))
            .await
            .status(),
        412
    );
    let version = counts(&t, "FLASH-1").await["version"].as_i64().unwrap();
    let etag = format!("\"{version}\"");
    let r = put(&t, "FLASH-1", Some(("If-Match", &etag)), json!(1)).await;
    assert_eq!(
        (r.status().as_u16(), code(&body(r).await).to_owned()),
        (409, "total_below_committed".into())
    );
    let r = put(&t, "FLASH-1", Some(("If-Match", &etag)), json!(10)).await;
    assert_eq!(r.status(), 200);
    let c = body(r).await;
    assert_eq!(
        (
            c["total"].as_i64(),
            c["available"].as_i64(),
            c["sold"].as_i64()
        ),
        (Some(10), Some(8), Some(2))
    );
    balanced(&c);
    let anonymous = t
        .client
        .put(t.url("/v1/stock/FLASH-1"))
        .json(&json!({ "total": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    t.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn concurrent_buyers_never_oversell_on_sqlite() {
    let t = start(|_| {}).await;
    assert_eq!(
        put(&t, "HOT", Some(("If-None-Match", "*")), json!(50))
            .await
            .status(),
        201
    );
    let won = storm(&[&t], "HOT", 300, "sqlite").await;
    assert_eq!(won.len(), 50);
    let c = counts(&t, "HOT").await;
    assert_eq!(
        (c["available"].as_i64(), c["held"].as_i64()),
        (Some(0), Some(50))
    );
    t.server.shutdown().await.expect("shutdown");
}

async fn two_instances_on_postgres(tag: &str, group_commit: bool) {
    let schema = Schema::create(tag).await;
    let mut servers = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = schema.url();
        let config = common::config(dir.path(), |c| {
            c.database.url = url;
            c.stock.group_commit = group_commit;
        });
        // One after the other: the first creates the tables.
        servers.push(start_with(config, dir).await);
    }
    let (a, b) = (&servers[0], &servers[1]);
    assert_eq!(
        put(a, "HOT", Some(("If-None-Match", "*")), json!(100))
            .await
            .status(),
        201
    );
    let won = storm(&[a, b], "HOT", 1_000, tag).await;
    assert_eq!(won.len(), 100, "exactly the stock, across both instances");
    // Every buyer retries under its own key, on the other instance: the
    // same reservation comes back, nothing more is held.
    let retries: Vec<_> = won
        .iter()
        .enumerate()
        .map(|(i, (key, id))| {
            let t = if i % 2 == 0 { b } else { a };
            let (client, url) = (t.client.clone(), t.url("/v1/stock/HOT/reservations"));
            let (key, id) = (key.clone(), id.clone());
            tokio::spawn(async move {
                let r = client
                    .post(&url)
                    .header("Idempotency-Key", &key)
                    .json(&json!({ "qty": 1 }))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 201);
                assert_eq!(r.headers()["idempotent-replayed"], "true");
                let b: Value = r.json().await.expect("json");
                assert_eq!(b["id"].as_str(), Some(id.as_str()));
            })
        })
        .collect();
    for r in retries {
        r.await.expect("retry");
    }
    let ids: HashSet<_> = won.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), 100);
    for t in [a, b] {
        let c = counts(t, "HOT").await;
        assert_eq!(
            (c["available"].as_i64(), c["held"].as_i64()),
            (Some(0), Some(100)),
            "{c}"
        );
    }
    let (rows,): (i64,) = sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM {}.reservations WHERE sku = 'HOT'",
        schema.name
    ))
    .fetch_one(&schema.admin)
    .await
    .expect("count");
    assert_eq!(rows, 100, "one row per reservation, none doubled");
    for t in servers {
        t.server.shutdown().await.expect("shutdown");
    }
    schema.drop().await;
}

#[tokio::test]
async fn two_instances_on_postgres_sell_exactly_the_stock_grouped() {
    two_instances_on_postgres("stock_grouped", true).await;
}

#[tokio::test]
async fn two_instances_on_postgres_sell_exactly_the_stock_per_request() {
    two_instances_on_postgres("stock_single", false).await;
}
