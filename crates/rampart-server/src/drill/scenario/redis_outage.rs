//! `redis-outage`: the shared cache tier dies (a private `redis-server`,
//! SIGKILLed) under load and comes back empty 20 s later. Naive, every
//! read still tries Redis first — a tier read, a lease, a fill, each
//! waiting on a reconnect that cannot succeed — and then the source, with
//! no breaker or bulkhead in front of it either. Guarded, the Redis
//! breaker opens after a run of failures, reads go L1 → source at once,
//! and probes find Redis again when it is back.

use std::time::Duration;

use crate::config::Config;
use crate::drill::keys::KeySpace;
use crate::drill::open_loop::ClientRetry;
use crate::drill::report::fmt_micros;

use super::measure::{in_window, well_again_after, Half};
use super::stage::RedisFault;
use super::{unguarded, users, Figure, Load, Mode, Plan, Scenario};

/// The scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "redis-outage",
    incident: "the Redis cache tier is killed for 20 s under load, then comes back empty: with \
               no breaker every read keeps trying the dead tier before the database",
    guards: "the breaker in front of Redis (open after consecutive failures, probes to close) \
             and, behind it, the source's breaker and bulkhead",
    plan,
    configure,
    load: Load::Users,
    client: |_| ClientRetry::Never,
    figures,
};

/// Users read, every one warmed into Redis at start.
const ROWS: u64 = 1_000;

fn window(quick: bool) -> (Duration, Duration) {
    if quick {
        (Duration::from_secs(2), Duration::from_secs(5))
    } else {
        (Duration::from_secs(10), Duration::from_secs(30))
    }
}

fn plan(quick: bool) -> Plan {
    let (from, to) = window(quick);
    Plan {
        rows: ROWS,
        keys: KeySpace::Uniform { max: ROWS },
        rate: if quick { 150.0 } else { 200.0 },
        duration: to + Duration::from_secs(if quick { 2 } else { 15 }),
        connections: 1_024,
        request_timeout: Duration::from_secs(5),
        network: Vec::new(),
        source: Vec::new(),
        redis: Some(vec![(from, RedisFault::Kill), (to, RedisFault::Restart)]),
        incident: Some((from, to)),
    }
}

fn configure(config: &mut Config, mode: Mode) {
    // Every user in Redis before the kill: the tier is what serves.
    config.warmup.enabled = true;
    for r in users(config) {
        // An L1 of a tenth of the users: nine reads in ten need the tier,
        // as in a fleet whose instances each hold a slice in memory.
        r.cache.l1_capacity = (ROWS / 10) as usize;
        r.cache.ttl = Duration::from_secs(120);
        if mode == Mode::Naive {
            unguarded(r);
        }
    }
    config.redis.breaker_enabled = mode == Mode::Guarded;
}

fn figures(plan: &Plan, half: &Half) -> Vec<Figure> {
    let Some((from, to)) = plan.incident else {
        return Vec::new();
    };
    let inside = |t: u32| (from.as_secs()..to.as_secs()).contains(&u64::from(t));
    let (requests, _, loads) = in_window(plan, half);
    let outage: Vec<_> = half.load.series.iter().filter(|s| inside(s.t)).collect();
    let errors: u64 = outage.iter().map(|s| s.errors).sum();
    // The typical second, not the worst: one slow second (the breaker
    // still closed, a busy machine) says little about the outage.
    let mut p99s: Vec<u64> = outage.iter().map(|s| s.p99_us).collect();
    p99s.sort_unstable();
    let median_p99 = p99s.get(p99s.len() / 2).copied().unwrap_or(0);
    let before: Vec<_> = half
        .load
        .series
        .iter()
        .filter(|s| u64::from(s.t) < from.as_secs())
        .collect();
    let loads_before: u64 = half
        .source
        .iter()
        .filter(|s| u64::from(s.t) < from.as_secs())
        .map(|s| s.loads)
        .sum();
    // Well again: no errors, and p99 back under twice the worst second
    // before the kill (at least 20 ms, for a quiet machine's noise).
    let normal = (2 * before.iter().map(|s| s.p99_us).max().unwrap_or(0)).max(20_000);
    let recovered = well_again_after(half, to, |s| s.errors == 0 && s.p99_us <= normal);
    let per_second = |n: u64, secs: u64| format!("{:.0}", n as f64 / secs.max(1) as f64);
    vec![
        Figure {
            label: "errors during the outage",
            value: format!("{:.1} %", errors as f64 * 100.0 / requests.max(1) as f64),
        },
        Figure {
            label: "median second's p99, outage",
            value: fmt_micros(median_p99),
        },
        Figure {
            label: "source loads/s, before / outage",
            value: format!(
                "{} / {}",
                per_second(loads_before, from.as_secs()),
                per_second(loads, (to - from).as_secs())
            ),
        },
        Figure {
            label: "Redis breaker opened",
            value: half.redis_breaker_opens.to_string(),
        },
        Figure {
            label: "well again after Redis is back",
            value: recovered.map_or_else(|| "not in the run".to_owned(), |s| format!("{s} s")),
        },
    ]
}
