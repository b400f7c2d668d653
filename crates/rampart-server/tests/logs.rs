//! The log output of the real binary: JSON lines on `--log-format json`,
//! no colour codes when stderr is not a terminal, one access line per
//! request (when its target is on) carrying the request id the client sent
//! or the one the server made, and none with the default filter. The
//! panic hook's lines follow the format too.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// `rampart serve` on port 0 over a small embedded demo set, stderr to a
/// file; killed on drop.
struct Served {
    child: Child,
    base: String,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(args: &[&str], log_filter: Option<&str>) -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr = dir.path().join("stderr");
        let mut command = Command::new(env!("CARGO_BIN_EXE_rampart"));
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--demo-rows", "200"])
            .args(["--data-dir", &dir.path().display().to_string()])
            .args(args)
            .env_remove("RAMPART_LOG_FORMAT")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        match log_filter {
            Some(filter) => command.env("RAMPART_LOG", filter),
            None => command.env_remove("RAMPART_LOG"),
        };
        let mut child = command.spawn().expect("spawn rampart serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut base = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("stdout line");
            if let Some(rest) = line.strip_prefix("rampart serving on ") {
                base = rest.split_whitespace().next().map(str::to_owned);
                break;
            }
        }
        let Some(base) = base else {
            let _ = child.kill();
            panic!(
                "rampart serve did not start: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        Served {
            child,
            base,
            stderr,
            _dir: dir,
        }
    }

    /// Stops the process and returns what it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.stderr).expect("read stderr")
    }
}

async fn get(client: &reqwest::Client, url: String, request_id: Option<&str>) -> reqwest::Response {
    let mut request = client.get(url);
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    request.send().await.expect("request")
}

#[tokio::test]
async fn json_lines_carry_one_access_line_per_request_with_its_request_id() {
    let served = Served::start(
        &["--log-format", "json"],
        Some("info,sqlx::query=error,rampart::access=info"),
    );
    let client = reqwest::Client::new();
    let sent = get(
        &client,
        format!("{}/v1/r/users/7", served.base),
        Some("client-chosen-id-42"),
    )
    .await;
    assert_eq!(sent.status(), 200);
    assert_eq!(sent.headers()["x-request-id"], "client-chosen-id-42");
    let made = get(&client, format!("{}/v1/r/users/8", served.base), None).await;
    let made_id = made.headers()["x-request-id"]
        .to_str()
        .expect("ascii id")
        .to_owned();
    let other = get(&client, format!("{}/healthz", served.base), None).await;
    let other_id = other.headers()["x-request-id"]
        .to_str()
        .expect("ascii id")
        .to_owned();
    assert_ne!(made_id, other_id, "generated ids differ");
    // A contained panic: the panic hook writes its own line, in JSON too.
    let panicked = get(&client, format!("{}/v1/test/panic", served.base), None).await;
    assert_eq!(panicked.status(), 500);
    // The access line is written when the answer is made; give the
    // process a moment to flush it before it is killed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = served.stop();
    assert!(!log.contains('\u{1b}'), "no escape codes in a file: {log}");
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["target"] != "rampart::access"),
        "the service's own lines are JSON too: {log}"
    );
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "rampart::access")
        .collect();
    assert_eq!(access.len(), 4, "one line per request: {log}");
    assert!(
        lines
            .iter()
            .any(|l| l["target"] == "rampart::panic" && l["level"] == "ERROR"),
        "the panic hook's line is JSON: {log}"
    );
    let by_id = |id: &str| {
        access
            .iter()
            .find(|l| l["fields"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line for {id}: {log}"))
    };
    let first = by_id("client-chosen-id-42");
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["fields"]["method"], "GET");
    assert_eq!(first["fields"]["uri"], "/v1/r/users/7");
    assert_eq!(first["fields"]["status"], 200);
    assert!(first["fields"]["micros"].as_u64().is_some(), "{first}");
    assert_eq!(by_id(&made_id)["fields"]["uri"], "/v1/r/users/8");
    assert_eq!(by_id(&other_id)["fields"]["uri"], "/healthz");
}

#[tokio::test]
async fn text_logs_to_a_file_have_no_colour_and_the_default_filter_has_no_access_lines() {
    let served = Served::start(&[], None);
    let client = reqwest::Client::new();
    for key in 1..=5 {
        let r = get(&client, format!("{}/v1/r/users/{key}", served.base), None).await;
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = served.stop();
    assert!(!log.is_empty(), "the service logs at info by default");
    assert!(!log.contains('\u{1b}'), "no escape codes in a file: {log}");
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "text, not JSON: {log}"
    );
    assert!(!log.contains("rampart::access"), "{log}");
}

#[test]
fn an_unknown_log_format_is_refused_naming_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["serve", "--log-format", "xml"])
        .output()
        .expect("run rampart");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--log-format"), "{stderr}");
    assert!(stderr.contains("json"), "names the choices: {stderr}");
}
