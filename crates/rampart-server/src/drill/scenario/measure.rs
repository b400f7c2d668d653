//! One half of a scenario: rampart started over the stage with this
//! half's config, the fault timeline played while the open loop runs, and
//! the source watched from rampart's own counters (loads that reached
//! PostgreSQL, pool waits, breaker transitions) every second.

use std::time::Duration;

use rampart::breaker::State;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::drill::config::{DrillConfig, DrillError};
use crate::drill::fault_proxy::Fault;
use crate::drill::report::DrillReport;
use crate::server::Server;
use crate::state::AppState;

use super::stage::{RedisFault, SourceFault, Stage};
use super::{Drive, Driven, Figure, Load, Mode, Plan, Scenario};

/// The resource every scenario reads.
const RESOURCE: &str = "users";
/// The breaker in front of a single Redis node (`app.rs`).
const REDIS_BREAKER: &str = "redis";
/// How often the breaker's state is looked at (time-to-open resolution).
const BREAKER_POLL: Duration = Duration::from_millis(10);
/// The key draws' seed: both halves ask for the same keys in the same
/// order, so what differs between them is the guards, not the dice (and a
/// scenario can tell which of its requests asked for which keys).
pub(super) const KEY_SEED: u64 = 0x005E_ED0F_D211;

/// One second of the source, as rampart saw it.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SourceSecond {
    /// Seconds since the start of the load.
    pub t: u32,
    /// Loads that reached the source (finished ok or with an error).
    pub loads: u64,
    /// Of those, errors.
    pub load_errors: u64,
    /// Mean wait for a pool connection, ms (pool saturation).
    pub pool_wait_ms: f64,
    /// The breaker at the end of the second.
    pub breaker: &'static str,
}

/// One half's measurements.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Half {
    /// Naive or guarded.
    pub mode: Mode,
    /// The load generator's report, per-second series included.
    pub load: DrillReport,
    /// The source, per second.
    pub source: Vec<SourceSecond>,
    /// Loads that reached the source, whole run.
    pub source_loads: u64,
    /// From the incident's start to the breaker's first `open`, ms.
    pub breaker_open_after_ms: Option<u64>,
    /// Times the breaker opened.
    pub breaker_opens: u64,
    /// Times it let probes through (half-open).
    pub breaker_probes: u64,
    /// Times the breaker in front of Redis opened (0 without Redis).
    pub redis_breaker_opens: u64,
    /// From the start of the load to `/readyz` ready, ms (`None`: not in
    /// the run).
    pub ready_after_ms: Option<u64>,
    /// The start-up warm-up of the resource read, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmUp>,
    /// The scenario's own figures.
    pub figures: Vec<Figure>,
}

/// The warm-up of the resource read.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WarmUp {
    /// Keys warmed by the end of the run.
    pub keys_done: u64,
    /// Keys whose batch failed.
    pub keys_failed: u64,
    /// Keys it was to warm.
    pub expected: Option<u64>,
    /// From the start of the load to its end (done, or given up after
    /// failed batches), seconds; `None`: still running when the load ended.
    pub finished_after_secs: Option<f64>,
    /// The source's plain batch-read rate measured on this stage, rows/s.
    pub ceiling_rows_per_sec: Option<f64>,
}

/// One step of the timeline below the network.
#[derive(Clone, Copy)]
enum Step {
    Source(SourceFault),
    Redis(RedisFault),
}

/// Source counters at one instant.
#[derive(Clone, Copy, Default)]
struct Counters {
    loads: u64,
    errors: u64,
    wait_sum: f64,
    wait_count: u64,
}

fn counters(state: &AppState) -> Counters {
    let m = &state.metrics;
    let ok = m.load_duration.with_label_values(&[RESOURCE, "ok"]);
    let err = m.load_duration.with_label_values(&[RESOURCE, "error"]);
    let wait = m.pool_wait.with_label_values(&[RESOURCE]);
    Counters {
        loads: ok.get_sample_count() + err.get_sample_count(),
        errors: err.get_sample_count(),
        wait_sum: wait.get_sample_sum(),
        wait_count: wait.get_sample_count(),
    }
}

/// Times the breaker called `name` opened (from closed or half-open).
fn opens(state: &AppState, name: &str) -> u64 {
    transitions(state, name, State::Closed, State::Open)
        + transitions(state, name, State::HalfOpen, State::Open)
}

fn transitions(state: &AppState, name: &str, from: State, to: State) -> u64 {
    state
        .metrics
        .breaker_transitions
        .with_label_values(&[name, from.as_str(), to.as_str()])
        .get()
}

