//! `rampart-client` against a real server on port 0: typed watching,
//! refusal of bad versions, the last-known-good file, failover across
//! server URLs, canary by client id.

use std::time::Duration;

use rampart_client::{Change, Client, ConfigWatcher, Precondition};
use rampart_server::{Config, Server};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize, PartialEq)]
struct Limits {
    limit: u32,
}

struct Running {
    server: Server,
    base: String,
    token: String,
    _dir: tempfile::TempDir,
}

async fn serve() -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::embedded().expect("embedded");
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.data_dir = dir.path().to_path_buf();
    config.demo_rows = 0;
    config.warmup.enabled = false;
    let server = Server::start(config).await.expect("server starts");
    let token = std::fs::read_to_string(dir.path().join(rampart_server::http::auth::TOKEN_FILE))
        .expect("admin token")
        .trim()
        .to_owned();
    Running {
        base: format!("http://{}", server.addr),
        server,
        token,
        _dir: dir,
    }
}

/// A URL nothing listens on.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    format!("http://127.0.0.1:{port}")
}

fn change(reason: &str) -> Change {
    Change {
        author: "test".into(),
        reason: reason.into(),
        rollback_plan: "put the previous version back".into(),
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} never held");
}

/// An admin client over `urls` that has created `limits` at `limit`.
async fn created(running: &Running, urls: Vec<String>, limit: u32) -> Client {
    let admin = Client::builder(urls)
        .token(running.token.clone())
        .build()
        .expect("client");
    admin
        .put(
            "limits",
            &json!({ "limit": limit }),
            &change("first"),
            Precondition::Create,
        )
        .await
        .expect("create");
    admin
}

fn validated(client: Client) -> rampart_client::WatcherBuilder<Limits> {
    ConfigWatcher::<Limits>::builder(client, "limits")
        .wait(Duration::from_secs(5))
        .validate(|l: &Limits| {
            if l.limit > 0 {
                Ok(())
            } else {
                Err("limit must be above 0".into())
            }
        })
}

#[tokio::test]
async fn the_watcher_follows_good_versions_refuses_bad_ones_and_keeps_the_last_good_on_disk() {
    let running = serve().await;
    let admin = created(&running, vec![running.base.clone()], 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("limits.json");
    let client = Client::builder([running.base.clone()])
        .build()
        .expect("client");
    let mut watcher = validated(client)
        .last_known_good(&file)
        .start()
        .await
        .expect("watcher");
    assert_eq!(*watcher.get(), Limits { limit: 5 });
    assert_eq!(watcher.version(), 1);

    admin
        .put(
            "limits",
            &json!({ "limit": 7 }),
            &change("more"),
            Precondition::Version(1),
        )
        .await
        .expect("v2");
    assert_eq!(*watcher.changed().await, Limits { limit: 7 });
    assert_eq!(watcher.version(), 2);

    // Fails the validator, then does not deserialize: both refused, 7 stays.
    admin
        .put(
            "limits",
            &json!({ "limit": 0 }),
            &change("zero"),
            Precondition::Version(2),
        )
        .await
        .expect("v3");
    eventually("v3 refused", || watcher.status().refused == 1).await;
    admin
        .put(
            "limits",
            &json!({ "limit": "many" }),
            &change("text"),
            Precondition::Version(3),
        )
        .await
        .expect("v4");
    eventually("v4 refused", || watcher.status().refused == 2).await;
    assert_eq!(*watcher.get(), Limits { limit: 7 });
    assert_eq!(watcher.version(), 2, "the cursor did not move");
    let status = watcher.status();
    assert!(
        status
            .last_refusal
            .as_deref()
            .is_some_and(|r| r.contains("version 4")),
        "{status:?}"
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("file")).expect("JSON");
    assert_eq!(saved["version"], 2, "only good versions are saved");

    admin
        .put(
            "limits",
            &json!({ "limit": 9 }),
            &change("fixed"),
            Precondition::Version(4),
        )
        .await
        .expect("v5");
    assert_eq!(*watcher.changed().await, Limits { limit: 9 });
    assert_eq!(watcher.version(), 5);
    eventually("v5 saved", || {
        std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["version"] == 5)
    })
    .await;
    let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
    assert_eq!(leftovers, 1, "no temporary files left behind");

    // The center goes away: a new service starts from the file.
    running.server.shutdown().await.expect("shutdown");
    let offline = Client::builder([dead_url()]).build().expect("client");
    let restarted = validated(offline)
        .last_known_good(&file)
        .start()
        .await
        .expect("starts from the file");
    assert_eq!(*restarted.get(), Limits { limit: 9 });
    assert!(restarted.status().from_file);
    // Without a file, no server: an error, not a default.
    let offline = Client::builder([dead_url()]).build().expect("client");
    assert!(validated(offline).start().await.is_err());
}

#[tokio::test]
async fn calls_fail_over_to_the_next_server_and_canaries_follow_the_client_id() {
    let running = serve().await;
    // Created through the second URL: the first is dead.
    let admin = created(&running, vec![dead_url(), running.base.clone()], 1).await;
    // A 4xx is an answer, not an outage: returned at once.
    let conflict = admin
        .put(
            "limits",
            &json!({ "limit": 2 }),
            &change("stale"),
            Precondition::Version(7),
        )
        .await
        .expect_err("412");
    assert_eq!(conflict.status(), Some(412));

    let canary_client = Client::builder([dead_url(), running.base.clone()])
        .client_id("svc-a")
        .build()
        .expect("client");
    let mut in_canary = validated(canary_client).start().await.expect("watcher");
    let stable_client = Client::builder([running.base.clone()])
        .client_id("svc-b")
        .build()
        .expect("client");
    let stable = validated(stable_client).start().await.expect("watcher");
    admin
        .canary_start(
            "limits",
            &json!({ "limit": 50 }),
            &change("try 50"),
            &["svc-a".to_owned()],
            0,
            1,
        )
        .await
        .expect("canary");
    assert_eq!(*in_canary.changed().await, Limits { limit: 50 });
    assert_eq!(*stable.get(), Limits { limit: 1 });
    admin.canary_abort("limits").await.expect("abort");
    assert_eq!(*in_canary.changed().await, Limits { limit: 1 });

    let history = admin.history("limits", None, 10).await.expect("history");
    assert!(history["versions"]
        .as_array()
        .is_some_and(|v| !v.is_empty()));
    let diff = admin.diff("limits", 1, 1).await.expect("diff");
    assert_eq!(diff, json!([]));
}
