//! The config center end to end, over a real server on port 0 (SQLite;
//! PostgreSQL for the two-instance tests): CAS writes, long-poll and
//! watch, history, diff, rollback, canary, schema, size, auth, malformed
//! input, restart during a watch, propagation across instances.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};

/// A 1 s request timeout (the resources' load bounds shortened to fit),
/// so a long-poll held past it shows the routes' own deadline.
fn short_request_timeout(config: &mut rampart_server::Config) {
    config.server.request_timeout = Duration::from_secs(1);
    for resource in &mut config.resources {
        resource.cache.load_timeout = Duration::from_millis(500);
        resource.cache.lease_wait = Duration::from_millis(200);
    }
}

fn change(reason: &str) -> Value {
    json!({ "author": "ops@example.com", "reason": reason, "rollback_plan": "roll back to the previous version" })
}

/// A PUT with the admin token and the given precondition header.
async fn put(
    server: &TestServer,
    ns: &str,
    header: Option<(&str, String)>,
    body: Value,
) -> reqwest::Response {
    let mut request = server
        .client
        .put(server.url(&format!("/v1/config/{ns}")))
        .bearer_auth(server.admin_token())
        .json(&body);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    request.send().await.expect("put")
}

async fn create(server: &TestServer, ns: &str, content: Value) -> reqwest::Response {
    put(
        server,
        ns,
        Some(("if-none-match", "*".into())),
        json!({ "content": content, "change": change("create") }),
    )
    .await
}

async fn update(server: &TestServer, ns: &str, from: u64, content: Value) -> reqwest::Response {
    put(
        server,
        ns,
        Some(("if-match", format!("\"{from}\""))),
        json!({ "content": content, "change": change("update") }),
    )
    .await
}

/// A GET (a long-poll) running in the background.
fn get_in_background(
    server: &TestServer,
    path: &str,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let (client, url) = (server.client.clone(), server.url(path));
    tokio::spawn(async move { client.get(url).send().await.expect("long-poll") })
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

async fn admin(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    if_match: Option<u64>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = server
        .client
        .request(method, server.url(path))
        .bearer_auth(server.admin_token());
    if let Some(v) = if_match {
        request = request.header("if-match", format!("\"{v}\""));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("admin request")
}

#[tokio::test]
async fn put_get_etag_history_diff_and_rollback() {
    let server = common::start(|_| {}).await;
    let created = create(
        &server,
        "payments",
        json!({ "timeout_ms": 100, "retries": 2 }),
    )
    .await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["etag"], "\"1\"");
    let v2 = update(
        &server,
        "payments",
        1,
        json!({ "timeout_ms": 250, "retries": 2 }),
    )
    .await;
    assert_eq!(v2.status(), 200);
    assert_eq!(v2.headers()["etag"], "\"2\"");

    let got = server.get("/v1/config/payments").await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["etag"], "\"2\"");
    let body = json_of(got).await;
    assert_eq!(body["namespace"], "payments");
    assert_eq!(body["version"], 2);
    assert_eq!(body["content"], json!({ "timeout_ms": 250, "retries": 2 }));
    assert_eq!(body["canary"], false);
    assert_eq!(body["digest"].as_str().map(str::len), Some(64));

    let same = server
        .client
        .get(server.url("/v1/config/payments"))
        .header("if-none-match", "\"2\"")
        .send()
        .await
        .expect("get");
    assert_eq!(same.status(), 304);
    assert_eq!(same.headers()["etag"], "\"2\"");

    let list = json_of(server.get("/v1/config").await).await;
    assert_eq!(list["namespaces"][0]["name"], "payments");
    assert_eq!(list["namespaces"][0]["version"], 2);
    assert_eq!(list["namespaces"][0]["canary"], Value::Null);

    let history = json_of(server.get("/v1/config/payments/history?limit=1").await).await;
    assert_eq!(history["versions"][0]["version"], 2);
    assert_eq!(history["versions"][0]["change"]["reason"], "update");
    assert_eq!(history["next"], 2);
    let older = json_of(server.get("/v1/config/payments/history?before=2").await).await;
    assert_eq!(older["versions"][0]["version"], 1);
    assert_eq!(older["next"], Value::Null);

    let patch = json_of(server.get("/v1/config/payments/diff?from=1&to=2").await).await;
    assert_eq!(
        patch,
        json!([{ "op": "replace", "path": "/timeout_ms", "value": 250 }])
    );

    let rolled = admin(
        &server,
        reqwest::Method::POST,
        "/v1/config/payments/rollback",
        Some(2),
        Some(json!({ "to": 1, "change": change("timeouts regressed") })),
    )
    .await;
    assert_eq!(rolled.status(), 200);
    assert_eq!(rolled.headers()["etag"], "\"3\"");
    let now = json_of(server.get("/v1/config/payments").await).await;
    assert_eq!(now["version"], 3);
    assert_eq!(now["content"], json!({ "timeout_ms": 100, "retries": 2 }));
    // History is never rewritten: 1, 2 and 3 all there.
    let one = json_of(server.get("/v1/config/payments/versions/2").await).await;
    assert_eq!(one["content"]["timeout_ms"], 250);
    assert_eq!(one["change"]["author"], "ops@example.com");
    let missing = server.get("/v1/config/payments/versions/9").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(json_of(missing).await["code"], "unknown_version");
    let unknown = server.get("/v1/config/nope").await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(json_of(unknown).await["code"], "unknown_namespace");
}

