//! `/dashboard` on a real server under load: the page is served from the
//! binary; `/dashboard/stats` keeps a per-second history whose values move
//! with the traffic; `/dashboard/events` streams a `stats` event a second
//! and ends on its own so the server can shut down.

mod common;

use std::time::Duration;

use common::start;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_stats_that_follow_the_traffic() {
    let t = start(|_| {}).await;

    let page = t.get("/dashboard").await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.expect("html");
    for needle in [
        "id=\"resources\"",
        "EventSource(\"dashboard/events\")",
        "dashboard/stats",
    ] {
        assert!(html.contains(needle), "the page has {needle}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );

    let load = t.background_reads(500);

    // The event stream: two `stats` events, a second apart, with traffic.
    let mut events = t.get("/dashboard/events").await;
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    let mut seen: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .expect("an event within 10 s")
            .expect("stream")
            .expect("the stream stays open for the request timeout");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if event.lines().any(|l| l == "event: stats") {
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                seen.push(serde_json::from_str(&data).expect("stats JSON"));
            }
        }
    }
    assert!(seen[1]["t"].as_u64() > seen[0]["t"].as_u64(), "time moves");
    let last = &seen[2];
    let users = &last["resources"]["users"];
    assert!(users["rps"].as_f64().is_some_and(|r| r > 0.0), "{last}");
    assert!(
        last["http"]["rps"].as_f64().is_some_and(|r| r > 0.0),
        "{last}"
    );
    assert!(users["hit_ratio"].as_f64().is_some(), "{last}");
    assert!(last["http"]["hot_p99_ms"].as_f64().is_some(), "{last}");
    assert!(
        last["pool"]["size"].as_f64().is_some_and(|s| s > 0.0),
        "{last}"
    );
    assert!(
        users["bulkhead"]["max"].as_f64().is_some_and(|m| m > 0.0),
        "{last}"
    );
    assert!(last["runtime"]["workers"].as_f64() == Some(2.0), "{last}");
    // The first keys were misses, later ones hits: the counts moved.
    let hits: f64 = seen
        .iter()
        .filter_map(|s| s["resources"]["users"]["by_x_cache"]["hit"].as_f64())
        .sum();
    assert!(hits > 0.0, "{seen:?}");

    load.stop().await;

    // The history a late page loads: the same seconds, oldest first.
    let body: Value = t.get("/dashboard/stats").await.json().await.expect("json");
    assert_eq!(body["history_seconds"], 300);
    let history = body["history"].as_array().expect("history");
    assert!(history.len() >= 3, "{body}");
    let times: Vec<u64> = history.iter().filter_map(|s| s["t"].as_u64()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    assert!(
        history.iter().any(|s| s["t"] == seen[2]["t"]),
        "the streamed second is kept"
    );

    // The stream ends by itself after server.request_timeout (5 s), so a
    // shutdown drains and the browser reconnects.
    let ended = tokio::time::timeout(Duration::from_secs(8), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream ended on its own");
    t.server.shutdown().await.expect("shutdown");
}
