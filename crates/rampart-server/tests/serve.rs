//! `rampart serve` end to end: a real server on port 0 over SQLite, a real
//! HTTP client, every status and `x-cache` path.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{start, x_cache, ROWS};
use rampart_server::cache::demo;
use serde_json::Value;

#[tokio::test]
async fn a_row_is_a_miss_then_a_hit_with_the_source_row_as_json() {
    let t = start(|_| {}).await;
    let first = t.get("/v1/r/users/5").await;
    assert_eq!(first.status(), 200);
    assert_eq!(x_cache(&first), "miss");
    assert_eq!(first.headers()["content-type"], "application/json");
    assert!(first.headers().contains_key("x-request-id"));
    let body: Value = first.json().await.expect("json");
    assert_eq!(body, demo::user_json(5));
    let second = t.get("/v1/r/users/5").await;
    assert_eq!(
        (second.status().as_u16(), x_cache(&second)),
        (200, "hit".into())
    );
    assert_eq!(second.headers()["age"], "0");
    let product = t.get(&format!("/v1/r/products/{}", demo::sku(3))).await;
    assert_eq!(product.status(), 200);
    let product: Value = product.json().await.expect("json");
    assert_eq!(product["sku"], demo::sku(3));
    t.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_row_evicted_from_l1_comes_back_from_l2_without_a_load() {
    // An L1 of one entry: key 2 pushes key 1 out; an in-process L2 (off
    // by default, set here) keeps both.
    let t = start(|c| {
        c.resources[0].cache.l1_capacity = 1;
        c.resources[0].l2_capacity = 1_000;
    })
    .await;
    assert_eq!(x_cache(&t.get("/v1/r/users/1").await), "miss");
    assert_eq!(x_cache(&t.get("/v1/r/users/2").await), "miss");
    let back = t.get("/v1/r/users/1").await;
    assert_eq!((back.status().as_u16(), x_cache(&back)), (200, "l2".into()));
    assert_eq!(
        back.json::<Value>().await.expect("json"),
        demo::user_json(1)
    );
    assert_eq!(
        t.metric("rampart_load_duration_seconds_count{outcome=\"ok\",resource=\"users\"}")
            .await,
        2.0,
        "key 1 was loaded once"
    );
}

#[tokio::test]
async fn a_missing_key_is_404_and_cached_negatively() {
    let t = start(|_| {}).await;
    let missing = format!("/v1/r/users/{}", ROWS + 10);
    let first = t.get(&missing).await;
    assert_eq!(
        (first.status().as_u16(), x_cache(&first)),
        (404, "miss".into())
    );
    let body: Value = first.json().await.expect("json");
    assert_eq!(body["code"], "not_found");
    let second = t.get(&missing).await;
    assert_eq!(
        (second.status().as_u16(), x_cache(&second)),
        (404, "negative".into())
    );
    assert_eq!(
        t.metric("rampart_load_duration_seconds_count{outcome=\"ok\",resource=\"users\"}")
            .await,
        1.0,
        "the second 404 never reached the source"
    );
}

#[tokio::test]
async fn bad_keys_and_unknown_resources_are_precise_4xx() {
    let t = start(|_| {}).await;
    let cases = [
        ("/v1/r/users/abc", 400, "bad_key"),
        ("/v1/r/users/99999999999999999999", 400, "bad_key"),
        ("/v1/r/nope/1", 404, "unknown_resource"),
        ("/v1/r/users?keys=", 400, "bad_key"),
        ("/v1/r/users", 400, "bad_request"),
    ];
    for (path, status, code) in cases {
        let response = t.get(path).await;
        assert_eq!(response.status().as_u16(), status, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["code"], code, "{path}: {body}");
        assert!(
            body["error"].is_string() && body["detail"].is_string(),
            "{body}"
        );
    }
    let long_key = "x".repeat(300);
    let response = t.get(&format!("/v1/r/products/{long_key}")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("256"),
        "{body}"
    );
}

#[tokio::test]
async fn batch_answers_in_order_and_is_bounded() {
    let t = start(|c| c.server.max_batch_keys = 5).await;
    t.get("/v1/r/users/2").await;
    let missing = ROWS + 1;
    let response = t.get(&format!("/v1/r/users?keys=1,2,{missing}")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["key"], "1");
    assert_eq!(items[0]["value"], demo::user_json(1));
    assert_eq!(items[0]["x_cache"], "miss");
    assert_eq!(items[1]["x_cache"], "hit");
    assert_eq!(items[2]["x_cache"], "miss");
    assert!(
        items[2]
            .as_object()
            .is_some_and(|o| o.contains_key("value"))
            && items[2]["value"].is_null(),
        "a missing key has \"value\": null: {}",
        items[2]
    );
    let too_many = t.get("/v1/r/users?keys=1,2,3,4,5,6").await;
    assert_eq!(too_many.status(), 400);
    let body: Value = too_many.json().await.expect("json");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("at most 5"),
        "{body}"
    );
    let bad = t.get("/v1/r/users?keys=1,x").await;
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn five_hundred_concurrent_requests_on_a_cold_key_load_once() {
    let t = Arc::new(start(|_| {}).await);
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let t = Arc::clone(&t);
        tasks.push(tokio::spawn(async move {
            let response = t.get("/v1/r/users/42").await;
            (response.status().as_u16(), x_cache(&response))
        }));
    }
    let mut by_cache: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        let (status, cache) = task.await.expect("task");
        assert_eq!(status, 200);
        *by_cache.entry(cache).or_default() += 1;
    }
    assert_eq!(by_cache.get("miss"), Some(&1), "{by_cache:?}");
    assert_eq!(
        by_cache.get("coalesced").copied().unwrap_or(0) + by_cache.get("hit").copied().unwrap_or(0),
        499,
        "{by_cache:?}"
    );
    assert_eq!(
        t.metric("rampart_load_duration_seconds_count{outcome=\"ok\",resource=\"users\"}")
            .await,
        1.0,
        "one load at the source"
    );
}

