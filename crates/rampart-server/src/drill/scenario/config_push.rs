//! `config-push`: a good change and then a bad one pushed through the
//! config center to many services at once (the source document's bad
//! config push; here the bad version is a connection limit of zero).
//!
//! Both halves run the same server and the same client,
//! [`rampart_client::ConfigWatcher`], one per watching service, each on
//! its own connection. Naive: the watchers take whatever arrives (the
//! client built without a validator, as a service that only deserializes
//! would run). Guarded: each watcher has a validator, so the bad version is
//! refused where it lands and the last good one stays in force. The bad
//! version passes the server's checks in both halves (no schema on the
//! namespace): the client's guard is what is shown.
//!
//! Figures: the good change's propagation (PUT sent → each watcher's new
//! value, the table's p50/p99), the watchers running the bad version after
//! it, and those still on the last good one.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::FutureExt;
use rampart_client::{Change, Client, ConfigWatcher, Precondition};
use serde::Deserialize;
use serde_json::json;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use crate::config::{Config, Secret};
use crate::drill::config::DrillError;
use crate::drill::keys::KeySpace;
use crate::drill::open_loop::ClientRetry;
use crate::drill::report::DrillReport;
use crate::drill::series::{Recorder, Sample};

use super::{Drive, Driven, DriverFuture, Figure, Load, Mode, Plan, Scenario};

/// The namespace pushed to, one per half (the halves share the stage's
/// database, so the second would find the first's).
fn namespace(mode: Mode) -> String {
    format!("drill-push-{}", mode.as_str())
}
/// The admin token both halves' servers are given, for the pushes.
const TOKEN: &str = "rampart-drill-config-push";
/// How long a watcher may take to answer a change before it counts as
/// missed.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "config-push",
    incident: "a bad configuration (a connection limit of zero) is pushed to every watching \
               service at once, and each takes it as it arrives",
    guards: "the config client's validator (a refused version is reported, the last known good \
             stays in force) on top of long-poll propagation",
    plan,
    configure,
    load: Load::Own(drive),
    client: |_| ClientRetry::Never,
    figures: |_, _| Vec::new(),
};

fn plan(quick: bool) -> Plan {
    Plan {
        // The stage needs a source; nothing reads it here.
        rows: 100,
        keys: KeySpace::Fixed("1".to_owned()),
        // Pushes, not requests: two, whatever the rate.
        rate: 1.0,
        duration: Duration::from_secs(if quick { 6 } else { 15 }),
        // Watching services, each on its own connection.
        connections: if quick { 200 } else { 1_000 },
        request_timeout: ANSWER_WITHIN,
        network: Vec::new(),
        source: Vec::new(),
        redis: None,
        incident: None,
    }
}

fn configure(config: &mut Config, _mode: Mode) {
    config.server.admin_token = Some(Secret::new(TOKEN));
    config.config_center.enabled = true;
    // Every watcher parks; none is turned away.
    config.config_center.max_watchers = config.config_center.max_watchers.max(10_000);
}

/// What the watching services read: the limits they enforce.
#[derive(Debug, Deserialize)]
struct Limits {
    max_connections: u32,
    timeout_ms: u64,
}

/// The guarded watchers' check: a limit that refuses every request, or
/// gives none time to finish, is not a configuration.
fn sane(limits: &Limits) -> Result<(), String> {
    if limits.max_connections == 0 {
        return Err("max_connections must be at least 1".to_owned());
    }
    if limits.timeout_ms == 0 {
        return Err("timeout_ms must be at least 1".to_owned());
    }
    Ok(())
}

fn drive(drive: Drive<'_>) -> DriverFuture<'_> {
    run(drive).boxed()
}

fn change(reason: &str) -> Change {
    Change {
        author: "rampart drill".to_owned(),
        reason: reason.to_owned(),
        rollback_plan: "roll back to the previous version".to_owned(),
    }
}

/// Waits until `count` watchers are parked on the server (each watcher's
/// long-poll is in and waiting), or the deadline.
async fn parked(drive: &Drive<'_>, count: usize, deadline: Instant) {
    let registry = &drive.server.state.config_center.registry;
    while registry.parked() < count && Instant::now() < deadline {
        sleep(Duration::from_millis(10)).await;
    }
}

fn internal(what: &str) -> impl FnOnce(rampart_client::ClientError) -> DrillError + '_ {
    move |e| DrillError::Internal(format!("config-push: {what}: {e}"))
}

