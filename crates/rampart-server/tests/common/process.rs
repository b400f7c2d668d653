//! `rampart serve` as a child process (the real binary), for tests that
//! run several instances or kill one.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The machine's Redis, unless `RAMPART_TEST_REDIS_URL` says otherwise.
pub fn redis_url() -> String {
    std::env::var("RAMPART_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// A `rampart serve` child process, SIGKILLed on drop.
pub struct Instance {
    pub child: Child,
    pub base: String,
    _config: tempfile::TempDir,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Instance {
    /// Kills the process at once (SIGKILL: no drain, no lease release).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A counter or gauge from this instance's `/metrics`, by its series.
    pub async fn metric(&self, client: &reqwest::Client, series: &str) -> f64 {
        let Ok(response) = client.get(format!("{}/metrics", self.base)).send().await else {
            return 0.0;
        };
        let text = response.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The embedded example config for an instance over PostgreSQL + Redis
/// sharing `namespace`, warm-up off.
pub fn shared_config(namespace: &str, leases: bool) -> String {
    rampart_server::config::DEFAULT_CONFIG
        .replacen(
            "namespace = \"default\"",
            &format!("namespace = \"{namespace}\""),
            1,
        )
        .replacen("leases = true", &format!("leases = {leases}"), 1)
        .replacen("[warmup]\nenabled = true", "[warmup]\nenabled = false", 1)
}

/// Starts `rampart serve` with `config` over `db` and the test Redis, and
/// waits until it answers `/healthz`.
pub async fn spawn(config: &str, db: &str) -> Instance {
    spawn_with(config, &["--database-url", db, "--redis-url", &redis_url()]).await
}

/// Where [`spawn_with`] writes an instance's config file.
pub fn config_path(instance: &Instance) -> std::path::PathBuf {
    instance._config.path().join("rampart.toml")
}

/// Starts `rampart serve` with `config` (written to [`config_path`]) and
/// `args`, its data directory beside the file, and waits until it answers
/// `/healthz`.
pub async fn spawn_with(config: &str, args: &[&str]) -> Instance {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rampart.toml");
    std::fs::write(&path, config).expect("write config");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", &dir.path().display().to_string()])
        .args(args)
        .env(
            "RAMPART_LOG",
            std::env::var("RAMPART_TEST_CHILD_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn rampart serve");
    let instance = Instance {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _config: dir,
    };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client
            .get(format!("{}/healthz", instance.base))
            .send()
            .await
        {
            if r.status() == 200 {
                return instance;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rampart serve on port {port} did not come up");
}
