//! The config center's propagation, measured end to end against the real
//! binary: one PUT, N watchers parked on long-polls (each on its own
//! connection) answered — time from sending the PUT to each watcher's
//! answer, p50/p99/max over the rounds; on one instance (SQLite), and
//! across two (PostgreSQL, the PUT on A, the watchers on B, told by
//! LISTEN/NOTIFY). Side by side in the same run, a private etcd with the
//! same number of watchers on one key through the same client stack
//! (`config_watch/etcd.rs`; skipped with a line saying so where etcd is not
//! installed), and the ratio of its p99 to rampart's one-instance p99.
//! Then the memory a parked watcher costs: the server's RSS before and
//! with `CONFIG_WATCH_PARKED` long-polls held.
//!
//! `cargo bench -p rampart-server --bench config_watch`
//!
//! Knobs (environment): `CONFIG_WATCH_WATCHERS` (1000), `CONFIG_WATCH_ROUNDS`
//! (10), `CONFIG_WATCH_PARKED` (10000), `RAMPART_TEST_PG_URL` (PostgreSQL
//! on 127.0.0.1:5432, database `test`; the two-instance run is skipped if
//! it cannot connect). Everything is on loopback and ends on its own.

#[path = "config_watch/etcd.rs"]
mod etcd;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const TOKEN: &str = "config-watch-bench-token";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `rampart serve` as a child process, killed on drop.
struct Instance {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    async fn start(client: &reqwest::Client, database_url: Option<&str>) -> Instance {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = rampart_server::config::DEFAULT_CONFIG
            .replacen("max_connections = 10000", "max_connections = 30000", 1)
            .replacen("[warmup]\nenabled = true", "[warmup]\nenabled = false", 1);
        let path = dir.path().join("rampart.toml");
        std::fs::write(&path, config).expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let mut command = Command::new(env!("CARGO_BIN_EXE_rampart"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--data-dir", &dir.path().display().to_string()])
            .args(["--demo-rows", "1000"])
            .env("RAMPART_ADMIN_TOKEN", TOKEN)
            .env("RAMPART_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let child = command.spawn().expect("spawn rampart");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "rampart did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Instance {
            child,
            base,
            _dir: dir,
        }
    }

    /// VmRSS in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

/// Writes version `from + 1` of `ns` (or creates it when `from` is 0).
async fn put(client: &reqwest::Client, base: &str, ns: &str, from: u64) {
    let request = client
        .put(format!("{base}/v1/config/{ns}"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "content": { "round": from + 1, "pad": "x".repeat(512) },
            "change": { "author": "bench", "reason": "bench", "rollback_plan": "none" }
        }));
    let request = if from == 0 {
        request.header("if-none-match", "*")
    } else {
        request.header("if-match", format!("\"{from}\""))
    };
    let response = request.send().await.expect("put");
    assert!(response.status().is_success(), "put: {}", response.status());
}

/// Parks `watchers` long-polls at version `after` on `bases` (round
/// robin), each on its own connection; returns their tasks, which end
/// with the instant their answer arrived.
fn park(
    bases: &[String],
    ns: &str,
    after: u64,
    watchers: usize,
) -> Vec<tokio::task::JoinHandle<(Instant, u16, u64)>> {
    (0..watchers)
        .map(|i| {
            let url = format!(
                "{}/v1/config/{ns}?after={after}&wait=50s",
                bases[i % bases.len()]
            );
            tokio::spawn(async move {
                // A client per watcher: its own connection, as separate
                // services would have.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .expect("client");
                let response = client.get(url).send().await.expect("long-poll");
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (
                    Instant::now(),
                    status,
                    body["version"].as_u64().unwrap_or(0),
                )
            })
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1_000.0)
}

/// One line of p50, p99 and max.
fn summary(label: &str, what: &str, rounds: usize, sorted: &[Duration]) {
    println!(
        "{label}: {what}, {rounds} rounds: p50 {} p99 {} max {}",
        ms(percentile(sorted, 50.0)),
        ms(percentile(sorted, 99.0)),
        ms(sorted.last().copied().unwrap_or_default()),
    );
}

/// Rounds of PUT on `writer` → `watchers` answered on `watch_bases`; the
/// latencies, sorted.
async fn propagation(
    label: &str,
    writer: &str,
    watch_bases: &[String],
    watchers: usize,
    rounds: usize,
) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let ns = "bench";
    put(&client, writer, ns, 0).await;
    // Every watching instance has the namespace before the rounds start.
    for base in watch_bases {
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .get(format!("{base}/v1/config/{ns}"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
            != 200
        {
            assert!(Instant::now() < deadline, "{base} never saw the namespace");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut latencies = Vec::with_capacity(watchers * rounds);
    for round in 1..=rounds as u64 {
        let parked = park(watch_bases, ns, round, watchers);
        // Let every long-poll reach the server and park.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let sent = Instant::now();
        put(&client, writer, ns, round).await;
        for task in parked {
            let (at, status, version) = task.await.expect("watcher");
            assert_eq!(
                (status, version),
                (200, round + 1),
                "a watcher got another answer"
            );
            latencies.push(at.saturating_duration_since(sent));
        }
    }
    latencies.sort();
    summary(
        label,
        &format!("PUT -> {watchers} watchers answered"),
        rounds,
        &latencies,
    );
    latencies
}

/// etcd's figures for the same load, and the ratio of its p99 to `ours`.
async fn etcd_side_by_side(ours: &[Duration], watchers: usize, rounds: usize) {
    let client = reqwest::Client::new();
    let etcd = match etcd::Etcd::start(&client).await {
        Ok(etcd) => etcd,
        Err(why) => {
            println!("etcd: skipped, {why}");
            return;
        }
    };
    let theirs = etcd::propagation(&etcd, watchers, rounds).await;
    summary(
        "etcd (private, v3 JSON gateway)",
        &format!("put -> {watchers} watchers answered"),
        rounds,
        &theirs,
    );
    let (p99_ours, p99_theirs) = (percentile(ours, 99.0), percentile(&theirs, 99.0));
    println!(
        "etcd p99 / rampart one-instance p99 = {:.2} (the goal: 2 or more)",
        p99_theirs.as_secs_f64() / p99_ours.as_secs_f64().max(1e-9)
    );
}

/// RSS growth per parked long-poll on one instance.
async fn memory(parked: usize) {
    let client = reqwest::Client::new();
    let instance = Instance::start(&client, None).await;
    put(&client, &instance.base, "mem", 0).await;
    // Warm the server's allocator and runtime with a small round first.
    let warm = park(std::slice::from_ref(&instance.base), "mem", 1, 100);
    tokio::time::sleep(Duration::from_secs(1)).await;
    put(&client, &instance.base, "mem", 1).await;
    for task in warm {
        task.await.expect("warm-up watcher");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = instance.rss();
    let held = park(std::slice::from_ref(&instance.base), "mem", 2, parked);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = instance.rss();
    let per = during.saturating_sub(before) as f64 / parked as f64;
    println!(
        "memory: RSS {:.1} MiB idle, {:.1} MiB with {parked} parked long-polls: {:.0} bytes per parked watcher (connection, request, subscription)",
        before as f64 / 1_048_576.0,
        during as f64 / 1_048_576.0,
        per
    );
    put(&client, &instance.base, "mem", 2).await;
    let mut answered = 0;
    for task in held {
        if task.await.map(|(_, s, _)| s == 200).unwrap_or(false) {
            answered += 1;
        }
    }
    println!("memory: {answered} of {parked} parked watchers answered by one PUT");
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let watchers = env_or("CONFIG_WATCH_WATCHERS", 1_000);
    let rounds = env_or("CONFIG_WATCH_ROUNDS", 10);
    let parked = env_or("CONFIG_WATCH_PARKED", 10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        {
            let one = Instance::start(&client, None).await;
            let bases = [one.base.clone()];
            let ours =
                propagation("one instance (SQLite)", &one.base, &bases, watchers, rounds).await;
            drop(one);
            etcd_side_by_side(&ours, watchers, rounds).await;
        }
        let pg = std::env::var("RAMPART_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        sqlx::any::install_default_drivers();
        match sqlx::AnyPool::connect(&pg).await {
            Ok(admin) => {
                let schema = format!("rampart_config_watch_bench_{}", std::process::id());
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&admin)
                    .await
                    .expect("schema");
                let url = format!("{pg}?options=-c%20search_path%3D{schema}");
                {
                    let a = Instance::start(&client, Some(&url)).await;
                    let b = Instance::start(&client, Some(&url)).await;
                    let bases = [b.base.clone()];
                    propagation(
                        "two instances (PostgreSQL, PUT on A, watchers on B)",
                        &a.base,
                        &bases,
                        watchers,
                        rounds,
                    )
                    .await;
                }
                let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&admin)
                    .await;
            }
            Err(err) => println!("two instances: skipped, no PostgreSQL at {pg}: {err}"),
        }
        memory(parked).await;
    });
}