fn breaker_state(state: &AppState) -> State {
    state
        .resources
        .get(RESOURCE)
        .and_then(|r| r.cache.breaker().map(|b| b.state()))
        .unwrap_or(State::Disabled)
}

/// What the sampler saw.
struct Sampled {
    seconds: Vec<SourceSecond>,
    open_at: Option<Instant>,
    ready_at: Option<Instant>,
    warmed_at: Option<Instant>,
}

/// Whether the resource read has a warm-up that has finished.
fn warmed(state: &AppState) -> bool {
    state
        .resources
        .get(RESOURCE)
        .is_some_and(|r| r.config.warm.is_some() && r.warm.is_finished())
}

/// Samples the source every second (and the breaker every 10 ms) until
/// `stop`.
async fn sample(
    state: AppState,
    start: Instant,
    incident: Option<Instant>,
    stop: CancellationToken,
) -> Sampled {
    let mut tick = interval(BREAKER_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = counters(&state);
    let mut next_second = start + Duration::from_secs(1);
    let mut seconds = Vec::new();
    let (mut open_at, mut ready_at, mut warmed_at) = (None, None, None);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        if open_at.is_none()
            && incident.is_some_and(|at| now >= at)
            && breaker_state(&state) == State::Open
        {
            open_at = Some(now);
        }
        if ready_at.is_none() && state.is_ready() {
            ready_at = Some(now);
        }
        if warmed_at.is_none() && warmed(&state) {
            warmed_at = Some(now);
        }
        if now >= next_second {
            let c = counters(&state);
            let waits = c.wait_count.saturating_sub(last.wait_count);
            seconds.push(SourceSecond {
                t: u32::try_from(seconds.len()).unwrap_or(u32::MAX),
                loads: c.loads.saturating_sub(last.loads),
                load_errors: c.errors.saturating_sub(last.errors),
                pool_wait_ms: if waits == 0 {
                    0.0
                } else {
                    (c.wait_sum - last.wait_sum) * 1e3 / waits as f64
                },
                breaker: breaker_state(&state).as_str(),
            });
            last = c;
            next_second += Duration::from_secs(1);
        }
    }
    Sampled {
        seconds,
        open_at,
        ready_at,
        warmed_at,
    }
}

/// Runs one half of `scenario` on `stage`.
pub(super) async fn half(
    scenario: &Scenario,
    plan: &Plan,
    stage: &mut Stage,
    mode: Mode,
) -> Result<Half, DrillError> {
    let dir = std::env::temp_dir().join(format!(
        "rampart-drill-{}-{}-{}",
        std::process::id(),
        scenario.name,
        mode.as_str()
    ));
    let mut config = stage.config(dir.clone())?;
    (scenario.configure)(&mut config, mode);
    config.validate().map_err(|e| {
        DrillError::InvalidConfig(format!("{} {}: {e}", scenario.name, mode.as_str()))
    })?;
    stage.proxy.set(Fault::Pass);
    stage.source(SourceFault::Restore).await?;
    if plan.redis.is_some() {
        // Each half starts with Redis up and empty, whatever the last did.
        stage.redis(RedisFault::Restart).await?;
    }
    let ceiling = match config.resources.iter().find(|r| r.name == RESOURCE) {
        Some(resource) if config.warmup.enabled && resource.warm.is_some() => {
            stage.ceiling(resource).await?
        }
        _ => None,
    };
    let server = Server::start(config)
        .await
        .map_err(|e| DrillError::InvalidConfig(format!("starting rampart: {e}")))?;
    let outcome = drive(scenario, plan, stage, mode, &server, ceiling).await;
    stage.proxy.set(Fault::Pass);
    let restored = stage.source(SourceFault::Restore).await;
    let _ = server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    restored?;
    outcome
}

/// The half's load: the open loop of `GET`s on `users`, or the
/// scenario's own driver.
async fn load(
    scenario: &Scenario,
    plan: &Plan,
    mode: Mode,
    server: &Server,
) -> Result<Driven, DrillError> {
    match scenario.load {
        Load::Own(driver) => driver(Drive { plan, mode, server }).await,
        Load::Users => {
            let drill = DrillConfig {
                targets: vec![format!("http://{}/v1/r/users/{{key}}", server.addr)],
                keys: plan.keys.clone(),
                connections: plan.connections,
                duration: plan.duration,
                max_requests: None,
                warmup: Duration::ZERO,
                request_timeout: plan.request_timeout,
                rate: Some(plan.rate),
                retry: (scenario.client)(mode),
                seed: Some(KEY_SEED),
                post: None,
            };
            drill.validate()?;
            Ok(Driven {
                load: crate::drill::run(&drill).await?,
                figures: Vec::new(),
            })
        }
    }
}

