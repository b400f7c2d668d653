//! Sessions end to end: a real server (in-process store, or Redis on
//! 127.0.0.1:6379 — `RAMPART_TEST_REDIS_URL` elsewhere — shared by two
//! instances), a real HTTP client; and both stores driven by a mock clock
//! for expiry.

mod common;

use std::sync::Arc;
use std::time::Duration;

use rampart::breaker::{BreakerConfig, CircuitBreaker};
use rampart::clock::{Clock, WallClock};
use rampart_redis::conn::{GuardedRedis, RedisConn};
use rampart_server::sessions::memory::MemoryStore;
use rampart_server::sessions::redis::RedisStore;
use rampart_server::sessions::store::{Data, SessionStore};
use rampart_server::sessions::token::SessionId;
use rampart_server::sessions::SessionsConfig;
use serde_json::{json, Value};

fn redis_url() -> String {
    std::env::var("RAMPART_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn namespace(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("test-sessions-{test}-{}-{nanos}", std::process::id())
}

async fn on_redis(ns: &str) -> common::TestServer {
    let ns = ns.to_owned();
    common::start(move |c| {
        c.redis.urls = vec![redis_url()];
        c.redis.namespace = ns;
        // Correctness, not latency: on a loaded machine 100 scripts at once
        // may take longer than the default 250 ms per call.
        c.redis.timeout = Duration::from_secs(5);
    })
    .await
}

/// `method path` with `token` as the bearer and `body` as JSON.
async fn call(
    server: &common::TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = server.client.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

async fn create(server: &common::TestServer, data: Value) -> String {
    let response = call(
        server,
        reqwest::Method::POST,
        "/v1/sessions",
        None,
        Some(data),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.expect("json");
    body["token"].as_str().expect("token").to_owned()
}

async fn current(server: &common::TestServer, token: &str) -> (u16, Value) {
    let response = call(
        server,
        reqwest::Method::GET,
        "/v1/sessions/current",
        Some(token),
        None,
    )
    .await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

/// Log in, read, patch, rotate (the old token dies), log out.
async fn lifecycle(a: &common::TestServer, b: &common::TestServer) {
    let token = create(a, json!({ "user_id": 42 })).await;
    assert_eq!(token.len(), 43);
    let (status, body) = current(b, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({ "user_id": 42 }));

    let patched = call(
        b,
        reqwest::Method::PATCH,
        "/v1/sessions/current",
        Some(&token),
        Some(json!({ "cart": ["sku-1"], "user_id": null })),
    )
    .await;
    assert_eq!(patched.status(), 200);
    let body: Value = patched.json().await.expect("json");
    assert_eq!(body["data"], json!({ "cart": ["sku-1"] }));

    let rotated = call(
        a,
        reqwest::Method::POST,
        "/v1/sessions/current/rotate",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(rotated.status(), 200);
    assert_eq!(rotated.headers()["cache-control"], "no-store");
    let rotated: Value = rotated.json().await.expect("json");
    let new_token = rotated["token"].as_str().expect("token").to_owned();
    assert_ne!(new_token, token);
    assert_eq!(rotated["data"], json!({ "cart": ["sku-1"] }));
    assert_eq!(current(b, &token).await.0, 401, "the old token is dead");
    assert_eq!(current(b, &new_token).await.0, 200);

    let out = call(
        b,
        reqwest::Method::DELETE,
        "/v1/sessions/current",
        Some(&new_token),
        None,
    )
    .await;
    assert_eq!(out.status(), 204);
    assert_eq!(current(a, &new_token).await.0, 401);
    let again = call(
        a,
        reqwest::Method::DELETE,
        "/v1/sessions/current",
        Some(&new_token),
        None,
    )
    .await;
    assert_eq!(again.status(), 401);
}

#[tokio::test]
async fn log_in_read_patch_rotate_log_out_in_process() {
    let server = common::start(|_| {}).await;
    lifecycle(&server, &server).await;
}

#[tokio::test]
async fn two_instances_share_sessions_on_redis() {
    let ns = namespace("shared");
    let a = on_redis(&ns).await;
    let b = on_redis(&ns).await;
    lifecycle(&a, &b).await;
}

#[tokio::test]
async fn bad_tokens_and_bodies_are_precise_errors() {
    let server = common::start(|_| {}).await;
    let token = create(&server, json!({})).await;
    for (header, why) in [
        (None, "no header"),
        (Some("Basic dXNlcjpwYXNz"), "another scheme"),
        (Some("Bearer "), "an empty token"),
        (
            Some("Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            "an unknown token",
        ),
    ] {
        let mut request = server.client.get(server.url("/v1/sessions/current"));
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 401, "{why}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"rampart\"",
            "{why}"
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["code"], "no_session", "{why}");
    }
    // A token one character off is as dead as any other.
    let mut near = token.clone().into_bytes();
    near[0] = if near[0] == b'A' { b'B' } else { b'A' };
    let near = String::from_utf8(near).expect("ascii");
    assert_eq!(current(&server, &near).await.0, 401);

    for (body, field) in [
        ("[1]", "must be a JSON object, got an array"),
        ("{", "not JSON"),
        ("3", "got a number"),
    ] {
        let response = server
            .client
            .patch(server.url("/v1/sessions/current"))
            .bearer_auth(&token)
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["code"], "bad_request");
        let detail = answer["detail"].as_str().expect("detail");
        assert!(
            detail.starts_with("body: ") && detail.contains(field),
            "{detail}"
        );
    }
    let too_big = json!({ "blob": "x".repeat(20_000) });
    let response = call(
        &server,
        reqwest::Method::PATCH,
        "/v1/sessions/current",
        Some(&token),
        Some(too_big),
    )
    .await;
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.expect("json");
    assert!(answer["detail"]
        .as_str()
        .expect("detail")
        .contains("sessions.max_data_bytes"));
    assert_eq!(
        current(&server, &token).await.1["data"],
        json!({}),
        "nothing changed"
    );
}

#[tokio::test]
async fn past_the_maximum_new_sessions_are_refused_not_old_ones_evicted() {
    let server = common::start(|c| c.sessions.max_sessions = 2).await;
    let first = create(&server, json!({ "n": 1 })).await;
    create(&server, json!({ "n": 2 })).await;
    let refused = call(&server, reqwest::Method::POST, "/v1/sessions", None, None).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["code"], "sessions_full");
    assert_eq!(
        current(&server, &first).await.0,
        200,
        "the first still works"
    );
    let out = call(
        &server,
        reqwest::Method::DELETE,
        "/v1/sessions/current",
        Some(&first),
        None,
    )
    .await;
    assert_eq!(out.status(), 204);
    create(&server, json!({ "n": 3 })).await;
}

/// 100 PATCHes of one session at once, each adding its own key: all 100
/// keys are there after (a load-then-save would lose most of them).
async fn concurrent_patches(a: &common::TestServer, b: &common::TestServer) {
    let token = Arc::new(create(a, json!({})).await);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (client, token) = (a.client.clone(), Arc::clone(&token));
        let url = if i % 2 == 0 {
            a.url("/v1/sessions/current")
        } else {
            b.url("/v1/sessions/current")
        };
        tasks.push(tokio::spawn(async move {
            // A store that did not answer in time (503, Retry-After) is
            // asked again, as a client would: setting `k<i>` twice is
            // harmless, and a lost write still shows as a missing key.
            for _ in 0..50 {
                let response = client
                    .patch(&url)
                    .bearer_auth(&*token)
                    .json(&json!({ format!("k{i}"): i }))
                    .send()
                    .await
                    .expect("request");
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                if status == 503 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                assert_eq!(status, 200, "{body}");
                return;
            }
            panic!("patch {i}: the store never answered");
        }));
    }
    for task in tasks {
        task.await.expect("patch task");
    }
    let (status, body) = current(b, &token).await;
    assert_eq!(status, 200);
    let data = body["data"].as_object().expect("object");
    let missing: Vec<_> = (0..100)
        .filter(|i| !data.contains_key(&format!("k{i}")))
        .collect();
    assert!(missing.is_empty(), "lost writes: {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_lose_nothing_in_process() {
    let server = common::start(|_| {}).await;
    concurrent_patches(&server, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_lose_nothing_on_redis_across_instances() {
    let ns = namespace("patches");
    let a = on_redis(&ns).await;
    let b = on_redis(&ns).await;
    concurrent_patches(&a, &b).await;
}

fn short() -> SessionsConfig {
    SessionsConfig {
        idle_timeout: Duration::from_secs(60),
        absolute_timeout: Duration::from_secs(300),
        ..SessionsConfig::default()
    }
}

/// Idle expiry slides with use; the absolute one does not; rotation keeps
/// the creation time. Time is the mock clock's.
async fn expiry(store: &dyn SessionStore) {
    let (clock, mock) = Clock::mock();
    let wall = WallClock::new(clock);
    let id = SessionId::of(b"expiry");
    let data: Data = json!({ "a": 1 }).as_object().cloned().expect("object");
    store
        .create(id, data, wall.unix_ms())
        .await
        .expect("create");

    // Used every 50 s (idle 60 s): alive past 250 s.
    for _ in 0..5 {
        mock.increment(Duration::from_secs(50));
        assert!(store.get(&id, wall.unix_ms()).await.expect("get").is_some());
    }
    // 250 s in: rotation keeps the creation time, so the absolute
    // deadline (300 s) still holds for the new id.
    let rotated = SessionId::of(b"expiry-rotated");
    assert!(store
        .rotate(&id, rotated, wall.unix_ms())
        .await
        .expect("rotate")
        .is_some());
    mock.increment(Duration::from_secs(49));
    assert!(store
        .get(&rotated, wall.unix_ms())
        .await
        .expect("get")
        .is_some());
    mock.increment(Duration::from_secs(2));
    assert!(
        store
            .get(&rotated, wall.unix_ms())
            .await
            .expect("get")
            .is_none(),
        "absolute"
    );

    // Idle: 61 s without use.
    let idle = SessionId::of(b"idle");
    store
        .create(idle, Data::new(), wall.unix_ms())
        .await
        .expect("create");
    mock.increment(Duration::from_secs(59));
    assert!(store
        .patch(&idle, Data::new(), wall.unix_ms())
        .await
        .expect("patch")
        .is_some());
    mock.increment(Duration::from_secs(61));
    assert!(
        store
            .get(&idle, wall.unix_ms())
            .await
            .expect("get")
            .is_none(),
        "idle"
    );
    assert!(!store.delete(&idle, wall.unix_ms()).await.expect("delete"));
}

#[tokio::test]
async fn expiry_with_a_mock_clock_in_process() {
    let store = MemoryStore::new(short());
    expiry(&store).await;
    assert_eq!(
        store.live_sessions(),
        Some(0),
        "expired sessions were removed when touched"
    );
}

#[tokio::test]
async fn expiry_with_a_mock_clock_on_redis() {
    let conn = RedisConn::connect(&[redis_url()]).await.expect("redis");
    let breaker = CircuitBreaker::new("redis", BreakerConfig::default());
    let redis = GuardedRedis::new(conn, breaker, Duration::from_secs(2));
    let store = RedisStore::new(redis, &namespace("expiry"), short());
    expiry(&store).await;
}

#[tokio::test]
async fn the_sweeper_frees_expired_sessions() {
    let store = MemoryStore::new(short());
    for n in 0..10u8 {
        store
            .create(SessionId::of(&[n]), Data::new(), 0)
            .await
            .expect("create");
    }
    store
        .create(SessionId::of(b"late"), Data::new(), 30_000)
        .await
        .expect("create");
    assert_eq!(store.sweep(60_000).await, 10);
    assert_eq!(store.live_sessions(), Some(1));
}

#[tokio::test]
async fn the_store_holds_hashes_not_tokens() {
    // The token is answered once; what Redis holds is keyed by its SHA-256
    // and does not contain it.
    let ns = namespace("hashes");
    let server = on_redis(&ns).await;
    let token = create(&server, json!({ "x": 1 })).await;
    let client = redis::Client::open(redis_url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{ns}:session:*"))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert_eq!(
        keys,
        vec![format!(
            "{{{ns}:session:{}}}",
            SessionId::of(token.as_bytes()).hex()
        )]
    );
    let fields: Vec<String> = redis::cmd("HGETALL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .expect("hgetall");
    assert!(fields.iter().all(|f| !f.contains(&token)));
}
