//! `panic-storm`: a share of the rows makes the service's own code panic
//! (`[resource.faults] panic_share`: a poison row, the same keys every
//! time), and the clients retry every 500 at once. The question is what
//! the panics cost the *other* requests, and whether the process lives.
//!
//! What rampart does with a panicking load in either half: the load runs
//! under `catch_unwind` (`guarded.rs`, and `flight.rs` with single-flight)
//! and the request under the HTTP layer's own, so the panic is a 500 for
//! that request and nothing else. Those catches are not switchable, and
//! the naive half does not need them off to be honest: a tokio task that
//! panics ends alone, so the Go-style "one panic kills the process" cannot
//! be replayed on a Rust service. What the panics can still do is the
//! avalanche of the document: an answer that is never cached, retried
//! three times at once by every client, loads the source again and again,
//! and the unrelated misses queue behind those loads.

use std::time::Duration;

use crate::cache::faults::FaultsConfig;
use crate::cache::keys::Key;
use crate::config::Config;
use crate::drill::keys::{KeySampler, KeySpace};

use super::measure::{Half, KEY_SEED};
use super::{distant_source, retry_storm, unguarded, users, Figure, Load, Mode, Plan, Scenario};

/// Share of the users whose loads panic (about 15 % of the Zipf requests
/// over 2,000 keys, key 4 among them).
const PANIC_SHARE: f64 = 0.2;

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "panic-storm",
    incident: "a share of requests panic and every client retries the 500s at once, three \
               times: the panicking keys are never cached, so each retry loads the source again \
               and the unrelated misses queue behind them (panics turning into an avalanche)",
    guards: "the panic contained to its request (catch_unwind in the load and the HTTP layer, \
             in both halves), the client's retry budget with back-off, single-flight sharing \
             one panicking load among the callers of a key, the bulkhead bounding the loads",
    plan,
    configure,
    load: Load::Users,
    client: retry_storm::client,
    figures,
};

fn plan(quick: bool) -> Plan {
    Plan {
        rows: 2_000,
        keys: KeySpace::Zipf {
            max: 2_000,
            exponent: 0.99,
        },
        // Near what the source gives this service on a small, loaded
        // machine (about 120 loads/s through the proxy's latency, measured
        // in the guarded half): the naive half's retries of the panics push
        // the pool past it (waits of seconds), the guarded half's do not.
        rate: if quick { 200.0 } else { 250.0 },
        // The full run is long enough for the naive half's queue at the
        // pool to build up; the quick one shows the retries' loads.
        duration: Duration::from_secs(if quick { 6 } else { 30 }),
        connections: 1_024,
        request_timeout: Duration::from_secs(5),
        // The source's pool is what the retried loads and the unrelated
        // misses share.
        network: distant_source(),
        source: Vec::new(),
        redis: None,
        incident: None,
    }
}

fn configure(config: &mut Config, mode: Mode) {
    for r in users(config) {
        r.faults.panic_share = PANIC_SHARE;
        if mode == Mode::Naive {
            unguarded(r);
            r.guards.single_flight = false;
        }
    }
}

/// Requests (of the first `requests` drawn) whose key panics: the load's
/// key draws replayed from the scenario's seed. A panicking key never
/// answers 200 (no copy is kept of a panic, none is cached), so every
/// other failure is one of an unrelated key.
fn panicking_requests(plan: &Plan, requests: u64) -> u64 {
    let faults = FaultsConfig {
        panic_share: PANIC_SHARE,
    };
    let Ok(mut keys) = KeySampler::new(&plan.keys, KEY_SEED) else {
        return 0;
    };
    (0..requests)
        .filter(|_| {
            let key = keys.next_key();
            key.parse().is_ok_and(|id| faults.panics(&Key::Int(id)))
        })
        .count() as u64
}

fn figures(plan: &Plan, half: &Half) -> Vec<Figure> {
    let load = &half.load;
    let panicking = panicking_requests(plan, load.requests);
    let unrelated = load.requests.saturating_sub(panicking);
    let unrelated_failed = load.errors.saturating_sub(panicking);
    // The last second of the load: the service still answering?
    let last = load
        .series
        .iter()
        .rev()
        .find(|s| s.requests > 0)
        .map_or(0, |s| s.requests.saturating_sub(s.errors));
    let pct = |n: u64, of: u64| n as f64 * 100.0 / of.max(1) as f64;
    vec![
        Figure {
            label: "requests for panicking keys",
            value: format!("{panicking} ({:.1} %)", pct(panicking, load.requests)),
        },
        Figure {
            label: "failed unrelated requests",
            value: format!(
                "{unrelated_failed} of {unrelated} ({:.2} %)",
                pct(unrelated_failed, unrelated)
            ),
        },
        Figure {
            label: "still answering at the end",
            value: if last > 0 {
                format!("yes ({last} ok in the last second)")
            } else {
                "no".to_owned()
            },
        },
        Figure {
            label: "source loads per request",
            value: format!(
                "{:.2}",
                half.source_loads as f64 / load.requests.max(1) as f64
            ),
        },
    ]
}
