//! `rampart config …` (the real binary) against a server on port 0: put,
//! get, history, diff, rollback, canary start/promote, watch; errors with
//! the server's code and exit status 1.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::TestServer;

/// `rampart config ARGS` with the server's URL and admin token.
fn config(server: &TestServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("config")
        .args(["--server", &server.base])
        .args(args)
        .env("RAMPART_ADMIN_TOKEN", server.admin_token())
        .env("RAMPART_LOG", "error")
        .output()
        .expect("run rampart config")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

const CHANGE: &[&str] = &[
    "--author",
    "ops",
    "--reason",
    "test",
    "--rollback-plan",
    "roll back",
];

fn with_change<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend_from_slice(CHANGE);
    all
}

// Multi-threaded: the CLI runs as a blocking child process from the test
// body while the server answers it on the runtime's workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_cli_drives_the_config_center() {
    let server = common::start(|_| {}).await;
    let created = json_of(&config(
        &server,
        &with_change(&["put", "app", "--create", "--content", r#"{"n": 1}"#]),
    ));
    assert_eq!(created["version"], 1, "{created}");
    // Without --if-match: on top of the version read just before.
    let second = json_of(&config(
        &server,
        &with_change(&["put", "app", "--content", r#"{"n": 2}"#]),
    ));
    assert_eq!(second["version"], 2, "{second}");
    let got = json_of(&config(&server, &["get", "app"]));
    assert_eq!(
        (got["version"].as_u64(), &got["content"]["n"]),
        (Some(2), &Value::from(2))
    );
    let history = json_of(&config(&server, &["history", "app"]));
    assert_eq!(history["versions"].as_array().map(Vec::len), Some(2));
    let diff = json_of(&config(
        &server,
        &["diff", "app", "--from", "1", "--to", "2"],
    ));
    assert_eq!(diff[0]["op"], "replace", "{diff}");
    let rolled = json_of(&config(
        &server,
        &with_change(&["rollback", "app", "--to", "1"]),
    ));
    assert_eq!(rolled["version"], 3, "{rolled}");
    let one = json_of(&config(&server, &["get", "app", "--version", "3"]));
    assert_eq!(one["content"]["n"], 1);

    // A stale --if-match: the server's code, exit status 1.
    let stale = config(
        &server,
        &with_change(&["put", "app", "--if-match", "1", "--content", "{}"]),
    );
    assert!(!stale.status.success());
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(
        stderr.contains("412") && stderr.contains("version_mismatch"),
        "{stderr}"
    );

    // Canary for one client id, seen by it alone, then promoted.
    json_of(&config(
        &server,
        &with_change(&[
            "canary",
            "start",
            "app",
            "--clients",
            "web-1",
            "--content",
            r#"{"n": 9}"#,
        ]),
    ));
    let canary = json_of(&config(&server, &["--client", "web-1", "get", "app"]));
    assert_eq!(
        (canary["canary"].as_bool(), &canary["content"]["n"]),
        (Some(true), &Value::from(9))
    );
    let other = json_of(&config(&server, &["--client", "web-2", "get", "app"]));
    assert_eq!(other["content"]["n"], 1);
    json_of(&config(&server, &["canary", "promote", "app"]));
    let promoted = json_of(&config(&server, &["get", "app"]));
    assert_eq!(
        (promoted["canary"].as_bool(), &promoted["content"]["n"]),
        (Some(false), &Value::from(9))
    );

    // watch: the current version, then the next one.
    let watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "config",
            "--server",
            &server.base,
            "watch",
            "app",
            "--changes",
            "1",
        ])
        .env("RAMPART_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("watch");
    tokio::time::sleep(Duration::from_millis(500)).await;
    json_of(&config(
        &server,
        &with_change(&["put", "app", "--content", r#"{"n": 10}"#]),
    ));
    let out = tokio::time::timeout(Duration::from_secs(20), watch.wait_with_output())
        .await
        .expect("watch ends after one change")
        .expect("watch output");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let contents: Vec<&Value> = lines.iter().map(|l| &l["content"]["n"]).collect();
    assert_eq!(contents, [&Value::from(9), &Value::from(10)], "{lines:?}");
}
