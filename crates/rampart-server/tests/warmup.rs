//! Start-up warm-up through the real server: readiness gating, progress in
//! metrics, and the warmed keys answered from L1.

mod common;

use std::time::{Duration, Instant};

use common::{start, x_cache, ROWS};

#[tokio::test]
async fn readyz_waits_for_the_warm_up_fraction_then_keys_are_hits() {
    let t = start(|c| {
        c.warmup.enabled = true;
        c.warmup.ready_fraction = 0.5;
        c.warmup.batch_size = 100;
        // Slow enough to observe "warming": 2,000 users at 1,000 keys/s.
        c.warmup.max_keys_per_sec = 1_000;
        c.resources.retain(|r| r.name == "users");
    })
    .await;
    let first = t.get("/readyz").await;
    assert_eq!(
        first.status(),
        503,
        "not ready before the warm-up got anywhere"
    );
    let body: serde_json::Value = first.json().await.expect("json");
    assert_eq!(body["status"], "warming");
    let started = Instant::now();
    loop {
        if t.get("/readyz").await.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = t
        .metric("rampart_warmup_keys{resource=\"users\",state=\"done\"}")
        .await;
    assert!(done >= ROWS as f64 * 0.5, "ready at {done} keys");
    assert_eq!(
        t.metric("rampart_warmup_keys{resource=\"users\",state=\"expected\"}")
            .await,
        ROWS as f64
    );
    // Key 1 was in the first batch: answered from L1 without a load.
    assert_eq!(x_cache(&t.get("/v1/r/users/1").await), "hit");
}

#[tokio::test]
async fn the_readiness_deadline_opens_the_gate_even_if_warm_up_is_slow() {
    let t = start(|c| {
        c.warmup.enabled = true;
        c.warmup.ready_fraction = 1.0;
        c.warmup.ready_deadline = Duration::from_millis(500);
        c.warmup.batch_size = 10;
        c.warmup.max_keys_per_sec = 20;
    })
    .await;
    assert_eq!(t.get("/readyz").await.status(), 503);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(t.get("/readyz").await.status(), 200);
    t.server
        .shutdown()
        .await
        .expect("shutdown cancels the warm-up");
}

/// Waits until `/readyz` answers 200 (the warm-up reached its fraction).
async fn until_ready(t: &common::TestServer) {
    let started = Instant::now();
    while t.get("/readyz").await.status() != 200 {
        assert!(started.elapsed() < Duration::from_secs(20), "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const LOADS: &str = "rampart_load_duration_seconds_count{outcome=\"ok\",resource=\"users\"}";

/// A warm query of whole rows (load's columns) fills L1 as it reads: no
/// load at all, and each warmed key answers a hit with exactly the bytes a
/// miss would have given.
#[tokio::test]
async fn a_warm_query_of_whole_rows_is_cached_as_read_without_a_load() {
    let t = start(|c| {
        c.warmup.enabled = true;
        c.warmup.ready_fraction = 1.0;
        c.warmup.batch_size = 100;
        c.resources.retain(|r| r.name == "users");
        c.resources[0].warm = Some(
            "SELECT id, name, email, country, balance_cents, created_at FROM users ORDER BY id"
                .into(),
        );
    })
    .await;
    until_ready(&t).await;
    assert_eq!(
        t.metric("rampart_warmup_keys{resource=\"users\",state=\"done\"}")
            .await,
        ROWS as f64
    );
    assert_eq!(t.metric(LOADS).await, 0.0, "no row was loaded");
    for id in [1, ROWS / 2, ROWS] {
        let hit = t.get(&format!("/v1/r/users/{id}")).await;
        assert_eq!(x_cache(&hit), "hit");
        let warmed = hit.bytes().await.expect("body");
        t.admin_post(&format!("/v1/r/users/{id}/invalidate")).await;
        let miss = t.get(&format!("/v1/r/users/{id}")).await;
        assert_eq!(x_cache(&miss), "miss");
        assert_eq!(warmed, miss.bytes().await.expect("body"), "user {id}");
    }
}

/// A warm query of several columns that are not load's is taken as keys
/// (its first column): the rows are loaded, and answers have load's shape.
#[tokio::test]
async fn a_warm_query_of_other_columns_is_taken_as_keys() {
    let t = start(|c| {
        c.warmup.enabled = true;
        c.warmup.ready_fraction = 1.0;
        c.warmup.batch_size = 100;
        c.resources.retain(|r| r.name == "users");
        c.resources[0].warm = Some("SELECT id, name FROM users ORDER BY id".into());
    })
    .await;
    until_ready(&t).await;
    assert!(
        t.metric(LOADS).await >= (ROWS / 100) as f64,
        "batches loaded"
    );
    let hit = t.get("/v1/r/users/7").await;
    assert_eq!(x_cache(&hit), "hit");
    let body: serde_json::Value = hit.json().await.expect("json");
    assert_eq!(body, rampart_server::cache::demo::user_json(7));
}
