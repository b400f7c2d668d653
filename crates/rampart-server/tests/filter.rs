//! Cache penetration through the real server: the existence filter keeps
//! distinct missing keys away from the source (loads counted at the
//! source), never rejects an existing row (also one created behind
//! rampart's back, once invalidated or rebuilt), and the per-client miss
//! budget refuses one abusive client's misses while another client and the
//! abuser's own hits are served.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{start, x_cache, TestServer, ROWS};

const LOADS_OK: &str = "rampart_load_duration_seconds_count{outcome=\"ok\",resource=\"users\"}";

fn with_filter(c: &mut rampart_server::Config) {
    c.resources.retain(|r| r.name == "users");
    let filter = c.resources[0].filter.as_mut().expect("the example has one");
    filter.enabled = true;
    filter.capacity = ROWS;
    filter.rebuild_interval = Duration::ZERO;
}

async fn wait_for(t: &TestServer, series: &str, at_least: f64) {
    let started = Instant::now();
    while t.metric(series).await < at_least {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{series} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn distinct_missing_keys_stop_reaching_the_source_and_existing_rows_are_found() {
    let t = start(with_filter).await;
    wait_for(&t, "rampart_filter_ready{resource=\"users\"}", 1.0).await;
    assert_eq!(t.get("/readyz").await.status(), 200);
    assert!(t.metric("rampart_filter_keys{resource=\"users\"}").await >= ROWS as f64 * 0.99);

    let before = t.metric(LOADS_OK).await;
    for id in 0..500u64 {
        let response = t.get(&format!("/v1/r/users/{}", 1_000_000 + id * 7)).await;
        assert_eq!(response.status(), 404);
    }
    let loads = t.metric(LOADS_OK).await - before;
    // Only false positives (1 % target) reach the source.
    assert!(
        loads <= 25.0,
        "{loads} of 500 distinct missing keys were loaded"
    );
    assert!(
        t.metric("rampart_filter_rejections_total{resource=\"users\"}")
            .await
            >= 475.0
    );

    // No existing row is ever answered "not found".
    for id in (1..=ROWS).step_by(7) {
        let response = t.get(&format!("/v1/r/users/{id}")).await;
        assert_eq!(response.status(), 200, "user {id}");
    }
}

#[tokio::test]
async fn a_row_created_behind_rampart_is_found_after_invalidate_or_rebuild() {
    let t = start(with_filter).await;
    wait_for(&t, "rampart_filter_ready{resource=\"users\"}", 1.0).await;
    let insert = |id: u64| {
        let pool = t.server.state.pool.clone();
        async move {
            sqlx::query(&format!(
                "INSERT INTO users (id, name, email, country, balance_cents, created_at) \
                 VALUES ({id}, 'n', 'e', 'NL', 1, '2026-01-01')"
            ))
            .execute(&pool)
            .await
            .expect("insert");
        }
    };
    // Invalidating the key adds it to the filter.
    insert(5_000_001).await;
    let token = t.admin_token();
    let invalidated = t
        .client
        .post(t.url("/v1/r/users/5000001/invalidate"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("invalidate");
    assert_eq!(invalidated.status(), 204);
    assert_eq!(t.get("/v1/r/users/5000001").await.status(), 200);

    // A rebuild absorbs rows without an invalidation.
    insert(5_000_002).await;
    let unauthorised = t
        .client
        .post(t.url("/v1/filter/users/rebuild"))
        .send()
        .await
        .expect("post");
    assert_eq!(unauthorised.status(), 401);
    let rebuilt = t.admin_post("/v1/filter/users/rebuild").await;
    assert_eq!(rebuilt.status(), 202);
    let started = Instant::now();
    loop {
        let response = t.get("/v1/r/users/5000002").await;
        if response.status() == 200 {
            break;
        }
        // "Not found" until the rebuild lands: from the filter, or from a
        // negative entry if the key was a false positive and loaded.
        assert_eq!(x_cache(&response), "negative");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "rebuild never absorbed the row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let none = t.admin_post("/v1/filter/products/rebuild").await;
    assert_eq!(none.status(), 404);
}

/// A client bound to its own loopback address.
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().ok())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

#[tokio::test]
async fn the_miss_budget_isolates_an_abusive_client() {
    let t = start(|c| {
        c.resources.retain(|r| r.name == "users");
        c.server.misses_per_client = 20;
        c.server.miss_burst = Some(20);
    })
    .await;
    let abuser = client_from("127.0.0.2");
    let healthy = client_from("127.0.0.3");
    // The abuser's first hit: cached, so later hits need no budget.
    assert_eq!(
        abuser
            .get(t.url("/v1/r/users/1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (mut refused, mut retry_after) = (0, None);
    for id in 0..200u64 {
        let response = abuser
            .get(t.url(&format!("/v1/r/users/{}", 9_000_000 + id)))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            refused += 1;
            retry_after = response.headers().get("retry-after").cloned();
        } else {
            assert_eq!(response.status(), 404);
        }
    }
    assert!(refused >= 150, "only {refused} of 200 misses refused");
    assert_eq!(retry_after.expect("Retry-After").to_str().unwrap(), "1");
    // Its hits are still served.
    for _ in 0..50 {
        let response = abuser.get(t.url("/v1/r/users/1")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(x_cache(&response), "hit");
    }
    // Another client's misses are untouched by the abuser's.
    for id in 2..12u64 {
        let response = healthy
            .get(t.url(&format!("/v1/r/users/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "healthy client refused");
    }
    assert!(t.metric("rampart_miss_budget_refused_total").await >= refused as f64);
}

/// A `keys` query slow enough to watch: two million generated ids.
const SLOW_KEYS: &str = "WITH RECURSIVE k(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM k WHERE id < 2000000) SELECT id FROM k";

#[tokio::test]
async fn readiness_waits_for_the_first_build_at_most_ready_wait_and_misses_load_meanwhile() {
    // Waiting for the build: not ready while it runs, ready once it is done.
    let t = start(|c| {
        with_filter(c);
        let filter = c.resources[0].filter.as_mut().expect("filter");
        filter.keys = SLOW_KEYS.into();
        filter.ready_wait = Duration::from_secs(60);
    })
    .await;
    let building = t.get("/readyz").await;
    assert_eq!(building.status(), 503, "ready before the filter was built");
    // Meanwhile a missing key goes to the source, as without a filter.
    let before = t.metric(LOADS_OK).await;
    assert_eq!(t.get("/v1/r/users/9000001").await.status(), 404);
    assert_eq!(t.metric(LOADS_OK).await - before, 1.0);
    wait_for(&t, "rampart_filter_ready{resource=\"users\"}", 1.0).await;
    assert_eq!(t.get("/readyz").await.status(), 200);

    // Not waiting past ready_wait: ready while the build still runs.
    let t = start(|c| {
        with_filter(c);
        let filter = c.resources[0].filter.as_mut().expect("filter");
        filter.keys = SLOW_KEYS.into();
        filter.ready_wait = Duration::ZERO;
    })
    .await;
    assert_eq!(t.get("/readyz").await.status(), 200);
    assert!(t.metric("rampart_filter_ready{resource=\"users\"}").await < 1.0);
    wait_for(&t, "rampart_filter_build_keys{resource=\"users\"}", 1.0).await;
}

#[tokio::test]
async fn a_failed_build_leaves_the_service_answering_from_the_source() {
    let t = start(|c| {
        with_filter(c);
        let filter = c.resources[0].filter.as_mut().expect("filter");
        filter.keys = "SELECT no_such_column FROM users".into();
        filter.ready_wait = Duration::ZERO;
    })
    .await;
    assert_eq!(t.get("/readyz").await.status(), 200);
    assert_eq!(t.get("/v1/r/users/1").await.status(), 200);
    let before = t.metric(LOADS_OK).await;
    assert_eq!(t.get("/v1/r/users/9000002").await.status(), 404);
    assert_eq!(
        t.metric(LOADS_OK).await - before,
        1.0,
        "the missing key went to the source"
    );
    assert_eq!(
        t.metric("rampart_filter_ready{resource=\"users\"}").await,
        0.0
    );
    assert_eq!(
        t.metric("rampart_filter_build_keys{resource=\"users\"}")
            .await,
        0.0
    );
}
