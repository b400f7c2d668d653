//! `stampede`: a hot key expires under heavy load (cache breakdown). The
//! naive cache sends every request that misses during the reload to the
//! database; rampart sends one, and with `grace` the readers never wait
//! for it.

use std::time::Duration;

use crate::config::Config;
use crate::drill::keys::KeySpace;
use crate::drill::open_loop::ClientRetry;

use super::measure::Half;
use super::{distant_source, unguarded, users, Figure, Load, Mode, Plan, Scenario};

/// How long the hot key lives: it expires once a second, all run long.
const TTL: Duration = Duration::from_secs(1);

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "stampede",
    incident: "a hot key expires under heavy load and every request that misses goes to the \
               database at once (cache breakdown)",
    guards: "single-flight (one load per key; the lease across instances) and grace \
             (stale-while-revalidate: the expiring key is refreshed once, in the background)",
    plan,
    configure,
    load: Load::Users,
    client: |_| ClientRetry::Never,
    figures,
};

fn plan(quick: bool) -> Plan {
    Plan {
        rows: 1_000,
        keys: KeySpace::Fixed("1".to_owned()),
        rate: if quick { 500.0 } else { 1_000.0 },
        duration: Duration::from_secs(if quick { 6 } else { 20 }),
        connections: 512,
        request_timeout: Duration::from_secs(5),
        network: distant_source(),
        source: Vec::new(),
        redis: None,
        incident: None,
    }
}

fn configure(config: &mut Config, mode: Mode) {
    for r in users(config) {
        r.cache.ttl = TTL;
        r.cache.jitter = 0.0;
        if mode == Mode::Naive {
            unguarded(r);
            r.guards.single_flight = false;
        }
    }
}

fn figures(plan: &Plan, half: &Half) -> Vec<Figure> {
    let expiries = (plan.duration.as_secs_f64() / TTL.as_secs_f64()).max(1.0);
    vec![Figure {
        label: "source loads per expiry",
        value: format!("{:.1}", half.source_loads as f64 / expiries),
    }]
}
