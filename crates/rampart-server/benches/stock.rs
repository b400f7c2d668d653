//! Flash-sale throughput on one hot SKU, side by side in one run:
//!
//! 1. the SQL path, one transaction per reservation vs the group commit,
//!    on SQLite and on PostgreSQL (`Store` and `GroupCommit` directly);
//! 2. over HTTP (`rampart` in process, PostgreSQL, grouped; then the same
//!    with the Redis gate in front) vs a bare axum handler that answers
//!    201 and keeps nothing (HTTP's own ceiling with this client) vs
//!    `redis-benchmark` running a check-and-decrement EVALSHA at the same
//!    concurrency.
//!
//! Every phase sells exactly its units (checked: sold + available = total,
//! one row per reservation) — a throughput figure from a run that
//! oversold would be worthless.
//!
//! `cargo bench -p rampart-server --bench stock` (needs PostgreSQL on
//! 127.0.0.1:5432 and redis-server/redis-benchmark on PATH; Redis on 6379).
//! `STOCK_BENCH_UNITS` (default 20000) units per phase,
//! `STOCK_BENCH_CONCURRENCY` (default 64) callers.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart::stock::request_digest;
use rampart_server::stock::group_commit::{GroupCommit, GroupSettings};
use rampart_server::stock::store::{Ask, Outcome, Precondition, Store};
use rampart_server::{Config, Server};
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

