//! Several `rampart serve` processes over one Redis: the shared tier, the
//! invalidation bus, and Redis loss that is not an outage. Uses the
//! machine's Redis on 127.0.0.1:6379 (`RAMPART_TEST_REDIS_URL` elsewhere),
//! each test in its own namespace.

mod common;

use std::time::Duration;

use common::x_cache;
use rampart_server::cache::demo;
use serde_json::Value;

fn redis_url() -> String {
    std::env::var("RAMPART_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn namespace(test: &str) -> String {
    format!("test-{test}-{}-{}", std::process::id(), fastrand_like())
}

fn fastrand_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn instance(namespace: &str, urls: Vec<String>) -> common::TestServer {
    let namespace = namespace.to_owned();
    common::start(move |c| {
        c.redis.urls = urls;
        c.redis.namespace = namespace;
    })
    .await
}

#[tokio::test]
async fn a_second_instance_reads_the_shared_tier_and_hears_invalidations() {
    let ns = namespace("shared");
    let a = instance(&ns, vec![redis_url()]).await;
    let b = instance(&ns, vec![redis_url()]).await;
    assert_eq!(x_cache(&a.get("/v1/r/users/5").await), "miss");
    let from_b = b.get("/v1/r/users/5").await;
    assert_eq!(x_cache(&from_b), "l2");
    assert_eq!(
        from_b.json::<Value>().await.expect("json"),
        demo::user_json(5)
    );
    assert_eq!(x_cache(&b.get("/v1/r/users/5").await), "hit");

    // Both hear the bus: ready, and they say so.
    for instance in [&a, &b] {
        let mut ready = None;
        for _ in 0..200 {
            let response = instance.get("/readyz").await;
            if response.status() == 200 {
                ready = Some(response.json::<Value>().await.expect("json"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ready = ready.expect("ready once subscribed");
        assert_eq!(ready["redis"]["subscribed"], true, "{ready}");
        assert_eq!(instance.metric("rampart_redis_subscribed").await, 1.0);
    }

    let invalidated = a.admin_post("/v1/r/users/5/invalidate").await;
    assert_eq!(invalidated.status(), 204);
    // B's L1 copy is dropped by the bus within milliseconds.
    let mut dropped = false;
    for _ in 0..200 {
        if x_cache(&b.get("/v1/r/users/5").await) != "hit" {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(dropped, "B still answered from L1 after the invalidation");
}

#[tokio::test]
async fn with_redis_unreachable_the_service_still_answers_from_its_source() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let t = instance(
        &namespace("down"),
        vec![format!("redis://127.0.0.1:{port}/")],
    )
    .await;
    // A write that needs Redis names the cache tier, not the source.
    let invalidated = t.admin_post("/v1/r/users/1/invalidate").await;
    assert_eq!(invalidated.status(), 503);
    let body: Value = invalidated.json().await.expect("json");
    assert_eq!(body["code"], "cache_unavailable", "{body}");
    for k in 1..=30 {
        let response = t.get(&format!("/v1/r/users/{k}")).await;
        assert_eq!(response.status(), 200, "key {k}");
        assert_eq!(x_cache(&response), "miss");
    }
    assert_eq!(
        x_cache(&t.get("/v1/r/users/1").await),
        "hit",
        "L1 still works"
    );
    // An instance that cannot hear other instances' invalidations is not
    // ready (until the readiness deadline), and says why.
    let readyz = t.get("/readyz").await;
    assert_eq!(readyz.status(), 503);
    let body: Value = readyz.json().await.expect("json");
    assert_eq!(body["redis"]["subscribed"], false, "{body}");
    assert_eq!(t.metric("rampart_redis_subscribed").await, 0.0);
    // Once the Redis breaker is open, a write is refused at once, naming it.
    let invalidated = t.admin_post("/v1/r/users/1/invalidate").await;
    assert_eq!(invalidated.status(), 503);
    let body: Value = invalidated.json().await.expect("json");
    assert_eq!(body["code"], "breaker_open", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("`redis`")),
        "{body}"
    );
    t.server.shutdown().await.expect("shutdown");
}
