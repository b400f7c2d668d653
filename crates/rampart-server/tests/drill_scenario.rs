//! `rampart drill scenario`: the quick stampede end to end (a private
//! PostgreSQL schema behind the fault proxy, rampart in process, naive then
//! guarded), its table, JSON and HTML; and the command line's exit codes.
//! The other scenarios run quick in scripts/check-scenarios.sh.

use std::process::Command;

use rampart_server::drill::scenario::{self, render_html, SCENARIOS};
use rampart_server::drill::SLO_EXIT_CODE;

fn pg_url() -> String {
    std::env::var("RAMPART_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stampede_naive_sends_each_expiry_to_the_source_guarded_one_load() {
    let stampede = scenario::find("stampede").expect("listed");
    let c = scenario::run(stampede, true, None, &pg_url())
        .await
        .unwrap();
    print!("{}", c.render_table());
    // The same load reached both halves.
    assert_eq!(c.naive.load.requests, c.guarded.load.requests);
    assert!(c.naive.load.requests > 0);
    assert_eq!(c.naive.load.mode, "open");
    // Once a second the hot key expires. Naive: every request missing
    // during the 20–30 ms reload loads it; guarded: one refresh.
    let expiries = c.duration_secs;
    let naive = c.naive.source_loads as f64 / expiries;
    let guarded = c.guarded.source_loads as f64 / expiries;
    assert!(guarded <= 2.0, "guarded loads per expiry {guarded}");
    assert!(naive >= 5.0 * guarded, "naive {naive} vs guarded {guarded}");
    let row = c
        .table
        .iter()
        .find(|r| r.label == "source loads per expiry")
        .expect("the scenario's own figure");
    assert_eq!(row.naive, format!("{naive:.1}"));
    // Per-second series for both halves, load and source.
    for half in [&c.naive, &c.guarded] {
        assert!(half.load.series.len() >= 5, "{:?}", half.load.series);
        assert!(half.source.len() >= 5, "{:?}", half.source);
    }
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["scenario"], "stampede");
    assert!(json["naive"]["load"]["series"].as_array().is_some());

    let html = render_html(&c);
    for metric in ["answers", "p99", "errors", "source"] {
        assert!(
            html.contains(&format!(r#"data-metric="{metric}""#)),
            "{metric}"
        );
    }
    assert_eq!(html.matches(r#"class="series naive""#).count(), 4);
    assert_eq!(html.matches(r#"class="series guarded""#).count(), 4);
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
}

fn rampart(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .env("RAMPART_LOG", "error")
        .output()
        .expect("run rampart")
}

#[test]
fn the_list_names_every_scenario_and_unknown_names_are_refused() {
    let out = rampart(&["drill", "scenario", "--list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for s in SCENARIOS {
        assert!(text.contains(s.name), "{text}");
    }
    let out = rampart(&["drill", "scenario", "no-such-thing"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no scenario `no-such-thing`") && err.contains("stampede"),
        "{err}"
    );
    // A load run still needs its target; a scenario does not.
    let out = rampart(&["drill"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_slo_exits_with_its_own_status() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let target = format!("http://{addr}/");
    let run = |slo: &'static str| {
        let target = target.clone();
        tokio::task::spawn_blocking(move || {
            rampart(&[
                "drill",
                "--target",
                &target,
                "--rate",
                "50/s",
                "--duration",
                "1s",
                "--warmup",
                "0s",
                "--slo",
                slo,
            ])
        })
    };
    let met = run("errors<1%,max<10s").await.unwrap();
    assert!(
        met.status.success(),
        "{}",
        String::from_utf8_lossy(&met.stderr)
    );
    let missed = run("p50<1us").await.unwrap();
    assert_eq!(missed.status.code(), Some(i32::from(SLO_EXIT_CODE)));
    let err = String::from_utf8_lossy(&missed.stderr);
    assert!(err.contains("p50") && err.contains("missed"), "{err}");
}
