//! `db-outage`: the database stops answering (a stall: a dead host behind
//! a live network) while traffic goes on. Without a breaker every miss
//! waits for its timeout and holds a connection; the service goes down
//! with its dependency and takes time to come back.

use std::time::Duration;

use crate::config::Config;
use crate::drill::fault_proxy::Fault;
use crate::drill::keys::KeySpace;
use crate::drill::open_loop::ClientRetry;

use super::measure::{in_window, well_again_after, Half};
use super::{unguarded, users, Figure, Load, Mode, Plan, Scenario};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "db-outage",
    incident: "the database stalls for 30 s under load: with no breaker and nothing kept, every \
               request waits for its timeout and fails (a dead dependency taking the service down)",
    guards: "circuit breaker (open after consecutive failures, probes to close), bulkhead, \
             and stale-if-error / stale-if-slow (answers from the kept copy)",
    plan,
    configure,
    load: Load::Users,
    client: |_| ClientRetry::Never,
    figures,
};

fn window(quick: bool) -> (Duration, Duration) {
    if quick {
        (Duration::from_secs(3), Duration::from_secs(9))
    } else {
        (Duration::from_secs(10), Duration::from_secs(40))
    }
}

fn plan(quick: bool) -> Plan {
    let (from, to) = window(quick);
    Plan {
        rows: 2_000,
        keys: KeySpace::Zipf {
            max: 2_000,
            exponent: 0.99,
        },
        rate: if quick { 100.0 } else { 200.0 },
        duration: to + Duration::from_secs(if quick { 4 } else { 15 }),
        connections: 1_024,
        request_timeout: Duration::from_secs(6),
        network: vec![(from, Fault::Stall), (to, Fault::Pass)],
        source: Vec::new(),
        redis: None,
        incident: Some((from, to)),
    }
}

fn configure(config: &mut Config, mode: Mode) {
    for r in users(config) {
        // Entries expire during the outage, so it is felt.
        r.cache.ttl = Duration::from_secs(2);
        r.cache.jitter = 0.0;
        if mode == Mode::Naive {
            unguarded(r);
        }
    }
}

fn figures(plan: &Plan, half: &Half) -> Vec<Figure> {
    let Some((from, to)) = plan.incident else {
        return Vec::new();
    };
    let inside = |t: u32| (from.as_secs()..to.as_secs()).contains(&u64::from(t));
    let (requests, _, _) = in_window(plan, half);
    let errors: u64 = half
        .load
        .series
        .iter()
        .filter(|s| inside(s.t))
        .map(|s| s.errors)
        .sum();
    let recovered = well_again_after(half, to, |s| s.errors == 0);
    vec![
        Figure {
            label: "errors during the outage",
            value: format!("{:.1} %", errors as f64 * 100.0 / requests.max(1) as f64),
        },
        Figure {
            label: "error-free again after",
            value: recovered.map_or_else(|| "not in the run".to_owned(), |s| format!("{s} s")),
        },
    ]
}