#[tokio::test]
async fn a_hundred_concurrent_writers_with_the_same_if_match_one_wins() {
    let server = common::start(|_| {}).await;
    assert_eq!(
        create(&server, "race", json!({ "n": 0 })).await.status(),
        201
    );
    let token = server.admin_token();
    let writers: Vec<_> = (0..100)
        .map(|i| {
            let (client, url, token) = (
                server.client.clone(),
                server.url("/v1/config/race"),
                token.clone(),
            );
            tokio::spawn(async move {
                let response = client
                    .put(url)
                    .bearer_auth(token)
                    .header("if-match", "\"1\"")
                    .json(&json!({ "content": { "n": i }, "change": change("race") }))
                    .send()
                    .await
                    .expect("put");
                let status = response.status().as_u16();
                let body: Value = response.json().await.expect("json");
                (status, body)
            })
        })
        .collect();
    let mut won = 0;
    for writer in writers {
        let (status, body) = writer.await.expect("writer");
        match status {
            200 => won += 1,
            412 => {
                assert_eq!(body["code"], "version_mismatch");
                assert_eq!(body["current_version"], 2);
            }
            // The write bulkhead (8 running, 32 waiting) sheds the rest.
            503 => assert_eq!(body["code"], "overloaded"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(won, 1, "exactly one writer wins");
    let history = json_of(server.get("/v1/config/race/history").await).await;
    assert_eq!(history["versions"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn preconditions_auth_size_schema_and_malformed_input_are_refused_precisely() {
    let server = common::start(|config| config.config_center.max_content_bytes = 1_000).await;
    // No token, a wrong token.
    let anonymous = server
        .client
        .put(server.url("/v1/config/app"))
        .header("if-none-match", "*")
        .json(&json!({ "content": {}, "change": change("x") }))
        .send()
        .await
        .expect("put");
    assert_eq!(anonymous.status(), 401);
    let wrong = server
        .client
        .put(server.url("/v1/config/app"))
        .bearer_auth("not-the-token")
        .header("if-none-match", "*")
        .json(&json!({ "content": {}, "change": change("x") }))
        .send()
        .await
        .expect("put");
    assert_eq!(wrong.status(), 403);
    // No precondition.
    let bare = put(
        &server,
        "app",
        None,
        json!({ "content": {}, "change": change("x") }),
    )
    .await;
    assert_eq!(bare.status(), 428);
    assert_eq!(json_of(bare).await["code"], "precondition_required");
    // A change record missing two fields: both named.
    let partial = put(
        &server,
        "app",
        Some(("if-none-match", "*".into())),
        json!({ "content": {}, "change": { "author": "me", "reason": "" } }),
    )
    .await;
    assert_eq!(partial.status(), 422);
    let body = json_of(partial).await;
    assert_eq!(body["code"], "missing_change");
    assert_eq!(
        body["missing"],
        json!(["change.reason", "change.rollback_plan"])
    );
    // Malformed JSON: line and column.
    let malformed = server
        .client
        .put(server.url("/v1/config/app"))
        .bearer_auth(server.admin_token())
        .header("if-none-match", "*")
        .header("content-type", "application/json")
        .body("{\n  \"content\": {,\n}")
        .send()
        .await
        .expect("put");
    assert_eq!(malformed.status(), 400);
    let body = json_of(malformed).await;
    assert_eq!(body["code"], "malformed_json");
    assert_eq!(
        (body["line"].as_u64(), body["column"].as_u64()),
        (Some(2), Some(15))
    );
    // Too large.
    let big = create(&server, "app", json!({ "blob": "x".repeat(2_000) })).await;
    assert_eq!(big.status(), 413);
    assert_eq!(json_of(big).await["code"], "content_too_large");
    // Schema: violations with their JSON pointers; nothing written.
    let schema = json!({
        "type": "object",
        "required": ["timeout_ms"],
        "properties": { "timeout_ms": { "type": "integer", "minimum": 1 }, "hosts": { "type": "array", "items": { "type": "string" } } }
    });
    let bad = put(
        &server,
        "app",
        Some(("if-none-match", "*".into())),
        json!({ "content": { "timeout_ms": "fast", "hosts": ["a", 7] }, "change": change("x"), "schema": schema }),
    )
    .await;
    assert_eq!(bad.status(), 422);
    let body = json_of(bad).await;
    assert_eq!(body["code"], "schema_violation");
    let pointers: HashSet<&str> = body["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter_map(|v| v["pointer"].as_str())
        .collect();
    assert_eq!(pointers, HashSet::from(["/timeout_ms", "/hosts/1"]));
    assert_eq!(
        server.get("/v1/config/app").await.status(),
        404,
        "no partial state"
    );
    let good = put(
        &server,
        "app",
        Some(("if-none-match", "*".into())),
        json!({ "content": { "timeout_ms": 5 }, "change": change("x"), "schema": schema }),
    )
    .await;
    assert_eq!(good.status(), 201);
    // The schema stays with the namespace.
    let later = update(&server, "app", 1, json!({ "timeout_ms": 0 })).await;
    assert_eq!(later.status(), 422);
    assert_eq!(
        json_of(later).await["violations"][0]["pointer"],
        "/timeout_ms"
    );
    // An invalid schema.
    let invalid = put(
        &server,
        "other",
        Some(("if-none-match", "*".into())),
        json!({ "content": {}, "change": change("x"), "schema": { "type": 12 } }),
    )
    .await;
    assert_eq!(invalid.status(), 422);
    assert_eq!(json_of(invalid).await["code"], "invalid_schema");
    // Create twice, a stale If-Match.
    let again = create(&server, "app", json!({ "timeout_ms": 5 })).await;
    assert_eq!(again.status(), 412);
    assert_eq!(again.headers()["etag"], "\"1\"");
    assert_eq!(json_of(again).await["code"], "namespace_exists");
    let stale = update(&server, "app", 7, json!({ "timeout_ms": 5 })).await;
    assert_eq!(stale.status(), 412);
    assert_eq!(json_of(stale).await["current_version"], 1);
    // A bad name.
    let name = server.get("/v1/config/bad%20name").await;
    assert_eq!(name.status(), 400);
    assert_eq!(json_of(name).await["code"], "bad_namespace");
}

#[tokio::test]
async fn a_long_poll_answers_at_once_when_behind_holds_until_a_write_and_times_out_with_304() {
    let server = common::start(short_request_timeout).await;
    create(&server, "flags", json!({ "dark_mode": false })).await;
    // Behind: at once.
    let started = Instant::now();
    let behind = server.get("/v1/config/flags?after=0&wait=20s").await;
    assert_eq!(behind.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Current: held until the wait ends, then 304.
    let started = Instant::now();
    let quiet = server.get("/v1/config/flags?after=1&wait=300ms").await;
    assert_eq!(quiet.status(), 304);
    assert!(started.elapsed() >= Duration::from_millis(290));
    // Held past the request timeout (1 s here) and the connection
    // watchdog, answered by the write.
    let (client, url) = (
        server.client.clone(),
        server.url("/v1/config/flags?after=1&wait=20s"),
    );
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let response = client.get(url).send().await.expect("long-poll");
        (
            started.elapsed(),
            response.status(),
            response.json::<Value>().await.ok(),
        )
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        update(&server, "flags", 1, json!({ "dark_mode": true }))
            .await
            .status(),
        200
    );
    let (held, status, body) = poll.await.expect("poll");
    assert_eq!(status, 200);
    assert!(held >= Duration::from_millis(1_400), "held {held:?}");
    let body = body.expect("json");
    assert_eq!(body["version"], 2);
    assert_eq!(body["content"]["dark_mode"], true);
    // Ahead of the server (a restored database): resync, at once.
    let ahead = json_of(server.get("/v1/config/flags?after=9&wait=20s").await).await;
    assert_eq!(ahead["resync"], true);
    assert_eq!(ahead["version"], 2);
}

#[tokio::test]
async fn watchers_see_every_namespace_change_in_order_never_older() {
    let server = common::start(|_| {}).await;
    create(&server, "a", json!({ "v": 1 })).await;
    create(&server, "b", json!({ "v": 1 })).await;
    // A multi-namespace watch: names and versions only.
    let (client, url) = (server.client.clone(), server.url("/v1/config/watch"));
    let watch = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({ "namespaces": { "a": 1, "b": 1, "later": 0 }, "wait": "20s" }))
            .send()
            .await
            .expect("watch")
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    update(&server, "b", 1, json!({ "v": 2 })).await;
    let answer = watch.await.expect("watch");
    assert_eq!(answer.status(), 200);
    assert_eq!(json_of(answer).await, json!({ "changed": { "b": 2 } }));
    let none = server
        .client
        .post(server.url("/v1/config/watch"))
        .json(&json!({ "namespaces": { "a": 1, "b": 2 }, "wait": "200ms" }))
        .send()
        .await
        .expect("watch");
    assert_eq!(none.status(), 304);

    // 20 long-polling watchers follow 30 writes; each sees increasing
    // versions and ends on the last.
    let watchers: Vec<_> = (0..20)
        .map(|_| {
            let (client, base) = (server.client.clone(), server.base.clone());
            tokio::spawn(async move {
                let mut seen = vec![1u64];
                while seen.last() != Some(&31) {
                    let after = seen.last().copied().unwrap_or(0);
                    let response = client
                        .get(format!("{base}/v1/config/a?after={after}&wait=10s"))
                        .send()
                        .await
                        .expect("poll");
                    if response.status() == 200 {
                        let body: Value = response.json().await.expect("json");
                        let v = body["version"].as_u64().expect("version");
                        assert_eq!(body["content"]["v"], v, "content of another version");
                        seen.push(v);
                    }
                }
                seen
            })
        })
        .collect();
    for v in 1..=30 {
        assert_eq!(
            update(&server, "a", v, json!({ "v": v + 1 }))
                .await
                .status(),
            200
        );
    }
    for watcher in watchers {
        let seen = watcher.await.expect("watcher");
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "not in order: {seen:?}"
        );
    }
}

#[tokio::test]
async fn a_canary_is_sticky_follows_its_percentage_and_is_promoted_or_aborted() {
    let server = common::start(|_| {}).await;
    create(&server, "search", json!({ "ranker": "bm25" })).await;
    let started = admin(
        &server,
        reqwest::Method::PUT,
        "/v1/config/search/canary",
        Some(1),
        Some(json!({ "content": { "ranker": "neural" }, "change": change("try neural"), "clients": ["tester"], "percent": 10 })),
    )
    .await;
    assert_eq!(started.status(), 200);
    // While it runs, a plain write is refused.
    let blocked = update(&server, "search", 1, json!({ "ranker": "x" })).await;
    assert_eq!(blocked.status(), 409);
    assert_eq!(json_of(blocked).await["code"], "canary_active");
    let listed = json_of(server.get("/v1/config/search?client=tester").await).await;
    assert_eq!(
        (listed["version"].as_u64(), listed["canary"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(listed["content"]["ranker"], "neural");
    let plain = json_of(server.get("/v1/config/search").await).await;
    assert_eq!(
        (plain["version"].as_u64(), plain["canary"].as_bool()),
        (Some(1), Some(false))
    );

    // 10,000 ids: about 10 % on the canary, each on the same side every time.
    let state = &server.server.state.config_center;
    let snapshot = state.registry.get("search").expect("served");
    let ns = snapshot.load();
    let mut on = 0;
    for i in 0..10_000 {
        let id = format!("client-{i}");
        let (_, canary) = ns.view(Some(&id));
        let (_, again) = ns.view(Some(&id));
        assert_eq!(canary, again);
        on += usize::from(canary);
    }
    assert!(
        (850..=1_150).contains(&on),
        "{on} of 10,000 on a 10 % canary"
    );
    // Stickiness over HTTP too, for a sample.
    for i in 0..50 {
        let id = format!("client-{i}");
        let (_, expected) = ns.view(Some(&id));
        let body = json_of(server.get(&format!("/v1/config/search?client={id}")).await).await;
        assert_eq!(body["canary"].as_bool(), Some(expected), "{id}");
    }
    drop(ns);

    // A stable-side watcher is woken by the promotion; the canary side is
    // already on that version.
    let stable_watch = get_in_background(&server, "/v1/config/search?after=1&wait=20s");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let promoted = admin(
        &server,
        reqwest::Method::POST,
        "/v1/config/search/canary/promote",
        None,
        None,
    )
    .await;
    assert_eq!(promoted.status(), 200);
    assert_eq!(promoted.headers()["etag"], "\"2\"");
    let woken = json_of(stable_watch.await.expect("watch")).await;
    assert_eq!(
        (woken["version"].as_u64(), woken["canary"].as_bool()),
        (Some(2), Some(false))
    );
    assert_eq!(woken["content"]["ranker"], "neural");
    let history = json_of(server.get("/v1/config/search/versions/2").await).await;
    assert_eq!(history["change"]["reason"], "try neural");

    // Abort: the canary side is told to go back (resync), at once.
    admin(
        &server,
        reqwest::Method::PUT,
        "/v1/config/search/canary",
        Some(2),
        Some(json!({ "content": { "ranker": "hybrid" }, "change": change("try hybrid"), "clients": ["tester"] })),
    )
    .await;
    let canary_side = json_of(server.get("/v1/config/search?client=tester").await).await;
    assert_eq!(canary_side["version"], 3);
    let canary_watch =
        get_in_background(&server, "/v1/config/search?client=tester&after=3&wait=20s");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let aborted = admin(
        &server,
        reqwest::Method::DELETE,
        "/v1/config/search/canary",
        None,
        None,
    )
    .await;
    assert_eq!(aborted.status(), 200);
    let back = json_of(canary_watch.await.expect("watch")).await;
    assert_eq!(
        (back["version"].as_u64(), back["resync"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(back["content"]["ranker"], "neural");
    let gone = admin(
        &server,
        reqwest::Method::DELETE,
        "/v1/config/search/canary",
        None,
        None,
    )
    .await;
    assert_eq!(gone.status(), 404);
    assert_eq!(json_of(gone).await["code"], "no_canary");
}

#[tokio::test]
async fn a_restart_during_a_watch_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = common::config(dir.path(), |_| {});
    let server = common::start_with(config.clone(), dir).await;
    create(&server, "svc", json!({ "n": 1 })).await;
    let (client, url) = (
        server.client.clone(),
        server.url("/v1/config/svc?after=1&wait=20s"),
    );
    let watch = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let TestServer {
        server: old, dir, ..
    } = server;
    old.shutdown().await.expect("shutdown");
    // The watch ends with the server (an error or a 304), never a wrong answer.
    if let Ok(response) = watch.await.expect("watch") {
        assert_eq!(response.status(), 304);
    }
    let server = common::start_with(config, dir).await;
    assert_eq!(
        update(&server, "svc", 1, json!({ "n": 2 })).await.status(),
        200
    );
    // The client retries with its cursor and gets the new version.
    let body = json_of(server.get("/v1/config/svc?after=1&wait=5s").await).await;
    assert_eq!(body["version"], 2);
}

/// The request timeout (1 s) and the connection watchdog (request timeout
/// + 10 s) cut every other route; a long-poll is held to its own `wait`.
#[tokio::test]
async fn a_long_poll_outlives_the_request_timeout_and_the_connection_watchdog() {
    let server = common::start(short_request_timeout).await;
    create(&server, "slow", json!({})).await;
    let started = Instant::now();
    let response = server.get("/v1/config/slow?after=1&wait=12s").await;
    assert_eq!(response.status(), 304);
    assert!(
        started.elapsed() >= Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    // The connection is still good for the next request.
    assert_eq!(server.get("/v1/config/slow").await.status(), 200);
}

/// Two instances over one PostgreSQL schema; `listen` and the reconcile
/// interval per the test.
async fn two_instances_on_postgres(
    tag: &str,
    listen: bool,
    reconcile: Duration,
) -> (common::Schema, TestServer, TestServer) {
    let schema = common::Schema::create(tag).await;
    common::demo_data(&schema.url());
    let mut servers = Vec::new();
    for _ in 0..2 {
        let url = schema.url();
        servers.push(
            common::start(move |c| {
                c.database.url = url;
                c.config_center.listen = listen;
                c.config_center.reconcile_interval = reconcile;
            })
            .await,
        );
    }
    let b = servers.pop().expect("b");
    let a = servers.pop().expect("a");
    (schema, a, b)
}

/// A write on A answers a watcher parked on B: by NOTIFY, well before the
/// (here one-minute) reconcile could. Then writers racing on both
/// instances with the same If-Match: exactly one wins.
#[tokio::test]
async fn a_write_on_one_instance_reaches_a_watcher_on_another_by_notify() {
    let (schema, a, b) =
        two_instances_on_postgres("cc_notify", true, Duration::from_secs(60)).await;
    assert_eq!(create(&a, "shared", json!({ "n": 1 })).await.status(), 201);
    // B learns of the new namespace by the notice too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.get("/v1/config/shared").await.status() != 200 {
        assert!(Instant::now() < deadline, "B never heard of the namespace");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (client, url) = (
        b.client.clone(),
        b.url("/v1/config/shared?after=1&wait=20s"),
    );
    let watch = tokio::spawn(async move {
        let response = client.get(url).send().await.expect("poll");
        (
            Instant::now(),
            response.json::<Value>().await.expect("json"),
        )
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let wrote = Instant::now();
    assert_eq!(
        update(&a, "shared", 1, json!({ "n": 2 })).await.status(),
        200
    );
    let (answered, body) = watch.await.expect("watch");
    assert_eq!(body["version"], 2);
    assert_eq!(body["content"]["n"], 2);
    let lag = answered.saturating_duration_since(wrote);
    assert!(lag < Duration::from_secs(3), "took {lag:?}");
    // Writers on both instances with the same If-Match: one wins.
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let server = if i % 2 == 0 { &a } else { &b };
            let (client, url, token) = (
                server.client.clone(),
                server.url("/v1/config/shared"),
                server.admin_token(),
            );
            tokio::spawn(async move {
                client
                    .put(url)
                    .bearer_auth(token)
                    .header("if-match", "\"2\"")
                    .json(&json!({ "content": { "n": i }, "change": change("race") }))
                    .send()
                    .await
                    .expect("put")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for writer in writers {
        statuses.push(writer.await.expect("writer"));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 412, 503].contains(s)),
        "{statuses:?}"
    );
    a.server.shutdown().await.expect("a");
    b.server.shutdown().await.expect("b");
    schema.drop().await;
}

/// With notices off (as if every one were lost), the reconcile still
/// delivers a write on A to a watcher parked on B.
#[tokio::test]
async fn with_notices_off_the_reconcile_still_delivers_the_write() {
    let (schema, a, b) =
        two_instances_on_postgres("cc_reconcile", false, Duration::from_millis(300)).await;
    assert_eq!(create(&a, "shared", json!({ "n": 1 })).await.status(), 201);
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.get("/v1/config/shared").await.status() != 200 {
        assert!(
            Instant::now() < deadline,
            "the reconcile never brought the namespace"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (client, url) = (b.client.clone(), b.url("/v1/config/watch"));
    let watch = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({ "namespaces": { "shared": 1 }, "wait": "20s" }))
            .send()
            .await
            .expect("watch")
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let wrote = Instant::now();
    assert_eq!(
        update(&a, "shared", 1, json!({ "n": 2 })).await.status(),
        200
    );
    let answer = watch.await.expect("watch");
    assert_eq!(answer.status(), 200);
    assert_eq!(json_of(answer).await, json!({ "changed": { "shared": 2 } }));
    let lag = wrote.elapsed();
    assert!(lag < Duration::from_secs(5), "took {lag:?}");
    assert_eq!(
        json_of(b.get("/v1/config/shared").await).await["content"]["n"],
        2
    );
    a.server.shutdown().await.expect("a");
    b.server.shutdown().await.expect("b");
    schema.drop().await;
}

/// Polls `/metrics` until `series` reads `want` (gauges move as requests
/// park and leave; a scrape can land between the two).
async fn metric_becomes(server: &TestServer, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = server.metric(series).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} stayed {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_show_parked_watchers_and_each_namespaces_version() {
    let server = common::start(|_| {}).await;
    create(&server, "flags", json!({ "dark_mode": false })).await;
    create(&server, "limits", json!({ "rps": 10 })).await;
    update(&server, "limits", 1, json!({ "rps": 20 })).await;
    metric_becomes(&server, "rampart_config_namespaces", 2.0).await;
    metric_becomes(
        &server,
        "rampart_config_namespace_version{namespace=\"flags\"}",
        1.0,
    )
    .await;
    metric_becomes(
        &server,
        "rampart_config_namespace_version{namespace=\"limits\"}",
        2.0,
    )
    .await;
    metric_becomes(&server, "rampart_config_watchers_parked", 0.0).await;
    // Three long-polls and one multi-namespace watch park.
    let mut held: Vec<_> = (0..3)
        .map(|_| get_in_background(&server, "/v1/config/flags?after=1&wait=20s"))
        .collect();
    let (client, url) = (server.client.clone(), server.url("/v1/config/watch"));
    held.push(tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({ "namespaces": { "flags": 1 }, "wait": "20s" }))
            .send()
            .await
            .expect("watch")
    }));
    metric_becomes(&server, "rampart_config_watchers_parked", 4.0).await;
    // One write answers them all; the gauges follow.
    assert_eq!(
        update(&server, "flags", 1, json!({ "dark_mode": true }))
            .await
            .status(),
        200
    );
    for request in held {
        assert_eq!(request.await.expect("watcher").status(), 200);
    }
    metric_becomes(&server, "rampart_config_watchers_parked", 0.0).await;
    metric_becomes(
        &server,
        "rampart_config_namespace_version{namespace=\"flags\"}",
        2.0,
    )
    .await;
}