async fn drive(
    scenario: &Scenario,
    plan: &Plan,
    stage: &mut Stage,
    mode: Mode,
    server: &Server,
    ceiling: Option<f64>,
) -> Result<Half, DrillError> {
    let state = server.state.clone();
    let before = counters(&state);
    let start = Instant::now();
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(sample(
        state.clone(),
        start,
        plan.incident.map(|(from, _)| start + from),
        stop.clone(),
    ));
    let network = stage.proxy.play(&plan.network);
    let mut steps: Vec<(Duration, Step)> = plan
        .source
        .iter()
        .map(|&(at, f)| (at, Step::Source(f)))
        .chain(
            plan.redis
                .iter()
                .flatten()
                .map(|&(at, f)| (at, Step::Redis(f))),
        )
        .collect();
    steps.sort_by_key(|(at, _)| *at);
    let timeline = async {
        for (at, step) in steps {
            sleep_until(start + at).await;
            match step {
                Step::Source(fault) => stage.source(fault).await?,
                Step::Redis(fault) => stage.redis(fault).await?,
            }
        }
        Ok::<(), DrillError>(())
    };
    // The load and the timeline side by side in this task: the load
    // borrows the plan and the server, the timeline the stage.
    let (driven, played) = tokio::join!(load(scenario, plan, mode, server), timeline);
    network.abort();
    stop.cancel();
    let sampled = sampler
        .await
        .map_err(|e| DrillError::Internal(format!("sampler: {e}")))?;
    played?;
    let Driven { load, figures } = driven?;
    let after = counters(&state);
    let probes = transitions(&state, RESOURCE, State::Open, State::HalfOpen);
    let since_start = |at: Instant| at.saturating_duration_since(start);
    let warm = state
        .resources
        .get(RESOURCE)
        .filter(|r| r.config.warm.is_some())
        .map(|r| WarmUp {
            keys_done: r.warm.keys_done(),
            keys_failed: r.warm.keys_failed(),
            expected: r.warm.expected(),
            finished_after_secs: sampled.warmed_at.map(|at| since_start(at).as_secs_f64()),
            ceiling_rows_per_sec: ceiling,
        });
    let mut half = Half {
        mode,
        load,
        source: sampled.seconds,
        source_loads: after.loads.saturating_sub(before.loads),
        breaker_open_after_ms: match (sampled.open_at, plan.incident) {
            (Some(at), Some((from, _))) => Some(
                u64::try_from(at.saturating_duration_since(start + from).as_millis())
                    .unwrap_or(u64::MAX),
            ),
            _ => None,
        },
        breaker_opens: opens(&state, RESOURCE),
        breaker_probes: probes,
        redis_breaker_opens: opens(&state, REDIS_BREAKER),
        ready_after_ms: sampled
            .ready_at
            .map(|at| u64::try_from(since_start(at).as_millis()).unwrap_or(u64::MAX)),
        warm,
        figures,
    };
    let own = (scenario.figures)(plan, &half);
    half.figures.extend(own);
    Ok(half)
}

/// Requests and source loads in the incident window, from the series.
pub(super) fn in_window(plan: &Plan, half: &Half) -> (u64, u64, u64) {
    let Some((from, to)) = plan.incident else {
        return (0, 0, 0);
    };
    let (from, to) = (from.as_secs(), to.as_secs());
    let inside = |t: u32| (from..to).contains(&u64::from(t));
    let requests = half
        .load
        .series
        .iter()
        .filter(|s| inside(s.t))
        .map(|s| s.requests)
        .sum();
    let sent = half
        .load
        .series
        .iter()
        .filter(|s| inside(s.t))
        .map(|s| s.sent)
        .sum();
    let loads = half
        .source
        .iter()
        .filter(|s| inside(s.t))
        .map(|s| s.loads)
        .sum();
    (requests, sent, loads)
}

/// Seconds from `to` (the fault lifted) until the load is well again for
/// good: the first second from which every later one passes `well`; `None`
/// if the run ends unwell.
pub(super) fn well_again_after(
    half: &Half,
    to: Duration,
    well: impl Fn(&crate::drill::Second) -> bool,
) -> Option<u64> {
    half.load
        .series
        .iter()
        .filter(|s| u64::from(s.t) >= to.as_secs())
        .rev()
        .take_while(|s| well(s))
        .last()
        .map(|s| u64::from(s.t).saturating_sub(to.as_secs()))
}
