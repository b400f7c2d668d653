//! PostgreSQL works the same as SQLite: the machine's server on
//! 127.0.0.1:5432, database `test`, a unique schema per test (dropped at the
//! end). `RAMPART_TEST_PG_URL` points elsewhere.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{demo_data, x_cache, Schema, ROWS};
use rampart_server::cache::demo;
use serde_json::Value;
use sqlx::Row;

#[tokio::test]
async fn the_service_serves_postgres_rows_like_sqlite_rows() {
    let schema = Schema::create("serve").await;
    assert!(demo_data(&schema.url()).contains("filled"));
    assert!(
        demo_data(&schema.url()).contains("already there"),
        "demo-data is idempotent"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let url = schema.url();
    let config = common::config(dir.path(), |c| c.database.url = url);
    let t = common::start_with(config, dir).await;

    let first = t.get("/v1/r/users/5").await;
    assert_eq!(
        (first.status().as_u16(), x_cache(&first)),
        (200, "miss".into())
    );
    assert_eq!(
        first.json::<Value>().await.expect("json"),
        demo::user_json(5)
    );
    assert_eq!(x_cache(&t.get("/v1/r/users/5").await), "hit");
    let missing = t.get(&format!("/v1/r/users/{}", ROWS + 1)).await;
    assert_eq!(missing.status(), 404);
    let batch: Value = t
        .get(&format!(
            "/v1/r/products?keys={},{}",
            demo::sku(1),
            demo::sku(2)
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(batch["items"][1]["value"]["sku"], demo::sku(2));
    t.server.shutdown().await.expect("shutdown");
    schema.drop().await;
}

/// A warm query of whole rows on PostgreSQL: prepared and recognised as
/// load's columns there too, every row cached as read (no load), and a
/// warmed hit is the same JSON a miss gives.
#[tokio::test]
async fn a_warm_query_of_whole_rows_fills_l1_from_postgres_without_loads() {
    let schema = Schema::create("warm_rows").await;
    demo_data(&schema.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let url = schema.url();
    let config = common::config(dir.path(), |c| {
        c.database.url = url;
        c.warmup.enabled = true;
        c.resources.retain(|r| r.name == "users");
        c.resources[0].warm = Some(
            "SELECT id, name, email, country, balance_cents, created_at FROM users ORDER BY id"
                .into(),
        );
    });
    let t = common::start_with(config, dir).await;
    until_warmed(&t, "users").await;
    assert_eq!(t.server.state.resources["users"].warm.keys_done(), ROWS);
    assert_eq!(t.server.state.resources["users"].cache.stats().loads, 0);
    let hit = t.get("/v1/r/users/42").await;
    assert_eq!(x_cache(&hit), "hit");
    assert_eq!(
        hit.json::<Value>().await.expect("json"),
        demo::user_json(42)
    );
    t.server.shutdown().await.expect("shutdown");
    schema.drop().await;
}

/// The warm-up's concurrency bound, measured where it matters: queries
/// active at the source, sampled from pg_stat_activity while it runs.
#[tokio::test]
async fn warm_up_never_exceeds_its_concurrency_at_the_source() {
    let schema = Schema::create("warm").await;
    demo_data(&schema.url());
    let dir = tempfile::tempdir().expect("tempdir");
    let url = schema.url();
    let config = common::config(dir.path(), |c| {
        c.database.url = url;
        c.database.pool_size = 10;
        c.warmup.enabled = true;
        c.warmup.concurrency = 2;
        c.warmup.batch_size = 20;
        c.warmup.max_keys_per_sec = 0;
        c.resources.retain(|r| r.name == "users");
        // Make each batch take a while so concurrent ones overlap.
        c.resources[0].load_many = Some(
            "SELECT id, name, email, country, balance_cents, created_at FROM users, \
             (SELECT pg_sleep(0.02)) AS pause WHERE id IN ({keys})"
                .into(),
        );
    });
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (admin, app, sampling) = (schema.admin.clone(), schema.name.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut max = 0i64;
            while sampling.load(Ordering::SeqCst) {
                let row = sqlx::query(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE application_name = $1 AND state = 'active' AND query LIKE '%pg_sleep%'",
                )
                .bind(app.clone())
                .fetch_one(&admin)
                .await
                .expect("sample");
                max = max.max(row.try_get::<i64, _>(0).expect("count"));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            max
        })
    };
    let t = common::start_with(config, dir).await;
    until_warmed(&t, "users").await;
    sampling.store(false, Ordering::SeqCst);
    let max_active = sampler.await.expect("sampler");
    assert!(max_active >= 1, "the sampler saw the warm-up's queries");
    assert!(
        max_active <= 2,
        "{max_active} warm-up queries at once at the source; bound is 2"
    );
    assert_eq!(t.server.state.resources["users"].warm.keys_done(), ROWS);
    t.server.shutdown().await.expect("shutdown");
    schema.drop().await;
}

/// Waits (at most 60 s) until `resource`'s warm-up has finished.
async fn until_warmed(t: &common::TestServer, resource: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !t.server.state.resources[resource].warm.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "warm-up did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