async fn run(drive: Drive<'_>) -> Result<Driven, DrillError> {
    let base = format!("http://{}", drive.server.addr);
    let ns = namespace(drive.mode);
    let ns = ns.as_str();
    let watchers = drive.plan.connections;
    let admin = Client::builder([base.clone()])
        .token(TOKEN)
        .build()
        .map_err(internal("client"))?;
    // Seconds of the run count from here, as the source sampler's do.
    let start = Instant::now();
    let good = json!({ "max_connections": 100, "timeout_ms": 500 });
    admin
        .put(ns, &good, &change("first version"), Precondition::Create)
        .await
        .map_err(internal("create the namespace"))?;
    let mut started = join_all((0..watchers).map(|i| {
        let base = base.clone();
        async move {
            // A client each: its own connection, as separate services.
            let client = Client::builder([base])
                .client_id(format!("service-{i}"))
                .build()?;
            let builder = ConfigWatcher::<Limits>::builder(client, ns)
                .wait(drive.plan.duration + ANSWER_WITHIN);
            match drive.mode {
                Mode::Naive => builder.start().await,
                Mode::Guarded => builder.validate(sane).start().await,
            }
        }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(internal("start a watcher"))?;
    parked(&drive, watchers, Instant::now() + ANSWER_WITHIN).await;

    let mut recorder = Recorder::new()?;
    let second = |at: Instant| u32::try_from(at.duration_since(start).as_secs()).unwrap_or(0);

    // The good change a second in (or once every watcher is parked), the
    // bad one half way through the run, then quiet to its end: the charts
    // show the two pushes on one time axis.
    sleep_until(start + Duration::from_secs(1)).await;
    let better = json!({ "max_connections": 200, "timeout_ms": 500 });
    // The watchers are looked at while the PUT is in flight: a watcher
    // answered before the PUT's own answer is back is timed as such.
    let sent = Instant::now();
    let deadline = sent + ANSWER_WITHIN;
    let card = change("more connections");
    let (put, took) = tokio::join!(
        admin.put(ns, &better, &card, Precondition::Version(1)),
        join_all(started.iter_mut().map(|w| async move {
            timeout_at(deadline, w.changed())
                .await
                .ok()
                .map(|_| Instant::now())
        })),
    );
    put.map_err(internal("the good change"))?;
    let mut latencies = Vec::with_capacity(watchers);
    for at in &took {
        let latency = at.map(|at| at.saturating_duration_since(sent));
        latencies.extend(latency);
        recorder.record(&Sample {
            second: second(sent),
            measured: true,
            latency_us: latency.map(|l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX)),
            error: latency.is_none(),
            stale: false,
            sent: 1,
        });
    }
    let updated = took.iter().filter(|t| t.is_some()).count();

    // The bad change, once every watcher is parked again.
    parked(&drive, watchers, Instant::now() + ANSWER_WITHIN).await;
    sleep_until(start + drive.plan.duration / 2).await;
    let bad = json!({ "max_connections": 0, "timeout_ms": 500 });
    let sent = Instant::now();
    let deadline = sent + ANSWER_WITHIN;
    // Handled: taken (the version moved to 3) or refused (counted in the
    // watcher's status); a guarded watcher's `changed()` does not fire
    // for a refusal, so each is looked at every few milliseconds.
    let card = change("tighten the limit");
    let (put, handled) = tokio::join!(
        admin.put(ns, &bad, &card, Precondition::Version(2)),
        join_all(started.iter_mut().map(|w| async move {
            loop {
                if w.version() == 3 || w.status().refused > 0 {
                    return Some(Instant::now());
                }
                if Instant::now() >= deadline {
                    return None;
                }
                tokio::select! {
                    _ = w.changed() => {}
                    () = sleep(Duration::from_millis(5)) => {}
                }
            }
        })),
    );
    put.map_err(internal("the bad change"))?;
    let running_bad = started
        .iter()
        .filter(|w| w.get().max_connections == 0)
        .count();
    let kept_good = started
        .iter()
        .filter(|w| w.version() == 2 && w.get().max_connections == 200)
        .count();
    for w in &started {
        // A watcher running the bad version is the incident's error.
        recorder.record(&Sample {
            second: second(sent),
            measured: true,
            latency_us: None,
            error: w.get().max_connections == 0,
            stale: false,
            sent: 1,
        });
    }
    let all_handled = handled
        .iter()
        .map(|h| h.map(|at| at.saturating_duration_since(sent)))
        .collect::<Option<Vec<_>>>()
        .and_then(|all| all.into_iter().max());
    sleep_until(start + drive.plan.duration).await;
    drop(started);

    let elapsed = start.elapsed();
    let requests = 2 * watchers as u64;
    let errors = (watchers - updated + running_bad) as u64;
    let latency_us = recorder.percentiles();
    let load = DrillReport {
        targets: vec![format!("{base}/v1/config/{ns}")],
        connections: watchers,
        mode: "config watchers (a client and a connection each)".to_owned(),
        rate: None,
        sent: requests,
        series: recorder.series(),
        requests,
        errors,
        elapsed_secs: elapsed.as_secs_f64(),
        throughput_rps: requests as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_us,
        ..DrillReport::default()
    };
    let of = |n: usize| format!("{n} of {watchers}");
    latencies.sort();
    let figures = vec![
        Figure {
            label: "good change: watchers updated",
            value: of(updated),
        },
        Figure {
            label: "good change: propagation p99",
            value: crate::drill::report::fmt_micros(latency_us.p99),
        },
        Figure {
            label: "bad change: watchers running it",
            value: of(running_bad),
        },
        Figure {
            label: "bad change: last known good kept",
            value: of(kept_good),
        },
        Figure {
            label: "bad change: all watchers done in",
            value: all_handled.map_or_else(
                || "not within 10 s".to_owned(),
                |d| format!("{:.0} ms", d.as_secs_f64() * 1e3),
            ),
        },
    ];
    Ok(Driven { load, figures })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validator_refuses_the_bad_limits_and_takes_the_good() {
        let limits = |max_connections, timeout_ms| Limits {
            max_connections,
            timeout_ms,
        };
        assert!(sane(&limits(100, 500)).is_ok());
        assert!(sane(&limits(0, 500))
            .unwrap_err()
            .contains("max_connections"));
        assert!(sane(&limits(100, 0)).unwrap_err().contains("timeout_ms"));
    }
}
