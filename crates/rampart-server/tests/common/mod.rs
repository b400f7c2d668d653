//! Shared by the end-to-end tests: a real server on port 0 over a private
//! SQLite file (or a private PostgreSQL schema), and a real HTTP client.
#![allow(dead_code)]

pub mod private_pg;
pub mod process;
pub mod stock;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rampart_server::{Config, Server};
use sqlx::AnyPool;

/// Demo users in each test's database (products: a hundredth).
pub const ROWS: u64 = 2_000;

pub struct TestServer {
    pub server: Server,
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

/// Reads of users `1..=keys`, in a loop, until [`stop`](Self::stop).
pub struct BackgroundReads {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl BackgroundReads {
    /// Stops the reads and waits for the last one.
    pub async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("background reads");
    }
}

impl TestServer {
    /// Keeps the server busy with cache reads of users `1..=keys` (one at
    /// a time) until the returned handle is stopped.
    pub fn background_reads(&self, keys: u64) -> BackgroundReads {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (client, base, flag) = (self.client.clone(), self.base.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut key = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                key = key % keys + 1;
                let _ = client.get(format!("{base}/v1/r/users/{key}")).send().await;
            }
        });
        BackgroundReads { stop, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// The admin token the server generated into its data directory.
    pub fn admin_token(&self) -> String {
        let path = self
            .server
            .state
            .config
            .data_dir
            .join(rampart_server::http::auth::TOKEN_FILE);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// A POST to a write endpoint, with the admin token.
    pub async fn admin_post(&self, path: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(self.admin_token())
            .send()
            .await
            .expect("request")
    }

    /// A counter or gauge from `/metrics`, by its full series text.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.expect("metrics");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }
}

/// The embedded config with `extra` TOML appended to the top level and the
/// `[[resource]]` tables of the example replaced by the example's own, so
/// tests tweak only what they test.
pub fn config(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::embedded().expect("embedded config");
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.data_dir = dir.to_path_buf();
    config.demo_rows = ROWS;
    config.warmup.enabled = false;
    for resource in &mut config.resources {
        resource.cache.jitter = 0.0;
        resource.warm = resource.warm.as_ref().map(|_| match resource.key_type {
            rampart_server::config::KeyType::Integer => "SELECT id FROM users ORDER BY id".into(),
            rampart_server::config::KeyType::String => {
                "SELECT sku FROM products ORDER BY sku".into()
            }
        });
        resource.warm_count = resource
            .warm_count
            .as_ref()
            .map(|_| match resource.key_type {
                rampart_server::config::KeyType::Integer => "SELECT COUNT(*) FROM users".into(),
                rampart_server::config::KeyType::String => "SELECT COUNT(*) FROM products".into(),
            });
    }
    tweak(&mut config);
    config.validate().expect("test config is valid");
    config
}

pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), tweak);
    start_with(config, dir).await
}

pub async fn start_with(config: Config, dir: tempfile::TempDir) -> TestServer {
    let server = Server::start(config).await.expect("server starts");
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    TestServer {
        server,
        base,
        client,
        dir,
    }
}

/// The `x-cache` header of a response.
pub fn x_cache(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// PostgreSQL on 127.0.0.1:5432, database `test` (`RAMPART_TEST_PG_URL`).
pub fn pg_base_url() -> String {
    std::env::var("RAMPART_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A private schema, and a URL whose connections use it.
pub struct Schema {
    pub name: String,
    pub admin: AnyPool,
}

impl Schema {
    pub async fn create(tag: &str) -> Schema {
        sqlx::any::install_default_drivers();
        let admin = AnyPool::connect(&pg_base_url())
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (see scripts/test.sh)");
        let name = format!("rampart_{tag}_{}", std::process::id());
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .execute(&admin)
            .await
            .expect("drop");
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&admin)
            .await
            .expect("create schema");
        Schema { name, admin }
    }

    pub fn url(&self) -> String {
        format!(
            "{}?application_name={}&options=-c%20search_path%3D{}",
            pg_base_url(),
            self.name,
            self.name
        )
    }

    pub async fn drop(self) {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .execute(&self.admin)
            .await;
    }
}

/// Runs `rampart demo-data` on `url` (the real binary) and returns its stdout.
pub fn demo_data(url: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "demo-data",
            "--database-url",
            url,
            "--rows",
            &ROWS.to_string(),
        ])
        .env("RAMPART_LOG", "error")
        .output()
        .expect("run rampart demo-data");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
