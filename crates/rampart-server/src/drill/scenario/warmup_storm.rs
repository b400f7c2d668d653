//! `warmup-storm`: the service starts with every user to warm while
//! foreground traffic already arrives. The document's warm-up (a payment
//! service down for 47 minutes) fired one GET per key from 500 workers,
//! with nothing backing off, no readiness gate and no breaker; rampart's
//! reads 500 keys a query, two queries at a time, halving that while the
//! source pool makes loads wait or the foreground p99 climbs, and keeps
//! `/readyz` shut until 90 % is warm.
//!
//! Both halves run the real warm-up (`cache/warmup.rs`, `rampart::warm`);
//! the naive one with the document's settings: `[warmup] concurrency =
//! 500`, `batch_size = 1`, pressure thresholds no signal reaches (the
//! back-off never fires), `ready_deadline = 0` (ready at once, warm or
//! not), and no breaker or bulkhead.

use std::time::Duration;

use crate::config::Config;
use crate::drill::keys::KeySpace;
use crate::drill::open_loop::ClientRetry;

use super::measure::Half;
use super::{unguarded, users, Figure, Load, Mode, Plan, Scenario};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "warmup-storm",
    incident: "the service starts with every key to warm under foreground traffic: 500 warm-up \
               workers, one query per key, no back-off, no readiness gate, no breaker, exhaust \
               the source's pool and the foreground waits behind them",
    guards: "the bounded warm-up (batches of 500 keys, 2 at a time, AIMD back-off on pool wait \
             and foreground p99) and the readiness gate (ready at 90 % warm)",
    plan,
    configure,
    load: Load::Users,
    client: |_| ClientRetry::Never,
    figures,
};

fn rows(quick: bool) -> u64 {
    if quick {
        50_000
    } else {
        1_000_000
    }
}

fn plan(quick: bool) -> Plan {
    let rows = rows(quick);
    Plan {
        rows,
        keys: KeySpace::Zipf {
            max: rows,
            exponent: 0.99,
        },
        rate: if quick { 100.0 } else { 200.0 },
        duration: Duration::from_secs(if quick { 6 } else { 60 }),
        connections: 1_024,
        request_timeout: Duration::from_secs(5),
        network: Vec::new(),
        source: Vec::new(),
        redis: None,
        incident: None,
    }
}

/// A pressure threshold no wait reaches: the back-off never fires.
const NEVER: Duration = Duration::from_secs(3_600);

fn configure(config: &mut Config, mode: Mode) {
    config.warmup.enabled = true;
    for r in &mut config.resources {
        // Only the users are warmed: every one of them.
        let all = r.name == "users";
        r.warm = all.then(|| "SELECT id FROM users ORDER BY id".to_owned());
        r.warm_count = all.then(|| "SELECT COUNT(*) FROM users".to_owned());
    }
    if mode == Mode::Naive {
        let w = &mut config.warmup;
        w.concurrency = 500;
        w.batch_size = 1;
        w.max_keys_per_sec = 0;
        w.pressure_pool_wait = NEVER;
        w.pressure_foreground_p99 = NEVER;
        w.pressure_foreground_ratio = 0.0;
        w.ready_deadline = Duration::ZERO;
        for r in users(config) {
            unguarded(r);
        }
    }
}

fn figures(plan: &Plan, half: &Half) -> Vec<Figure> {
    let secs = |s: f64| format!("{s:.1} s");
    let mut figures = vec![Figure {
        label: "time to ready",
        value: half
            .ready_after_ms
            .map_or_else(|| "not in the run".to_owned(), |ms| secs(ms as f64 / 1e3)),
    }];
    let Some(warm) = &half.warm else {
        return figures;
    };
    let took = warm
        .finished_after_secs
        .unwrap_or(plan.duration.as_secs_f64());
    let rate = warm.keys_done as f64 / took.max(1e-3);
    figures.push(Figure {
        label: "keys warmed",
        value: match warm.expected {
            Some(expected) => format!("{} of {expected}", warm.keys_done),
            None => warm.keys_done.to_string(),
        },
    });
    figures.push(Figure {
        label: "keys in failed batches",
        value: warm.keys_failed.to_string(),
    });
    // Done, or given up after failed batches in a row (`keys warmed`
    // tells which).
    figures.push(Figure {
        label: "warm-up ended after",
        value: warm
            .finished_after_secs
            .map_or_else(|| "not in the run".to_owned(), secs),
    });
    figures.push(Figure {
        label: "warm-up keys/s",
        value: format!("{rate:.0}"),
    });
    figures.push(Figure {
        label: "source ceiling (plain client)",
        value: warm
            .ceiling_rows_per_sec
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.0} rows/s")),
    });
    figures.push(Figure {
        label: "warm-up / ceiling",
        value: warm
            .ceiling_rows_per_sec
            .map_or_else(|| "-".to_owned(), |c| format!("{:.2}", rate / c.max(1e-9))),
    });
    figures
}
