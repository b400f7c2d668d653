//! Shared by the end-to-end tests: a real server on port 0 over a private
//! SQLite file (or a private PostgreSQL schema), and a real HTTP client.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use rampart_server::{Config, Server};

/// Demo users in each test's database (products: a hundredth).
pub const ROWS: u64 = 2_000;

pub struct TestServer {
    pub server: Server,
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl TestServer {
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
        resource.jitter = 0.0;
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
