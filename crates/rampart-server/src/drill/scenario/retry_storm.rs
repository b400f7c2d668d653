//! `retry-storm`: the source starts failing and the clients retry every
//! error at once, three times: the failing source now gets up to four
//! times the load, on top of the service's own misses. Guarded, the
//! client retries only within a budget (20 % of its requests plus a
//! floor), after a jittered back-off, and rampart's breaker stops the
//! loads that reach the source.

use std::time::Duration;

use rampart::limit::{Backoff, RetryBudgetConfig};

use crate::config::Config;
use crate::drill::keys::KeySpace;
use crate::drill::open_loop::ClientRetry;

use super::measure::{in_window, Half};
use super::stage::SourceFault;
use super::{unguarded, users, Figure, Load, Mode, Plan, Scenario};

/// Retries per request at most, both clients.
const MAX_RETRIES: u32 = 3;

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "retry-storm",
    incident: "the source fails and every client retries at once, three times: the retries, \
               not the users, multiply the load on the failing source",
    guards: "client retry budget (20 % of requests + a floor, full-jitter back-off) and the \
             circuit breaker in front of the source",
    plan,
    configure,
    load: Load::Users,
    client,
    figures,
};

fn window(quick: bool) -> (Duration, Duration) {
    if quick {
        (Duration::from_secs(2), Duration::from_secs(7))
    } else {
        (Duration::from_secs(10), Duration::from_secs(30))
    }
}

fn plan(quick: bool) -> Plan {
    let (from, to) = window(quick);
    Plan {
        rows: 20_000,
        // Mostly misses: the load the source sees is the requests'.
        keys: KeySpace::Uniform { max: 20_000 },
        rate: if quick { 100.0 } else { 200.0 },
        duration: to + Duration::from_secs(if quick { 3 } else { 10 }),
        connections: 512,
        request_timeout: Duration::from_secs(5),
        network: Vec::new(),
        source: vec![(from, SourceFault::Break), (to, SourceFault::Restore)],
        redis: None,
        incident: Some((from, to)),
    }
}

fn configure(config: &mut Config, mode: Mode) {
    for r in users(config) {
        if mode == Mode::Naive {
            unguarded(r);
        }
    }
}

/// Naive: every error retried at once; guarded: within the budget, after
/// a back-off (also `panic-storm`'s clients).
pub(super) fn client(mode: Mode) -> ClientRetry {
    match mode {
        Mode::Naive => ClientRetry::Immediate { max: MAX_RETRIES },
        Mode::Guarded => ClientRetry::Budgeted {
            max: MAX_RETRIES,
            budget: RetryBudgetConfig::default(),
            backoff: Backoff::default(),
        },
    }
}

fn figures(plan: &Plan, half: &Half) -> Vec<Figure> {
    let (requests, sent, loads) = in_window(plan, half);
    let per = |n: u64| format!("{:.2}", n as f64 / requests.max(1) as f64);
    vec![
        Figure {
            label: "HTTP sent per request, failing",
            value: per(sent),
        },
        Figure {
            label: "source loads per request, failing",
            value: per(loads),
        },
    ]
}
