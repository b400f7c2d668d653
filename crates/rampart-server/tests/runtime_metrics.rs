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