const HOLD_MS: i64 = 600_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pg_base() -> String {
    std::env::var("RAMPART_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh PostgreSQL schema and a URL whose connections use it.
async fn pg_schema(name: &str) -> String {
    let admin = AnyPool::connect(&pg_base()).await.expect("PostgreSQL");
    for sql in [
        format!("DROP SCHEMA IF EXISTS {name} CASCADE"),
        format!("CREATE SCHEMA {name}"),
    ] {
        sqlx::query(&sql).execute(&admin).await.expect("schema");
    }
    format!("{}?options=-c%20search_path%3D{name}", pg_base())
}

async fn pool(url: &str, connections: u32) -> AnyPool {
    let pool = AnyPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(Duration::from_secs(60))
        .connect(url)
        .await
        .expect("connect");
    if url.starts_with("sqlite:") {
        sqlx::query("PRAGMA journal_mode=WAL")
            .execute(&pool)
            .await
            .expect("wal");
    }
    pool
}

fn ask(sku: &str, key: String) -> Ask {
    Ask {
        sku: sku.to_owned(),
        qty: 1,
        digest: request_digest(&[sku.as_bytes(), &1i64.to_le_bytes()]) as i64,
        key,
    }
}

/// `callers` tasks reserve one unit each, unique keys, until sold out.
/// Returns reservations per second.
async fn sale(
    store: Store,
    group: Option<Arc<GroupCommit>>,
    units: usize,
    callers: usize,
    tag: &str,
) -> f64 {
    store
        .put_total("HOT", units as i64, Precondition::Absent)
        .await
        .expect("put");
    let next = Arc::new(AtomicU64::new(0));
    let won = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (store, group, next, won) =
                (store.clone(), group.clone(), next.clone(), won.clone());
            let tag = tag.to_owned();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let a = ask("HOT", format!("{tag}-{i}"));
                    let now = 1_700_000_000_000;
                    let outcome = match &group {
                        Some(g) => g.reserve(a, now).await.expect("reserve"),
                        None => loop {
                            // SQLite answers "busy" to writers that wait
                            // too long; a caller retries the same key.
                            match store.reserve_one(&a, now, HOLD_MS).await {
                                Ok(o) => break o,
                                Err(e) if e.to_string().contains("locked") => continue,
                                Err(e) => panic!("{e}"),
                            }
                        },
                    };
                    match outcome {
                        Outcome::Reserved(_) => {
                            won.fetch_add(1, Ordering::Relaxed);
                        }
                        Outcome::SoldOut { .. } => return,
                        other => panic!("{other:?}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let seconds = started.elapsed().as_secs_f64();
    let counts = store.counts("HOT").await.expect("counts").expect("row");
    assert_eq!(
        won.load(Ordering::Relaxed) as usize,
        units,
        "exactly the units sold"
    );
    assert_eq!(
        (counts.available, counts.held),
        (0, units as i64),
        "{counts:?}"
    );
    units as f64 / seconds
}

async fn sql_phase(label: &str, url: &str, units: usize, callers: usize) -> (f64, f64) {
    let connections = if url.starts_with("sqlite:") { 4 } else { 16 };
    let p = pool(url, connections).await;
    let store = Store::new(p.clone());
    store.migrate().await.expect("migrate");
    let single = sale(
        store.clone(),
        None,
        units,
        callers,
        &format!("{label}-single"),
    )
    .await;
    sqlx::query("DELETE FROM stock")
        .execute(&p)
        .await
        .expect("reset");
    let group = Arc::new(GroupCommit::new(
        store.clone(),
        GroupSettings {
            window: Duration::from_millis(2),
            max: 256,
            hold_ms: HOLD_MS,
        },
    ));
    let grouped = sale(
        store,
        Some(group),
        units,
        callers,
        &format!("{label}-grouped"),
    )
    .await;
    println!(
        "{label:<10} per-request {single:>9.0} /s   grouped {grouped:>9.0} /s   ratio {:.1}x",
        grouped / single
    );
    (single, grouped)
}

/// `callers` keep-alive clients POSTing reservations of one unit to `url`
/// under unique request keys until a 409 (sold out) or `limit` requests in
/// all; returns the 201s and the seconds taken.
async fn drive(url: &str, callers: usize, limit: u64) -> (u64, f64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(callers)
        .build()
        .expect("client");
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, next, url) = (client.clone(), next.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut won = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= limit {
                        return won;
                    }
                    let r = client
                        .post(&url)
                        .header("Idempotency-Key", format!("http-{i}"))
                        .header("content-type", "application/json")
                        .body(r#"{"qty":1}"#)
                        .send()
                        .await
                        .expect("request");
                    match r.status().as_u16() {
                        201 => won += 1,
                        409 => return won,
                        s => panic!("HTTP {s}: {}", r.text().await.unwrap_or_default()),
                    }
                    let _ = r.bytes().await;
                }
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += t.await.expect("task");
    }
    (won, started.elapsed().as_secs_f64())
}

/// Reservations/s over HTTP through `rampart` (PostgreSQL, grouped), with
/// the Redis gate in front when `redis` names one.
async fn http_phase(url: &str, redis: Option<&str>, units: usize, callers: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::embedded().expect("config");
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.data_dir = dir.path().to_path_buf();
    config.database.url = url.to_owned();
    config.database.pool_size = 16;
    config.demo_rows = 0;
    config.warmup.enabled = false;
    config.server.max_concurrent_requests = callers * 4;
    if let Some(redis) = redis {
        config.redis.urls = vec![redis.to_owned()];
        config.redis.namespace = format!("bench-stock-{}", std::process::id());
        config.redis.timeout = Duration::from_secs(2);
    }
    let server = Server::start(config).await.expect("server");
    let base = format!("http://{}", server.addr);
    let stock = server.state.stock.clone().expect("stock on");
    stock
        .store()
        .put_total("HTTP-HOT", units as i64, Precondition::Absent)
        .await
        .expect("put");
    if redis.is_some() {
        assert!(stock.gate().is_some(), "the Redis gate is on");
        stock.reconcile("HTTP-HOT").await.expect("gate loaded");
    }
    let url = format!("{base}/v1/stock/HTTP-HOT/reservations");
    let (won, seconds) = drive(&url, callers, u64::MAX).await;
    assert_eq!(won as usize, units, "exactly the units sold over HTTP");
    let c = stock.counts("HTTP-HOT").await.expect("counts");
    assert_eq!((c.available, c.held), (0, units as i64));
    server.shutdown().await.expect("shutdown");
    units as f64 / seconds
}

/// The ceiling of HTTP itself on this machine, same client, same
/// concurrency: a plain axum handler that answers every reservation 201
/// with a small body and keeps no state. No design of the stock path can
/// beat it; it says how much of the distance to Redis is HTTP's.
async fn bare_http_phase(units: usize, callers: usize) -> f64 {
    use axum::http::StatusCode;
    let app = axum::Router::new().route(
        "/v1/stock/{sku}/reservations",
        axum::routing::post(|| async { (StatusCode::CREATED, r#"{"id":"r"}"#) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/v1/stock/HOT/reservations");
    let (won, seconds) = drive(&url, callers, units as u64).await;
    assert_eq!(won as usize, units);
    server.abort();
    units as f64 / seconds
}

/// `redis-benchmark` running a check-and-decrement script by EVALSHA.
fn redis_phase(units: usize, callers: usize) -> f64 {
    const SCRIPT: &str = "local n = tonumber(redis.call('GET', KEYS[1]) or '0') \
        if n >= tonumber(ARGV[1]) then return redis.call('DECRBY', KEYS[1], ARGV[1]) end return -1";
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let sha = cli(&["SCRIPT", "LOAD", SCRIPT]);
    // Enough stock that every call decrements (the work being compared).
    cli(&["SET", "{bench}:stock", &(units * 10).to_string()]);
    let out = Command::new("redis-benchmark")
        .args(["-q", "-n", &units.to_string(), "-c", &callers.to_string()])
        .args(["EVALSHA", &sha, "1", "{bench}:stock", "1"])
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    // "EVALSHA …: 81234.57 requests per second, p50=…"
    text.rsplit('\r')
        .chain(text.lines())
        .find_map(|l| {
            let (_, rest) = l.split_once(": ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("redis-benchmark said: {text}"))
}

fn main() {
    sqlx::any::install_default_drivers();
    let units = env("STOCK_BENCH_UNITS", 20_000);
    let callers = env("STOCK_BENCH_CONCURRENCY", 64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("one hot SKU, {units} units, {callers} concurrent callers");
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        );
        sql_phase("sqlite", &sqlite, units, callers).await;
        let pg = pg_schema("rampart_bench_stock").await;
        sql_phase("postgres", &pg, units, callers).await;
        let pg = pg_schema("rampart_bench_stock_http").await;
        let http = http_phase(&pg, None, units, callers).await;
        let pg = pg_schema("rampart_bench_stock_gated").await;
        let gated = http_phase(&pg, Some("redis://127.0.0.1:6379"), units, callers).await;
        let bare = bare_http_phase(units, callers).await;
        let redis = redis_phase(units, callers);
        let row = |name: &str, rate: f64| {
            println!(
                "{name:<30}{rate:>9.0} /s   vs EVALSHA {:.2}   vs bare HTTP {:.2}",
                rate / redis,
                rate / bare
            );
        };
        row("http (pg, grouped)", http);
        row("http (pg, grouped, redis gate)", gated);
        row("bare axum handler", bare);
        println!("{:<30}{redis:>9.0} /s", "redis-benchmark EVALSHA");
    });
}
