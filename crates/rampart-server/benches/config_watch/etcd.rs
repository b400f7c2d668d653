//! etcd side by side with rampart in the same run: a private etcd (its own
//! temporary directory, free loopback ports, killed on drop), N watchers
//! on one key through its v3 JSON gateway (`POST /v3/watch`, a streamed
//! answer of one JSON message a line), one put, the time from sending the
//! put to each watcher's event. The watchers use the same client stack as
//! rampart's (reqwest, a client and so a connection each).
//!
//! No etcd binary (`ETCD_BIN`, else `etcd` on the PATH; Debian's package
//! is `etcd-server`) is a skip with a line saying so, never a failure.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

/// A private etcd, killed on drop.
pub struct Etcd {
    child: Child,
    pub base: String,
    dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

impl Etcd {
    /// Starts etcd and waits for `/health`; `Err` says why it is skipped.
    pub async fn start(client: &reqwest::Client) -> Result<Etcd, String> {
        let binary = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let (client_port, peer_port) = (free_port(), free_port());
        let base = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))
            .map_err(|e| format!("etcd log: {e}"))?;
        let child = Command::new(&binary)
            .args(["--name", "bench"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &base])
            .args(["--advertise-client-urls", &base])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!("no etcd binary {binary:?} ({e}); `apt-get install etcd-server` or set ETCD_BIN")
            })?;
        let etcd = Etcd { child, base, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let healthy = match client.get(format!("{}/health", etcd.base)).send().await {
                Ok(r) => r.json::<Value>().await.ok().map(|v| v["health"] == "true"),
                Err(_) => None,
            };
            if healthy == Some(true) {
                return Ok(etcd);
            }
            if Instant::now() >= deadline {
                let log =
                    std::fs::read_to_string(etcd.dir.path().join("etcd.log")).unwrap_or_default();
                return Err(format!("etcd did not become healthy in 30 s: {log}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn put(&self, client: &reqwest::Client, key: &str, value: &str) {
        let response = client
            .post(format!("{}/v3/kv/put", self.base))
            .json(&json!({ "key": B64.encode(key), "value": B64.encode(value) }))
            .send()
            .await
            .expect("etcd put");
        assert!(
            response.status().is_success(),
            "etcd put: {}",
            response.status()
        );
    }
}

/// Reads a streamed watch answer line by line until `done` accepts a
/// message; `None` if the stream ends first.
async fn next_message(
    response: &mut reqwest::Response,
    buffer: &mut Vec<u8>,
    done: impl Fn(&Value) -> bool,
) -> Option<Value> {
    loop {
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            if let Ok(message) = serde_json::from_slice::<Value>(&line) {
                if done(&message) {
                    return Some(message);
                }
            }
        }
        match response.chunk().await {
            Ok(Some(chunk)) => buffer.extend_from_slice(&chunk),
            _ => return None,
        }
    }
}

/// One watcher: opens the watch, says when etcd confirmed it, then waits
/// for the event carrying `expected`; the instant it arrived.
async fn watcher(
    url: String,
    key: String,
    expected: String,
    created: tokio::sync::mpsc::Sender<()>,
) -> Instant {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut response = client
        .post(url)
        .json(&json!({ "create_request": { "key": B64.encode(&key) } }))
        .send()
        .await
        .expect("etcd watch");
    let mut buffer = Vec::new();
    next_message(&mut response, &mut buffer, |m| {
        m["result"]["created"] == true
    })
    .await
    .expect("etcd watch created");
    let _ = created.send(()).await;
    let event = next_message(&mut response, &mut buffer, |m| {
        m["result"]["events"].is_array()
    })
    .await
    .expect("etcd watch event");
    let at = Instant::now();
    let value = event["result"]["events"][0]["kv"]["value"]
        .as_str()
        .and_then(|v| B64.decode(v).ok());
    assert_eq!(
        value.as_deref(),
        Some(expected.as_bytes()),
        "an etcd watcher got another value"
    );
    at
}

/// Rounds of put → `watchers` etcd watchers answered; the latencies.
pub async fn propagation(etcd: &Etcd, watchers: usize, rounds: usize) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let key = "bench";
    let mut latencies = Vec::with_capacity(watchers * rounds);
    for round in 1..=rounds {
        let expected = format!("round-{round}");
        let (created, mut confirmed) = tokio::sync::mpsc::channel(watchers);
        let parked: Vec<_> = (0..watchers)
            .map(|_| {
                tokio::spawn(watcher(
                    format!("{}/v3/watch", etcd.base),
                    key.to_owned(),
                    expected.clone(),
                    created.clone(),
                ))
            })
            .collect();
        drop(created);
        for _ in 0..watchers {
            confirmed.recv().await.expect("every etcd watch created");
        }
        // The same settling pause rampart's watchers get.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let sent = Instant::now();
        etcd.put(&client, key, &expected).await;
        for task in parked {
            let at = task.await.expect("etcd watcher");
            latencies.push(at.saturating_duration_since(sent));
        }
    }
    latencies.sort();
    latencies
}
