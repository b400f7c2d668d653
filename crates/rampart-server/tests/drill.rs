//! Tests for `rampart drill`: a tiny axum server on 127.0.0.1:0 is the target.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use rampart::limit::{Backoff, RetryBudgetConfig};
use rampart_server::drill::{
    gate, parse_arrival_rate, parse_duration, parse_keys, parse_slo, run, ClientRetry, DrillArgs,
    DrillConfig, DrillError, DrillReport, Histogram, KeySampler, KeySpace, Percentiles,
};

// ---------------------------------------------------------------------------
// Target server
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Seen {
    /// Every request that reached a handler.
    hits: AtomicU64,
    /// Largest numeric key seen on `/ok/{key}`.
    max_key: AtomicU64,
    /// Keys that were not a number >= 1.
    bad_keys: AtomicU64,
}

struct TestServer {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> u64 {
        self.seen.hits.load(Ordering::SeqCst)
    }
}

async fn ok(State(seen): State<Arc<Seen>>, Path(key): Path<String>) -> impl IntoResponse {
    seen.hits.fetch_add(1, Ordering::SeqCst);
    match key.parse::<u64>() {
        Ok(k) if k >= 1 => {
            seen.max_key.fetch_max(k, Ordering::SeqCst);
        }
        _ => {
            seen.bad_keys.fetch_add(1, Ordering::SeqCst);
        }
    }
    ([("x-cache", "hit")], key)
}

async fn slow(State(seen): State<Arc<Seen>>) -> &'static str {
    seen.hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    "slow"
}

async fn fail(State(seen): State<Arc<Seen>>) -> impl IntoResponse {
    seen.hits.fetch_add(1, Ordering::SeqCst);
    (StatusCode::INTERNAL_SERVER_ERROR, "boom")
}

async fn hang(State(seen): State<Arc<Seen>>) -> &'static str {
    seen.hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    "late"
}

async fn server() -> TestServer {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/ok/{key}", get(ok))
        .route("/slow", get(slow))
        .route("/fail", get(fail))
        .route("/hang", get(hang))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    TestServer { addr, seen }
}

fn config(targets: Vec<String>) -> DrillConfig {
    DrillConfig {
        targets,
        connections: 4,
        duration: Duration::from_secs(5),
        warmup: Duration::ZERO,
        ..DrillConfig::default()
    }
}

fn assert_counts_consistent(report: &DrillReport) {
    let responses: u64 = report.by_status.values().sum();
    let failures: u64 = report.by_error.values().sum();
    assert_eq!(report.requests, responses + failures, "{report:#?}");
    let error_statuses: u64 = report
        .by_status
        .iter()
        .filter(|(s, _)| **s >= 500 || **s == 429)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(report.errors, error_statuses + failures, "{report:#?}");
}

