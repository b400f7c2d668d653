//! Live reload of the guards' settings: a changed file applied by
//! `POST /v1/admin/reload` (and by SIGHUP through the real binary), the
//! behaviour seen changing; an invalid or restart-only change refused with
//! the running settings kept; a config-center namespace as the source.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart_server::Config;
use serde_json::{json, Value};

use common::TestServer;

/// The users resource's load, slowed to a few hundred milliseconds in
/// SQLite (a recursive count before the row), so concurrent misses overlap
/// at the bulkhead.
const SLOW_LOAD: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) SELECT id, name, email, country, balance_cents, created_at FROM users WHERE id = $1 AND (SELECT COUNT(*) FROM c) > 0";

/// The embedded example's text with `edits` (from, to) applied once each.
fn config_text(edits: &[(&str, &str)]) -> String {
    let mut text = rampart_server::config::DEFAULT_CONFIG.to_owned();
    for (from, to) in edits {
        assert!(text.contains(from), "the example has {from:?}");
        text = text.replacen(from, to, 1);
    }
    text
}

/// What the test server overrides (as flags would), the same at start and
/// at every reload.
fn overrides(config: &mut Config, dir: &Path) {
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.data_dir = dir.to_path_buf();
    config.demo_rows = common::ROWS;
    config.warmup.enabled = false;
}

/// A server started from a config file in its data directory, reloading
/// from that file.
async fn start_from_file(text: &str) -> (TestServer, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rampart.toml");
    std::fs::write(&path, text).expect("write config");
    let data = dir.path().to_path_buf();
    let mut config = Config::from_file(&path).expect("valid config");
    overrides(&mut config, &data);
    let server = common::start_with(config, dir).await;
    let (file, data_dir) = (path.clone(), data);
    server.server.state.reload.set_source(Box::new(move || {
        let mut config = Config::from_file(&file)?;
        overrides(&mut config, &data_dir);
        Ok(config)
    }));
    (server, path)
}

async fn reload(server: &TestServer) -> (u16, Value) {
    let response = server.admin_post("/v1/admin/reload").await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

async fn x_cache_of(server: &TestServer, path: &str) -> String {
    let response = server.get(path).await;
    assert_eq!(response.status(), 200, "{path}");
    common::x_cache(&response)
}

#[tokio::test]
async fn a_shorter_ttl_reloaded_from_the_file_expires_keys_sooner() {
    let (server, path) = start_from_file(&config_text(&[])).await;
    assert_eq!(x_cache_of(&server, "/v1/r/users/1").await, "miss");
    assert_eq!(x_cache_of(&server, "/v1/r/users/1").await, "hit");
    assert_eq!(
        server
            .metric("rampart_settings_version{source=\"file\"}")
            .await,
        1.0
    );

    // Nothing changed: applied, with nothing to report.
    let (status, body) = reload(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], json!([]));

    std::fs::write(
        &path,
        config_text(&[
            ("\nttl = \"60s\"", "\nttl = \"1s\""),
            ("\ngrace = \"10s\"", "\ngrace = \"0s\""),
        ]),
    )
    .expect("write");
    let (status, body) = reload(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], json!(["resource.users.cache"]));
    assert_eq!(body["source"], "file");
    assert_eq!(body["version"], 3);
    assert_eq!(
        server
            .metric("rampart_settings_version{source=\"file\"}")
            .await,
        3.0
    );
    assert_eq!(
        server
            .metric("rampart_config_reload_total{result=\"ok\"}")
            .await,
        2.0
    );

    // A key filled after the change lives 1 s, no longer 60 s.
    assert_eq!(x_cache_of(&server, "/v1/r/users/2").await, "miss");
    assert_eq!(x_cache_of(&server, "/v1/r/users/2").await, "hit");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(
        x_cache_of(&server, "/v1/r/users/2").await,
        "miss",
        "expired under the reloaded TTL"
    );
}

