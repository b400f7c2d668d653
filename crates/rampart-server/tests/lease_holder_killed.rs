//! The holder of a cold key's lease is SIGKILLed mid-load: its lease is
//! never released and no notice is sent. Another instance must still
//! answer the key 200, well inside the request timeout — not wait out the
//! orphaned lease and answer 503.

mod common;

use std::time::{Duration, Instant};

use common::process::{self, Instance};
use common::{demo_data, x_cache, Schema};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_mid_load_costs_lease_wait_not_a_503() {
    let schema = Schema::create("holder_killed").await;
    demo_data(&schema.url());
    let ns = format!("killed-{}-{}", std::process::id(), unique_suffix());
    let config = process::shared_config(&ns, true);
    // The holder's load takes 1.5 s (within its load_timeout), so it is
    // still loading, lease held and renewed, when it is killed.
    let slow = config.replacen(
        "FROM users WHERE id = $1",
        "FROM users, (SELECT pg_sleep(1.5)) AS slow WHERE id = $1",
        1,
    );
    let mut holder: Instance = process::spawn(&slow, &schema.url()).await;
    let other: Instance = process::spawn(&config, &schema.url()).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    let cold = format!("{}/v1/r/users/77", holder.base);
    let stuck = {
        let client = client.clone();
        tokio::spawn(async move { client.get(cold).send().await })
    };
    // Killed while its query runs: by then it holds the lease (taken
    // before the load) and has not released it.
    let mut loading = false;
    for _ in 0..500 {
        let running: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND state = 'active' AND query LIKE '%pg_sleep(1.5)%'",
        )
        .bind(&schema.name)
        .fetch_one(&schema.admin)
        .await
        .expect("pg_stat_activity");
        if running > 0 {
            loading = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(loading, "the holder never started its load");
    holder.kill();
    assert!(stuck.await.expect("task").is_err(), "the holder was killed");

    let started = Instant::now();
    let response = client
        .get(format!("{}/v1/r/users/77", other.base))
        .send()
        .await
        .expect("request");
    let took = started.elapsed();
    let status = response.status().as_u16();
    let cache = x_cache(&response);
    println!("after the holder died: {status} x-cache {cache} in {took:?}");
    assert_eq!(status, 200, "{:?}", response.text().await);
    assert_eq!(cache, "miss");
    // The request timeout is 5 s; lease_wait (1 s) + the load is the bound.
    assert!(
        took < Duration::from_millis(2_500),
        "took {took:?}: waited out the orphaned lease"
    );
    drop(other);
    schema.drop().await;
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
