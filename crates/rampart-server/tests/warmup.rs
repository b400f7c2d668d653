//! Start-up warm-up through the real server: readiness gating, progress in
//! metrics, and the warmed keys answered from L1.

mod common;

use std::time::{Duration, Instant};

use common::{start, x_cache, ROWS};

#[tokio::test]
async fn readyz_waits_for_the_warm_up_fraction_then_keys_are_hits() {
    let t = start(|c| {
        c.warmup.enabled = true;
        c.warmup.ready_fraction = 0.5;
        c.warmup.batch_size = 100;
        // Slow enough to observe "warming": 2,000 users at 1,000 keys/s.
        c.warmup.max_keys_per_sec = 1_000;
        c.resources.retain(|r| r.name == "users");
    })
    .await;
    let first = t.get("/readyz").await;
    assert_eq!(
        first.status(),
        503,
        "not ready before the warm-up got anywhere"
    );
    let body: serde_json::Value = first.json().await.expect("json");
    assert_eq!(body["status"], "warming");
    let started = Instant::now();
    loop {
        if t.get("/readyz").await.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = t
        .metric("rampart_warmup_keys{resource=\"users\",state=\"done\"}")
        .await;
    assert!(done >= ROWS as f64 * 0.5, "ready at {done} keys");
    assert_eq!(
        t.metric("rampart_warmup_keys{resource=\"users\",state=\"expected\"}")
            .await,
        ROWS as f64
    );
    // Key 1 was in the first batch: answered from L1 without a load.
    assert_eq!(x_cache(&t.get("/v1/r/users/1").await), "hit");
}

#[tokio::test]
async fn the_readiness_deadline_opens_the_gate_even_if_warm_up_is_slow() {
    let t = start(|c| {
        c.warmup.enabled = true;
        c.warmup.ready_fraction = 1.0;
        c.warmup.ready_deadline = Duration::from_millis(500);
        c.warmup.batch_size = 10;
        c.warmup.max_keys_per_sec = 20;
    })
    .await;
    assert_eq!(t.get("/readyz").await.status(), 503);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(t.get("/readyz").await.status(), 200);
    t.server
        .shutdown()
        .await
        .expect("shutdown cancels the warm-up");
}
