//! CPU profiles of the running server: admin only, bounded, one at a time;
//! the pprof answer decodes as a pprof profile with samples in rampart's
//! own code taken under load, the flame graph is SVG. One test function:
//! the profiler is process-wide, so tests in this binary would contend.

mod common;

use common::start;
use pprof::protos::Message;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_admin_only_bounded_one_at_a_time_and_readable() {
    let t = start(|_| {}).await;
    let token = t.admin_token();
    let profile = |path: &str| t.client.get(t.url(path)).bearer_auth(&token).send();

    // Admin only.
    let bare = t
        .client
        .get(t.url("/debug/pprof/profile?seconds=1"))
        .send()
        .await
        .expect("request");
    assert_eq!(bare.status(), 401);
    let wrong = t
        .client
        .get(t.url("/debug/pprof/flamegraph?seconds=1"))
        .bearer_auth("not-the-admin-token-at-all")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status(), 403);

    // Bounded: server.request_timeout (5 s here) + 4 s.
    for bad in ["0", "10", "100000"] {
        let r = profile(&format!("/debug/pprof/profile?seconds={bad}"))
            .await
            .expect("request");
        assert_eq!(r.status(), 400, "seconds={bad}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"], "bad_request");
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("seconds")),
            "{body}"
        );
    }
    let r = profile("/debug/pprof/profile?seconds=x")
        .await
        .expect("request");
    assert_eq!(r.status(), 400);

    // Load while profiling, so that rampart's code is on the CPU.
    let load = t.background_reads(1000);

    let pprof = profile("/debug/pprof/profile?seconds=2");
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        profile("/debug/pprof/flamegraph?seconds=1").await
    };
    let (pprof, second) = tokio::join!(pprof, second);
    let second = second.expect("request");
    assert_eq!(second.status(), 409, "one profile at a time");
    let body: Value = second.json().await.expect("json");
    assert_eq!(body["code"], "profile_in_progress");

    let pprof = pprof.expect("request");
    if pprof.status() != 200 {
        let (status, text) = (pprof.status(), pprof.text().await.unwrap_or_default());
        panic!("{status}: {text}");
    }
    assert_eq!(pprof.headers()["content-type"], "application/octet-stream");
    let bytes = pprof.bytes().await.expect("body");
    let decoded = pprof::protos::Profile::decode(bytes.as_ref()).expect("a pprof profile");
    assert!(!decoded.sample.is_empty(), "samples were taken");
    let own_code = decoded
        .string_table
        .iter()
        .any(|name| name.contains("rampart_server") || name.contains("rampart::"));
    assert!(own_code, "rampart's functions are named in the profile");

    // The slot is free again; the longest profile answers (its connection
    // outlives the ordinary request timeout, within the watchdog's bound).
    let svg = profile("/debug/pprof/flamegraph?seconds=9")
        .await
        .expect("request");
    assert_eq!(svg.status(), 200);
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    let svg = svg.text().await.expect("svg");
    assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(200)]);

    load.stop().await;
    t.server.shutdown().await.expect("shutdown");
}