// ---------------------------------------------------------------------------
// Runs against the server
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_add_up() {
    let srv = server().await;
    let cfg = DrillConfig {
        keys: KeySpace::Uniform { max: 50 },
        max_requests: Some(400),
        ..config(vec![srv.url("/ok/{key}")])
    };
    let report = run(&cfg).await.unwrap();
    println!("{}", report.render_table());

    assert_eq!(report.requests, 400);
    assert_eq!(report.errors, 0);
    assert_eq!(report.by_status, BTreeMap::from([(200, 400)]));
    assert_eq!(report.by_header, BTreeMap::from([("hit".to_owned(), 400)]));
    assert!(report.by_error.is_empty(), "{:?}", report.by_error);
    assert_counts_consistent(&report);
    // The server saw exactly those requests, with keys from 1..=50.
    assert_eq!(srv.hits(), 400);
    assert_eq!(srv.seen.bad_keys.load(Ordering::SeqCst), 0);
    let max_key = srv.seen.max_key.load(Ordering::SeqCst);
    assert!((1..=50).contains(&max_key), "max key {max_key}");

    let l = report.latency_us;
    assert!(l.p50 > 0 && l.p50 <= l.p90 && l.p90 <= l.p99, "{l:?}");
    assert!(l.p99 <= l.p999 && l.p999 <= l.max, "{l:?}");
    assert!(report.throughput_rps > 0.0 && report.elapsed_secs > 0.0);

    let table = report.render_table();
    assert!(table.contains("requests     400"), "{table}");
    assert!(table.contains("x-cache      hit: 400"), "{table}");
    assert!(table.contains("status       200: 400"), "{table}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["requests"], 400);
    assert_eq!(json["by_status"]["200"], 400);
    assert_eq!(json["by_header"]["hit"], 400);
    assert!(json["latency_us"]["p99"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_is_exact() {
    let srv = server().await;
    let started = Instant::now();
    let cfg = DrillConfig {
        connections: 16,
        max_requests: Some(37),
        ..config(vec![srv.url("/ok/7")])
    };
    let report = run(&cfg).await.unwrap();
    assert_eq!(report.requests, 37);
    assert_eq!(
        srv.hits(),
        37,
        "the server must not see more than the budget"
    );
    assert_eq!(report.by_status.get(&200), Some(&37));
    // It stops when the budget is used, not at the 5 s deadline.
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(report.elapsed_secs < 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_at_the_deadline_even_against_a_hung_route() {
    let srv = server().await;
    // Connections alternate: 0 and 2 on /slow, 1 and 3 on /hang (30 s).
    let cfg = DrillConfig {
        duration: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        ..config(vec![srv.url("/slow"), srv.url("/hang")])
    };
    let started = Instant::now();
    let report = run(&cfg).await.unwrap();
    let wall = started.elapsed();
    assert!(wall < Duration::from_millis(1500), "took {wall:?}");
    assert!(wall >= Duration::from_secs(1), "took {wall:?}");
    assert!(
        (0.95..=1.1).contains(&report.elapsed_secs),
        "{}",
        report.elapsed_secs
    );
    // The /slow connections made progress (~50/s each); the hung requests
    // were abandoned at the deadline, neither successes nor errors.
    assert!(report.requests >= 20, "{report:#?}");
    assert!(report.requests <= 110, "{report:#?}");
    assert_eq!(report.errors, 0, "{report:#?}");
    assert_eq!(report.by_status.get(&200), Some(&report.requests));
    assert!(report.latency_us.p50 >= 20_000, "{:?}", report.latency_us);
    assert_counts_consistent(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_counted() {
    let srv = server().await;
    let cfg = DrillConfig {
        connections: 2,
        max_requests: Some(50),
        ..config(vec![srv.url("/fail")])
    };
    let report = run(&cfg).await.unwrap();
    assert_eq!(report.requests, 50);
    assert_eq!(report.errors, 50);
    assert_eq!(report.by_status, BTreeMap::from([(500, 50)]));
    assert!(report.by_header.is_empty());
    assert_counts_consistent(&report);
    let reasons = gate(&report, 0.01, Duration::from_secs(1)).unwrap_err();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("error rate"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_counted_as_errors() {
    let srv = server().await;
    let cfg = DrillConfig {
        connections: 2,
        duration: Duration::from_millis(500),
        request_timeout: Duration::from_millis(10),
        ..config(vec![srv.url("/slow")])
    };
    let report = run(&cfg).await.unwrap();
    assert!(report.requests >= 10, "{report:#?}");
    assert_eq!(report.errors, report.requests, "{report:#?}");
    assert_eq!(
        report.by_error,
        BTreeMap::from([("timeout".to_owned(), report.requests)])
    );
    assert!(report.by_status.is_empty(), "{report:#?}");
    // No response, no latency sample.
    assert_eq!(report.latency_us, Percentiles::default());
    assert_counts_consistent(&report);
    assert!(gate(&report, 0.5, Duration::from_secs(1)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_is_not_recorded() {
    let srv = server().await;
    let cfg = DrillConfig {
        connections: 2,
        duration: Duration::from_millis(600),
        warmup: Duration::from_millis(300),
        ..config(vec![srv.url("/ok/1")])
    };
    let report = run(&cfg).await.unwrap();
    assert!(report.requests > 0);
    // About half of what the server saw was warmup.
    assert!(
        srv.hits() > report.requests + report.requests / 4,
        "server saw {}, report {}",
        srv.hits(),
        report.requests
    );
    assert!(
        (0.25..=0.4).contains(&report.elapsed_secs),
        "{}",
        report.elapsed_secs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_target_is_refused_before_sending_anything() {
    let srv = server().await;
    let cfg = config(vec![srv.url("/ok/1"), "http://192.0.2.1:80/x".to_owned()]);
    let started = Instant::now();
    let err = run(&cfg).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(500));
    match &err {
        DrillError::NotLoopback { host, url } => {
            assert_eq!(host, "192.0.2.1");
            assert_eq!(url, "http://192.0.2.1:80/x");
        }
        other => panic!("expected NotLoopback, got {other:?}"),
    }
    assert!(err.to_string().contains("192.0.2.1"), "{err}");
    // Not even the loopback target was loaded.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(srv.hits(), 0);
}

#[test]
fn target_urls_are_checked() {
    let check = |url: &str| DrillConfig::validate(&config(vec![url.to_owned()]));
    for url in [
        "http://localhost:7070/v1/r/users/{key}",
        "http://LOCALHOST/",
        "http://127.0.0.1:1",
        "http://127.5.6.7:8080/a?b={key}",
        "http://[::1]:9000/x",
        "http://[::ffff:127.0.0.1]:9000/x",
    ] {
        assert!(check(url).is_ok(), "{url}: {:?}", check(url));
    }
    for url in [
        "http://example.com/",
        "http://localhost.example.com/",
        "http://127.0.0.1.nip.io/",
        "http://127.1/",
        "http://10.0.0.1:7070/",
        "http://0.0.0.0:7070/",
        "http://[::2]:7070/",
        "http://[::ffff:10.0.0.1]:7070/",
    ] {
        match check(url) {
            Err(DrillError::NotLoopback { .. }) => {}
            other => panic!("{url}: expected NotLoopback, got {other:?}"),
        }
    }
    for url in [
        "https://127.0.0.1/",
        "127.0.0.1:7070/x",
        "ftp://127.0.0.1/",
        "http://user@127.0.0.1/",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:0/",
        "http://::1/",
        "http://[::1/",
        "http:///x",
        "http://127.0.0.1/a b",
        "http://127.0.0.1/#frag",
    ] {
        match check(url) {
            Err(e @ DrillError::BadUrl { .. }) => {
                assert!(e.to_string().contains(url), "{e} should name {url}")
            }
            other => panic!("{url}: expected BadUrl, got {other:?}"),
        }
    }
    assert!(matches!(
        DrillConfig::validate(&config(vec![])),
        Err(DrillError::NoTarget)
    ));
}

#[tokio::test]
async fn connect_failure_is_reported() {
    // Bind then drop to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/");
    match run(&config(vec![url.clone()])).await {
        Err(e @ DrillError::Connect { .. }) => assert!(e.to_string().contains(&url), "{e}"),
        other => panic!("expected Connect, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    drill: DrillArgs,
}

fn parse_flags(args: &[&str]) -> Result<DrillArgs, String> {
    Cli::try_parse_from(std::iter::once("drill").chain(args.iter().copied()))
        .map(|cli| cli.drill)
        .map_err(|e| e.to_string())
}

fn config_from_flags(args: &[&str]) -> Result<DrillConfig, String> {
    parse_flags(args)?.into_config().map_err(|e| e.to_string())
}

#[test]
fn flags_map_onto_the_config() {
    let args = parse_flags(&[
        "--target",
        "http://127.0.0.1:7070/v1/r/users/{key}",
        "--target",
        "http://127.0.0.1:7071/bare",
        "--connections",
        "8",
        "--duration",
        "2m",
        "--requests",
        "1000",
        "--warmup",
        "500ms",
        "--timeout",
        "250ms",
        "--keys",
        "zipf:1000:1.2",
        "--json",
        "--max-error-rate",
        "0.5%",
        "--max-p99",
        "50ms",
    ])
    .unwrap();
    assert!(args.json);
    assert_eq!(args.gate(), Some((0.005, Duration::from_millis(50))));
    let cfg = args.into_config().unwrap();
    assert_eq!(cfg.targets.len(), 2);
    assert_eq!(cfg.connections, 8);
    assert_eq!(cfg.duration, Duration::from_secs(120));
    assert_eq!(cfg.max_requests, Some(1000));
    assert_eq!(cfg.warmup, Duration::from_millis(500));
    assert_eq!(cfg.request_timeout, Duration::from_millis(250));
    assert_eq!(
        cfg.keys,
        KeySpace::Zipf {
            max: 1000,
            exponent: 1.2
        }
    );

    // Defaults.
    let args = parse_flags(&["--target", "http://127.0.0.1:1/"]).unwrap();
    assert!(!args.json);
    assert_eq!(args.gate(), None);
    let cfg = args.into_config().unwrap();
    assert_eq!(cfg.connections, 32);
    assert_eq!(cfg.duration, Duration::from_secs(10));
    assert_eq!(cfg.warmup, Duration::from_secs(1));
    assert_eq!(cfg.request_timeout, Duration::from_secs(5));
    assert_eq!(cfg.max_requests, None);
    assert_eq!(cfg.keys, KeySpace::Fixed("1".to_owned()));
    // One gate flag alone leaves the other unconstrained.
    let args = parse_flags(&["--target", "http://127.0.0.1:1/", "--max-p99", "5ms"]).unwrap();
    assert_eq!(args.gate(), Some((1.0, Duration::from_millis(5))));
}

#[test]
fn bad_flags_are_rejected_naming_the_flag() {
    const T: &str = "http://127.0.0.1:7070/x";
    let cases: &[(&[&str], &str)] = &[
        (&[], "--target"),
        (&["--target", T, "--connections", "0"], "--connections"),
        (&["--target", T, "--connections", "100000"], "--connections"),
        (
            &["--target", T, "--target", T, "--connections", "1"],
            "--connections",
        ),
        (&["--target", T, "--connections=-3"], "--connections"),
        (&["--target", T, "--duration", "10x"], "--duration"),
        (&["--target", T, "--duration", "10"], "--duration"),
        (&["--target", T, "--duration", "0s"], "--duration"),
        (&["--target", T, "--duration", "2h"], "--duration"),
        (
            &["--target", T, "--warmup", "2s", "--duration", "1s"],
            "--warmup",
        ),
        (&["--target", T, "--requests", "0"], "--requests"),
        (&["--target", T, "--timeout", "0ms"], "--timeout"),
        (&["--target", T, "--keys", "zipf:0"], "--keys"),
        (&["--target", T, "--keys", "zipf:10:-1"], "--keys"),
        (&["--target", T, "--keys", "uniform:x"], "--keys"),
        (&["--target", T, "--keys", "random:3"], "--keys"),
        (&["--target", T, "--keys", "fixed:"], "--keys"),
        (&["--target", T, "--keys", "fixed:a b"], "--keys"),
        (
            &["--target", T, "--max-error-rate", "1.5"],
            "--max-error-rate",
        ),
        (
            &["--target", T, "--max-error-rate", "lots"],
            "--max-error-rate",
        ),
        (&["--target", T, "--max-p99", "fast"], "--max-p99"),
        (&["--target", T, "--max-p99", "0ms"], "--max-p99"),
        (&["--target", "http://example.com/"], "example.com"),
    ];
    for (args, flag) in cases {
        let err = config_from_flags(args).expect_err(&format!("{args:?} should be rejected"));
        assert!(err.contains(flag), "{args:?}: `{err}` should name {flag}");
    }
}

#[test]
fn durations_parse() {
    let ok = [
        ("10s", Duration::from_secs(10)),
        ("500ms", Duration::from_millis(500)),
        ("2m", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
        ("250us", Duration::from_micros(250)),
        ("1.5s", Duration::from_millis(1500)),
        ("0.01s", Duration::from_millis(10)),
        ("0.1ms", Duration::from_micros(100)),
        (" 3s ", Duration::from_secs(3)),
        ("0s", Duration::ZERO),
    ];
    for (text, want) in ok {
        assert_eq!(parse_duration(text), Ok(want), "{text}");
    }
    for bad in [
        "",
        "10",
        "s",
        "-1s",
        "1d",
        "1.2.3s",
        ".5s",
        "1e3ms",
        "10 s",
        "1.0000000001s",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
    }
}

#[test]
fn key_specs_parse() {
    assert_eq!(
        parse_keys("fixed:abc"),
        Ok(KeySpace::Fixed("abc".to_owned()))
    );
    assert_eq!(parse_keys("uniform:10"), Ok(KeySpace::Uniform { max: 10 }));
    assert_eq!(
        parse_keys("zipf:10"),
        Ok(KeySpace::Zipf {
            max: 10,
            exponent: 0.99
        })
    );
    assert_eq!(
        parse_keys("zipf:10:1.5"),
        Ok(KeySpace::Zipf {
            max: 10,
            exponent: 1.5
        })
    );
    assert_eq!(
        parse_keys("range:2000000:2000009"),
        Ok(KeySpace::Range {
            low: 2_000_000,
            high: 2_000_009
        })
    );
    let mut sampler =
        rampart_server::drill::KeySampler::new(&parse_keys("range:5:7").unwrap(), 1).unwrap();
    let drawn: std::collections::BTreeSet<String> = (0..200).map(|_| sampler.next_key()).collect();
    assert_eq!(drawn.into_iter().collect::<Vec<_>>(), ["5", "6", "7"]);
    for bad in [
        "",
        "uniform",
        "uniform:0",
        "range:7:5",
        "range:5",
        "range:a:5",
        "zipf:10:0",
        "zipf:10:nan",
        "zipf:x:1",
    ] {
        assert!(parse_keys(bad).is_err(), "{bad:?} should not parse");
    }
}

// ---------------------------------------------------------------------------
// Histogram and keys
// ---------------------------------------------------------------------------

#[test]
fn percentiles_of_known_samples() {
    // Below 256 every value has its own bucket: exact nearest-rank answers.
    let mut h = Histogram::new();
    for v in 1..=100 {
        h.record(v);
    }
    assert_eq!(
        h.percentiles(),
        Percentiles {
            p50: 50,
            p90: 90,
            p99: 99,
            p999: 100,
            max: 100
        }
    );
    assert_eq!(h.count(), 100);
    assert_eq!(h.value_at_quantile(0.0), 1);
    assert_eq!(h.value_at_quantile(1.0), 100);

    // Nearest rank: 990 fast and 10 slow samples.
    let mut h = Histogram::new();
    for _ in 0..990 {
        h.record(100);
    }
    for _ in 0..10 {
        h.record(200);
    }
    let p = h.percentiles();
    assert_eq!(
        (p.p50, p.p90, p.p99, p.p999, p.max),
        (100, 100, 100, 200, 200)
    );

    // Above 256: within 1/128 of the true value, never below it, never above
    // the max.
    let mut h = Histogram::new();
    for v in 1..=10_000 {
        h.record(v);
    }
    let p = h.percentiles();
    for (got, want) in [
        (p.p50, 5_000),
        (p.p90, 9_000),
        (p.p99, 9_900),
        (p.p999, 9_990),
    ] {
        assert!(got >= want, "{got} < {want}");
        assert!(got <= want + want / 128, "{got} too far above {want}");
    }
    assert_eq!(p.max, 10_000);

    // Merging two halves gives the same answers as one histogram.
    let (mut a, mut b) = (Histogram::new(), Histogram::new());
    for v in 1..=10_000 {
        if v % 3 == 0 {
            a.record(v);
        } else {
            b.record(v);
        }
    }
    a.merge(&b);
    assert_eq!(a.percentiles(), p);
    assert_eq!(a.count(), 10_000);

    // Empty is all zero; huge values do not overflow.
    assert_eq!(Histogram::new().percentiles(), Percentiles::default());
    let mut h = Histogram::new();
    h.record(u64::MAX);
    h.record(0);
    assert_eq!(h.percentiles().max, u64::MAX);
    assert_eq!(h.value_at_quantile(0.5), 0);
    assert_eq!(h.value_at_quantile(1.0), u64::MAX);
}

fn histogram_of_keys(space: &KeySpace, n: usize) -> BTreeMap<u64, u64> {
    let mut sampler = KeySampler::new(space, 42).unwrap();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let key: u64 = sampler.next_key().parse().unwrap();
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

#[test]
fn zipf_keys_are_skewed_towards_key_one() {
    let n = 200_000;
    for exponent in [1.0, 0.99, 1.5] {
        let counts = histogram_of_keys(&KeySpace::Zipf { max: 100, exponent }, n);
        assert!(counts.keys().all(|k| (1..=100).contains(k)), "{counts:?}");
        let (&hottest, _) = counts.iter().max_by_key(|(_, c)| **c).unwrap();
        assert_eq!(hottest, 1, "exponent {exponent}");
        // P(1) = 1 / sum(k^-e) and P(1) / P(2) = 2^e.
        let norm: f64 = (1..=100).map(|k| (k as f64).powf(-exponent)).sum();
        let p1 = counts[&1] as f64 / n as f64;
        assert!(
            (p1 * norm - 1.0).abs() < 0.05,
            "exponent {exponent}: p1 {p1}"
        );
        let ratio = counts[&1] as f64 / counts[&2] as f64;
        let want = 2f64.powf(exponent);
        assert!(
            (ratio / want - 1.0).abs() < 0.07,
            "exponent {exponent}: ratio {ratio}"
        );
        // The tail is still visited.
        assert!(counts.contains_key(&100) || exponent > 1.2);
    }
    // Huge key spaces need no table and stay in range.
    let mut big = KeySampler::new(
        &KeySpace::Zipf {
            max: 1_000_000_000_000,
            exponent: 0.99,
        },
        7,
    )
    .unwrap();
    for _ in 0..10_000 {
        let k: u64 = big.next_key().parse().unwrap();
        assert!((1..=1_000_000_000_000).contains(&k));
    }
}

#[test]
fn uniform_keys_cover_the_range_evenly() {
    let n = 100_000;
    let counts = histogram_of_keys(&KeySpace::Uniform { max: 10 }, n);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    for (key, count) in &counts {
        assert!((9_000..=11_000).contains(count), "key {key}: {count}");
    }
    let counts = histogram_of_keys(&KeySpace::Uniform { max: 1 }, 100);
    assert_eq!(counts, BTreeMap::from([(1, 100)]));

    let mut fixed = KeySampler::new(&KeySpace::Fixed("user-7".to_owned()), 1).unwrap();
    assert!((0..10).all(|_| fixed.next_key() == "user-7"));
    // Same seed, same sequence.
    let space = KeySpace::Zipf {
        max: 1000,
        exponent: 1.0,
    };
    let mut a = KeySampler::new(&space, 9).unwrap();
    let mut b = KeySampler::new(&space, 9).unwrap();
    assert!((0..100).all(|_| a.next_key() == b.next_key()));
}

// ---------------------------------------------------------------------------
// Gate
// ---------------------------------------------------------------------------

fn report(requests: u64, errors: u64, p99_us: u64) -> DrillReport {
    DrillReport {
        requests,
        errors,
        elapsed_secs: 1.0,
        throughput_rps: requests as f64,
        latency_us: Percentiles {
            p50: p99_us / 2,
            p90: p99_us / 2,
            p99: p99_us,
            p999: p99_us,
            max: p99_us,
        },
        ..DrillReport::default()
    }
}

#[test]
fn gate_passes_and_fails_as_expected() {
    let limit = Duration::from_millis(50);
    assert_eq!(gate(&report(1000, 0, 10_000), 0.01, limit), Ok(()));
    // At the limit passes; just above fails.
    assert_eq!(gate(&report(1000, 10, 50_000), 0.01, limit), Ok(()));
    let reasons = gate(&report(1000, 11, 10_000), 0.01, limit).unwrap_err();
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].contains("error rate"), "{reasons:?}");
    let reasons = gate(&report(1000, 0, 50_001), 0.01, limit).unwrap_err();
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].contains("p99"), "{reasons:?}");
    let reasons = gate(&report(1000, 500, 90_000), 0.01, limit).unwrap_err();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    // No data never passes.
    let reasons = gate(&report(0, 0, 0), 1.0, Duration::MAX).unwrap_err();
    assert!(reasons[0].contains("no requests"), "{reasons:?}");
    // A NaN limit fails rather than passes.
    assert!(gate(&report(1000, 0, 10), f64::NAN, limit).is_err());
}

// ---------------------------------------------------------------------------
// Open loop
// ---------------------------------------------------------------------------

fn open(target: String, rate: f64, duration: Duration) -> DrillConfig {
    DrillConfig {
        rate: Some(rate),
        duration,
        ..config(vec![target])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_at_its_rate_whatever_the_answers() {
    let srv = server().await;
    let cfg = DrillConfig {
        keys: KeySpace::Uniform { max: 50 },
        ..open(srv.url("/ok/{key}"), 200.0, Duration::from_secs(2))
    };
    let report = run(&cfg).await.unwrap();
    println!("{}", report.render_table());
    // Due times are start + i / rate for every i before the end: exactly
    // rate x duration requests, each answered.
    assert_eq!(report.requests, 400, "{report:#?}");
    assert_eq!(report.sent, 400);
    assert_eq!(report.errors, 0);
    assert_eq!(report.mode, "open");
    assert_eq!(srv.hits(), 400);
    assert_counts_consistent(&report);
    // One point a second, by intended send time.
    assert_eq!(report.series.len(), 2, "{:?}", report.series);
    for second in &report.series {
        assert_eq!(second.requests, 200, "{second:?}");
        assert!(
            second.p50_us > 0 && second.p50_us <= second.p99_us && second.p99_us <= second.max_us
        );
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["series"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["rate"], 200.0);
}

/// The point of the open loop: one connection to a 20 ms handler can
/// answer 50 requests a second. Asked for 200 a second, a closed loop
/// just sends fewer and reports ~20 ms; the open loop keeps the schedule,
/// so the queue behind the slow answers is in its latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_counts_the_wait_a_closed_loop_omits() {
    let srv = server().await;
    let closed = run(&DrillConfig {
        connections: 1,
        duration: Duration::from_secs(1),
        ..config(vec![srv.url("/slow")])
    })
    .await
    .unwrap();
    let open = run(&DrillConfig {
        connections: 1,
        ..open(srv.url("/slow"), 200.0, Duration::from_secs(1))
    })
    .await
    .unwrap();
    println!(
        "closed:\n{}\nopen:\n{}",
        closed.render_table(),
        open.render_table()
    );
    assert!(closed.latency_us.p99 < 500_000, "{:?}", closed.latency_us);
    // Request i waits for the i before it: the median one ~100 x 20 ms.
    assert!(open.latency_us.p50 > 500_000, "{:?}", open.latency_us);
    assert!(open.latency_us.p99 > closed.latency_us.p99 * 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naive_clients_retry_every_error_budgeted_ones_do_not() {
    let srv = server().await;
    let naive = run(&DrillConfig {
        retry: ClientRetry::Immediate { max: 3 },
        ..open(srv.url("/fail"), 100.0, Duration::from_secs(1))
    })
    .await
    .unwrap();
    assert_eq!(naive.requests, 100);
    assert_eq!(naive.errors, 100);
    assert_eq!(naive.sent, 400, "1 + 3 retries each");
    assert_eq!(srv.hits(), 400);

    let srv = server().await;
    let budgeted = run(&DrillConfig {
        retry: ClientRetry::Budgeted {
            max: 3,
            budget: RetryBudgetConfig {
                window: Duration::from_secs(10),
                min_retries_per_sec: 0,
                retry_ratio: 0.2,
            },
            backoff: Backoff::default(),
        },
        ..open(srv.url("/fail"), 100.0, Duration::from_secs(1))
    })
    .await
    .unwrap();
    assert_eq!(budgeted.requests, 100);
    // 20 % of the requests, and only once they have paid into the budget.
    assert!(budgeted.sent > 100 && budgeted.sent <= 121, "{budgeted:#?}");
    assert_eq!(srv.hits(), budgeted.sent);
}

#[test]
fn arrival_rates_and_slos_parse_naming_the_flag() {
    assert_eq!(parse_arrival_rate("500/s"), Ok(500.0));
    assert_eq!(parse_arrival_rate("250"), Ok(250.0));
    assert_eq!(parse_arrival_rate("600/m"), Ok(10.0));
    for bad in ["0", "-1/s", "fast", "5/h", "NaN"] {
        assert!(parse_arrival_rate(bad).is_err(), "{bad}");
    }
    let args = parse_flags(&["--target", "http://127.0.0.1:1/", "--rate", "1000/s"]).unwrap();
    assert_eq!(args.into_config().unwrap().rate, Some(1000.0));
    let err =
        config_from_flags(&["--target", "http://127.0.0.1:1/", "--rate", "1000000"]).unwrap_err();
    assert!(err.contains("--rate"), "{err}");
    let err = parse_flags(&["--target", "http://127.0.0.1:1/", "--slo", "p98<1s"]).unwrap_err();
    assert!(err.contains("p98"), "{err}");

    let slo = parse_slo("p99<50ms, errors<0.1%").unwrap();
    assert_eq!(slo.terms.len(), 2);
    assert_eq!(slo.check(&report(10_000, 9, 49_999)), Ok(()));
    let missed = slo.check(&report(10_000, 10, 50_000)).unwrap_err();
    assert_eq!(
        missed.len(),
        2,
        "both at the limit miss a strict <: {missed:?}"
    );
    assert_eq!(
        parse_slo("p99<=50ms,errors<=0.1%")
            .unwrap()
            .check(&report(10_000, 10, 50_000)),
        Ok(())
    );
    assert!(
        parse_slo("p99<50ms")
            .unwrap()
            .check(&report(0, 0, 0))
            .is_err(),
        "no data never passes"
    );
    for bad in [
        "",
        "p99",
        "p99<",
        "p99<0ms",
        "errors<150%",
        "p99<50ms,",
        "latency<5ms",
    ] {
        assert!(parse_slo(bad).is_err(), "{bad:?}");
    }
}