#[tokio::test]
async fn stale_within_grace_then_refreshed() {
    let t = start(|c| {
        c.resources[0].cache.ttl = Duration::from_millis(300);
        c.resources[0].cache.grace = Duration::from_secs(30);
    })
    .await;
    assert_eq!(x_cache(&t.get("/v1/r/users/7").await), "miss");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stale = t.get("/v1/r/users/7").await;
    assert_eq!(
        (stale.status().as_u16(), x_cache(&stale)),
        (200, "stale".into())
    );
    // The background refresh replaces it.
    let mut refreshed = false;
    for _ in 0..100 {
        if x_cache(&t.get("/v1/r/users/7").await) == "hit" {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refreshed);
}

/// Breaks the source under a running server: the table disappears.
async fn break_source(t: &common::TestServer) {
    sqlx::query("ALTER TABLE users RENAME TO users_gone")
        .execute(&t.server.state.pool)
        .await
        .expect("rename");
}

#[tokio::test]
async fn a_dead_source_serves_stale_if_error_or_503_with_retry_after() {
    let t = start(|c| {
        let users = &mut c.resources[0];
        users.cache.ttl = Duration::from_millis(200);
        users.cache.grace = Duration::ZERO;
        users.breaker.minimum_calls = 1_000; // this test is about the source error path
    })
    .await;
    assert_eq!(t.get("/v1/r/users/9").await.status(), 200);
    break_source(&t).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = t.get("/v1/r/users/9").await;
    assert_eq!(
        (kept.status().as_u16(), x_cache(&kept)),
        (200, "stale-if-error".into())
    );
    let body: Value = kept.json().await.expect("json");
    assert_eq!(body, demo::user_json(9));
    let nothing_kept = t.get("/v1/r/users/10").await;
    assert_eq!(nothing_kept.status(), 503);
    assert_eq!(nothing_kept.headers()["retry-after"], "1");
    let body: Value = nothing_kept.json().await.expect("json");
    assert_eq!(body["code"], "source_unavailable");
}

#[tokio::test]
async fn an_open_breaker_answers_503_fast_with_retry_after() {
    let t = start(|c| {
        let users = &mut c.resources[0];
        users.breaker.minimum_calls = 3;
        users.breaker.open_wait = Duration::from_secs(30);
    })
    .await;
    break_source(&t).await;
    for k in 1..=3 {
        assert_eq!(t.get(&format!("/v1/r/users/{k}")).await.status(), 503);
    }
    let loads_before = t
        .metric("rampart_load_duration_seconds_count{outcome=\"error\",resource=\"users\"}")
        .await;
    let rejected = t.get("/v1/r/users/4").await;
    assert_eq!(rejected.status(), 503);
    let retry_after: u64 = rejected.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=30).contains(&retry_after));
    let body: Value = rejected.json().await.expect("json");
    assert_eq!(body["code"], "breaker_open");
    assert_eq!(
        t.metric("rampart_load_duration_seconds_count{outcome=\"error\",resource=\"users\"}")
            .await,
        loads_before,
        "the rejected request never reached the source"
    );
    assert_eq!(
        t.metric("rampart_breaker_state{dependency=\"users\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_panic_is_a_500_for_that_request_only() {
    let t = start(|_| {}).await;
    let response = t.get("/v1/test/panic").await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "panic");
    assert_eq!(
        t.get("/v1/r/users/1").await.status(),
        200,
        "the server goes on"
    );
    assert_eq!(
        t.metric("rampart_panics_total{route=\"/v1/test/panic\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn past_the_concurrency_limit_requests_are_shed_not_queued() {
    let t = Arc::new(start(|c| c.server.max_concurrent_requests = 2).await);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let t = Arc::clone(&t);
            tokio::spawn(async move { t.get("/v1/test/slow?ms=1500").await.status().as_u16() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let shed = t.get("/v1/r/users/1").await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered at once, not queued"
    );
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    let body: Value = shed.json().await.expect("json");
    assert_eq!(body["code"], "overloaded");
    for task in slow {
        assert_eq!(task.await.expect("task"), 200);
    }
    assert_eq!(t.metric("rampart_shed_total").await, 1.0);
}

#[tokio::test]
async fn a_request_past_the_timeout_gets_503() {
    let t = start(|c| {
        c.server.request_timeout = Duration::from_millis(200);
        // What a miss may wait for must fit inside the request (validated).
        for r in &mut c.resources {
            r.cache.load_timeout = Duration::from_millis(100);
            r.cache.lease_wait = Duration::from_millis(50);
        }
    })
    .await;
    let response = t.get("/v1/test/slow?ms=2000").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "timeout");
    assert_eq!(t.metric("rampart_timeouts_total").await, 1.0);
}

#[tokio::test]
async fn invalidate_drops_the_cached_row() {
    let t = start(|_| {}).await;
    assert_eq!(x_cache(&t.get("/v1/r/users/3").await), "miss");
    assert_eq!(x_cache(&t.get("/v1/r/users/3").await), "hit");
    sqlx::query("UPDATE users SET name = 'Renamed' WHERE id = 3")
        .execute(&t.server.state.pool)
        .await
        .expect("update");
    let response = t.admin_post("/v1/r/users/3/invalidate").await;
    assert_eq!(response.status(), 204);
    let fresh = t.get("/v1/r/users/3").await;
    assert_eq!(x_cache(&fresh), "miss");
    let body: Value = fresh.json().await.expect("json");
    assert_eq!(body["name"], "Renamed");
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_requests() {
    let t = start(|_| {}).await;
    let client = t.client.clone();
    let url = t.url("/v1/test/slow?ms=500");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = t.server.addr;
    t.server.shutdown().await.expect("shutdown");
    let response = in_flight
        .await
        .expect("task")
        .expect("the in-flight request was answered");
    assert_eq!(response.status(), 200);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting connections"
    );
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let t = start(|_| {}).await;
    assert_eq!(t.get("/healthz").await.status(), 200);
    assert_eq!(
        t.get("/readyz").await.status(),
        200,
        "warm-up off: ready at once"
    );
    t.get("/v1/r/users/1").await;
    let metrics = t.get("/metrics").await;
    assert!(metrics.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain; version=0.0.4"));
    let text = metrics.text().await.expect("text");
    for name in [
        "rampart_requests_total",
        "rampart_load_duration_seconds",
        "rampart_loads_in_flight",
        "rampart_source_pool_connections",
        "rampart_source_pool_size",
        "rampart_source_pool_wait_seconds",
        "rampart_breaker_state",
        "rampart_http_request_duration_seconds",
        "rampart_ready",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    // Every sample line is `name{labels} value`.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap_or("");
        assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
    }
    let doc: Value = t.get("/openapi.json").await.json().await.expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    for route in rampart_server::ops::openapi::routes() {
        let documented = rampart_server::ops::openapi::concrete_path(route, "users");
        assert!(paths.contains_key(&documented), "{documented} undocumented");
        let path = documented.replace("{key}", "1");
        let path = if route.path == "/v1/r/{resource}" {
            format!("{path}?keys=1")
        } else {
            path
        };
        let response = match route.method {
            "get" => t.client.get(t.url(&path)).send().await,
            "patch" => t.client.patch(t.url(&path)).send().await,
            "post" | "put" | "delete" => {
                let method = reqwest::Method::from_bytes(route.method.to_uppercase().as_bytes())
                    .expect("method");
                t.client
                    .request(method, t.url(&path))
                    .bearer_auth(t.admin_token())
                    .send()
                    .await
            }
            other => panic!("method {other}"),
        }
        .expect("request");
        let status = response.status().as_u16();
        assert!(
            route.responses.iter().any(|(s, ..)| *s == status),
            "{} {} answered {status}, not documented",
            route.method,
            route.path
        );
    }
}