/// The warm-up's concurrency and rate reload live: the limits a running
/// warm-up re-reads between batches change; an invalid one is refused and
/// the running limits stay.
#[tokio::test]
async fn the_warm_up_rate_and_concurrency_reload_live() {
    let (server, path) = start_from_file(&config_text(&[])).await;
    let limits = &server.server.state.warm_limits;
    assert_eq!(
        (limits.max_concurrency(), limits.max_keys_per_sec()),
        (2, None)
    );
    std::fs::write(
        &path,
        config_text(&[
            ("max_keys_per_sec = 0", "max_keys_per_sec = 5000"),
            ("concurrency = 2", "concurrency = 1"),
        ]),
    )
    .expect("write");
    let (status, body) = reload(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["changed"],
        json!(["warmup.concurrency", "warmup.max_keys_per_sec"])
    );
    assert_eq!(
        (limits.max_concurrency(), limits.max_keys_per_sec()),
        (1, Some(5000))
    );

    std::fs::write(
        &path,
        config_text(&[("concurrency = 2", "concurrency = 0")]),
    )
    .expect("write");
    let (status, body) = reload(&server).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("concurrency"),
        "{body}"
    );
    assert_eq!(
        (limits.max_concurrency(), limits.max_keys_per_sec()),
        (1, Some(5000))
    );
}

#[tokio::test]
async fn an_invalid_or_restart_only_change_is_refused_and_the_running_settings_stay() {
    let (server, path) = start_from_file(&config_text(&[])).await;
    let bulkhead_max = "rampart_bulkhead{resource=\"users\",state=\"max\"}";
    assert_eq!(server.metric(bulkhead_max).await, 8.0);

    // Invalid: a zero TTL, beside a valid bulkhead change — nothing applies.
    std::fs::write(
        &path,
        config_text(&[
            ("ttl = \"60s\"", "ttl = \"0s\""),
            ("max_concurrent = 8", "max_concurrent = 2"),
        ]),
    )
    .expect("write");
    let (status, body) = reload(&server).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "reload_refused");
    let detail = body["detail"].as_str().expect("detail");
    assert!(detail.contains("cache.ttl"), "names the field: {detail}");
    assert_eq!(server.metric(bulkhead_max).await, 8.0, "nothing applied");

    // Not TOML at all.
    std::fs::write(&path, "max_concurrent_requests = [").expect("write");
    let (status, body) = reload(&server).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("reload_refused"))
    );

    // Restart-only settings, named, beside a live one.
    std::fs::write(
        &path,
        config_text(&[
            ("pool_size = 10", "pool_size = 3"),
            ("request_timeout = \"5s\"", "request_timeout = \"6s\""),
            // The warm-up's batch size: restart-only (its rate and
            // concurrency are live).
            ("batch_size = 500", "batch_size = 100"),
            ("max_concurrent = 8", "max_concurrent = 2"),
        ]),
    )
    .expect("write");
    let (status, body) = reload(&server).await;
    assert_eq!(status, 422, "{body}");
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.contains("database") && detail.contains("server (only") && detail.contains("warmup"),
        "{detail}"
    );
    assert_eq!(server.metric(bulkhead_max).await, 8.0, "nothing applied");
    assert_eq!(
        server
            .metric("rampart_config_reload_total{result=\"refused\"}")
            .await,
        3.0
    );
    assert_eq!(
        server
            .metric("rampart_settings_version{source=\"file\"}")
            .await,
        1.0
    );

    // Without the admin token: 401, nothing read.
    let anonymous = server
        .client
        .post(server.url("/v1/admin/reload"))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_bulkhead_of_one_reloaded_refuses_the_second_concurrent_miss() {
    let slow = config_text(&[(
        "load = \"SELECT id, name, email, country, balance_cents, created_at FROM users WHERE id = $1\"",
        &format!("load = \"{SLOW_LOAD}\""),
    )]);
    let (server, path) = start_from_file(&slow).await;
    let misses = |first: u64| {
        let (client, base) = (server.client.clone(), server.base.clone());
        async move {
            let requests = (first..first + 4).map(|key| {
                let (client, base) = (client.clone(), base.clone());
                async move {
                    let response = client
                        .get(format!("{base}/v1/r/users/{key}"))
                        .send()
                        .await
                        .expect("request");
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    (status, body["code"].as_str().unwrap_or("").to_owned())
                }
            });
            futures_util::future::join_all(requests).await
        }
    };
    let before = misses(1).await;
    assert!(before.iter().all(|(s, _)| *s == 200), "{before:?}");

    std::fs::write(
        &path,
        slow.replacen(
            "max_concurrent = 8\nmax_queued = 256",
            "max_concurrent = 1\nmax_queued = 0",
            1,
        ),
    )
    .expect("write");
    let (status, body) = reload(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], json!(["resource.users.bulkhead"]));
    let after = misses(100).await;
    let busy = after
        .iter()
        .filter(|(s, code)| *s == 503 && code == "source_busy")
        .count();
    let ok = after.iter().filter(|(s, _)| *s == 200).count();
    assert!(busy >= 1 && ok >= 1, "one slot, no queue: {after:?}");
}

