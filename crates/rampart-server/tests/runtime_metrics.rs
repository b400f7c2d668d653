//! `/metrics` carries the serving tokio runtime's own metrics: its worker
//! count, and busy time that grows while it serves.

mod common;

use common::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn metrics_show_the_runtime_workers_and_their_busy_time() {
    let t = start(|_| {}).await;
    assert_eq!(t.metric("rampart_tokio_workers").await, 3.0);
    assert!(t.metric("rampart_tokio_alive_tasks").await >= 1.0);
    let text = t.get("/metrics").await.text().await.expect("metrics");
    assert!(text.contains("rampart_tokio_global_queue_depth "), "{text}");
    let busy = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("rampart_tokio_worker_busy_seconds_total{worker="))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let parks = text
        .lines()
        .filter(|l| l.starts_with("rampart_tokio_worker_park_total{worker="))
        .count();
    assert_eq!(parks, 3, "one series per worker: {text}");
    let before = busy(&text);
    for key in 1..=300 {
        assert_eq!(t.get(&format!("/v1/r/users/{key}")).await.status(), 200);
    }
    let after = busy(&t.get("/metrics").await.text().await.expect("metrics"));
    assert!(
        after > before,
        "busy time grows while serving: {before} -> {after}"
    );
    t.server.shutdown().await.expect("shutdown");
}

/// The real binary counts its runtime's threads: a profile runs on a
/// blocking thread, and `rampart_tokio_blocking_threads` sees it. The lock
/// wait histograms are exported for every lock class.
#[tokio::test]
async fn the_binary_reports_blocking_threads_and_lock_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let token = "a-test-admin-token-of-some-length";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", &dir.path().display().to_string()])
        .args(["--demo-rows", "100"])
        .env("RAMPART_ADMIN_TOKEN", token)
        .env("RAMPART_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn rampart serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let metrics = || async {
        match client.get(format!("{base}/metrics")).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    let gauge = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics().await;
        if !text.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        gauge(&text, "rampart_tokio_blocking_threads").is_some(),
        "{text}"
    );
    for lock in ["flight", "generations", "breaker"] {
        assert!(
            text.contains(&format!(
                "rampart_lock_wait_seconds_count{{lock=\"{lock}\"}}"
            )),
            "{lock}: {text}"
        );
    }

    let profile = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            client
                .get(format!("{base}/debug/pprof/profile?seconds=2"))
                .bearer_auth(token)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let mut most = 0.0f64;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        most = most.max(gauge(&metrics().await, "rampart_tokio_blocking_threads").unwrap_or(0.0));
    }
    assert_eq!(profile.await.expect("profile task").ok(), Some(200));
    assert!(most >= 1.0, "the profiler's blocking thread was never seen");
    let _ = child.kill();
    let _ = child.wait();
}