#[tokio::test]
async fn the_shed_limit_reloads_live() {
    let (server, path) = start_from_file(&config_text(&[])).await;
    std::fs::write(
        &path,
        config_text(&[(
            "max_concurrent_requests = 1024",
            "max_concurrent_requests = 1",
        )]),
    )
    .expect("write");
    let (status, body) = reload(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], json!(["server.max_concurrent_requests"]));
    let slow = {
        let (client, url) = (server.client.clone(), server.url("/v1/test/slow?ms=1500"));
        tokio::spawn(async move { client.get(url).send().await.expect("slow").status() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = server.get("/healthz").await;
    assert_eq!(shed.status(), 503, "one request in flight is the limit");
    assert_eq!(slow.await.expect("task"), 200);
    assert_eq!(server.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn the_settings_namespace_applies_valid_versions_and_refuses_invalid_ones() {
    let text = config_text(&[]) + "\n[reload]\nnamespace = \"rampart-guards\"\n";
    let (server, _path) = start_from_file(&text).await;
    let bulkhead_max = "rampart_bulkhead{resource=\"users\",state=\"max\"}";
    let put = |content: Value, precondition: (&'static str, String)| {
        let request = server
            .client
            .put(server.url("/v1/config/rampart-guards"))
            .bearer_auth(server.admin_token())
            .header(precondition.0, precondition.1)
            .json(&json!({
                "content": content,
                "change": { "author": "ops", "reason": "test", "rollback_plan": "roll back" }
            }));
        async move { request.send().await.expect("put").status().as_u16() }
    };
    let until = |series: &'static str, want: f64| {
        let server = &server;
        async move {
            for _ in 0..100 {
                if server.metric(series).await == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{series} never became {want}");
        }
    };
    let status = put(
        json!({ "resource": { "users": { "bulkhead": { "max_concurrent": 2 } } } }),
        ("If-None-Match", "*".into()),
    )
    .await;
    assert_eq!(status, 201);
    until(bulkhead_max, 2.0).await;
    until("rampart_settings_version{source=\"namespace\"}", 2.0).await;
    assert_eq!(
        server.metric("rampart_settings_namespace_version").await,
        1.0
    );

    // Invalid live settings: refused, the running ones stay.
    let status = put(
        json!({ "resource": { "users": { "bulkhead": { "max_concurrent": 0 } } } }),
        ("If-Match", "\"1\"".into()),
    )
    .await;
    assert_eq!(status, 200);
    until("rampart_config_reload_total{result=\"refused\"}", 1.0).await;
    assert_eq!(server.metric(bulkhead_max).await, 2.0);
    // A resource that is not served: refused too.
    let status = put(
        json!({ "resource": { "orders": { "bulkhead": { "max_concurrent": 4 } } } }),
        ("If-Match", "\"2\"".into()),
    )
    .await;
    assert_eq!(status, 200);
    until("rampart_config_reload_total{result=\"refused\"}", 2.0).await;

    // A file reload keeps the namespace's settings over the file's.
    let (status, body) = reload(&server).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.metric(bulkhead_max).await, 2.0);
}

/// SIGHUP through the real binary re-reads its file.
#[tokio::test]
async fn sighup_reloads_the_file_of_a_running_rampart_serve() {
    let text = config_text(&[
        ("[warmup]\nenabled = true", "[warmup]\nenabled = false"),
        ("demo_rows = 1000000", "demo_rows = 2000"),
    ]);
    let instance = common::process::spawn_with(&text, &[]).await;
    let client = reqwest::Client::new();
    let bulkhead_max = "rampart_bulkhead{resource=\"users\",state=\"max\"}";
    assert_eq!(instance.metric(&client, bulkhead_max).await, 8.0);
    std::fs::write(
        common::process::config_path(&instance),
        text.replacen("max_concurrent = 8", "max_concurrent = 3", 1),
    )
    .expect("write");
    let pid = instance.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    for _ in 0..100 {
        if instance.metric(&client, bulkhead_max).await == 3.0 {
            assert_eq!(
                instance
                    .metric(&client, "rampart_settings_version{source=\"file\"}")
                    .await,
                2.0
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("SIGHUP did not reload the bulkhead");
}
