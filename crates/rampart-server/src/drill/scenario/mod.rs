//! `rampart drill scenario NAME`: replay one of the source document's
//! incidents against rampart twice — **naive** (the same service with the
//! guards the broken system lacked switched off in its config, and the
//! naive client) then **guarded** (rampart's defaults) — on a private
//! PostgreSQL schema behind a [`FaultProxy`](super::FaultProxy), under the
//! same open-loop load and the same fault timeline, and compare.
//!
//! | file | what |
//! |---|---|
//! | `stage.rs` | the private schema, the proxy, source faults, the private Redis |
//! | `measure.rs` | one half: start rampart, play the timeline, run the load, sample the source |
//! | `table.rs` | the side-by-side table, JSON |
//! | `html.rs` | the self-contained HTML report (inline SVG, no script, no network) |
//! | `stampede.rs`, `db_outage.rs`, `retry_storm.rs`, `redis_outage.rs`, `flash_sale.rs`, `panic_storm.rs`, `warmup_storm.rs`, `config_push.rs` | the scenarios, one a file |
//!
//! Adding a scenario is one file defining a [`Scenario`] and one line in
//! [`SCENARIOS`]. Its load is the plan's open loop of `GET`s on `users`
//! ([`Load::Users`]) unless it brings its own driver ([`Load::Own`]).

mod config_push;
mod db_outage;
mod flash_sale;
mod html;
mod measure;
mod panic_storm;
mod redis_outage;
mod retry_storm;
mod stage;
mod stampede;
mod table;
mod warmup_storm;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use crate::config::Config;
use crate::start_error::StartError;

use super::config::DrillError;
use super::fault_proxy::Fault;
use super::keys::KeySpace;
use super::open_loop::ClientRetry;
use super::report::DrillReport;
use super::slo::{parse_slo, Slo};
use crate::server::Server;

pub use html::render as render_html;
pub use measure::{Half, SourceSecond, WarmUp};
pub use stage::{RedisFault, SourceFault, Stage, DEFAULT_PG_URL};
pub use table::{Comparison, Row};

/// Every scenario, in the order `--list` prints them.
pub const SCENARIOS: &[&Scenario] = &[
    &stampede::SCENARIO,
    &db_outage::SCENARIO,
    &retry_storm::SCENARIO,
    &redis_outage::SCENARIO,
    &flash_sale::SCENARIO,
    &panic_storm::SCENARIO,
    &warmup_storm::SCENARIO,
    &config_push::SCENARIO,
];

/// Which half of a scenario runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Guards off, naive client: the system of the incident.
    Naive,
    /// rampart's defaults.
    Guarded,
}

impl Mode {
    /// `naive` or `guarded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::Guarded => "guarded",
        }
    }
}

/// The load and the faults, the same for both halves.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Demo users in the private schema.
    pub rows: u64,
    /// Which users are read.
    pub keys: KeySpace,
    /// Open-loop arrival rate, requests per second.
    pub rate: f64,
    /// Length of each half's load.
    pub duration: Duration,
    /// Most client connections in use at once.
    pub connections: usize,
    /// A request's budget from its intended send time.
    pub request_timeout: Duration,
    /// The fault proxy's timeline, from the start of the load.
    pub network: Vec<(Duration, Fault)>,
    /// Faults at the source itself.
    pub source: Vec<(Duration, SourceFault)>,
    /// `Some`: rampart gets a private Redis as its L2, faulted at these
    /// times (an empty list: never); `None`: no Redis.
    pub redis: Option<Vec<(Duration, RedisFault)>>,
    /// When the incident is on (shaded in the charts; "time to breaker
    /// open" counts from its start).
    pub incident: Option<(Duration, Duration)>,
}

/// A figure only one scenario has, for one half.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Figure {
    /// What it is.
    pub label: &'static str,
    /// Its value, formatted.
    pub value: String,
}

/// What loads a half while the timeline plays.
#[derive(Clone, Copy)]
pub enum Load {
    /// The plan's open loop of `GET /v1/r/users/{key}` (rate, keys,
    /// connections, timeout, and the scenario's [`client`](Scenario::client)).
    Users,
    /// The scenario's own driver, for load that is not reads of `users`:
    /// `POST`s (an open loop with [`Post`](super::Post)), long-polling
    /// watchers, clients of its own. Started when the timeline starts; its
    /// [`DrillReport`] feeds the table and charts like the open loop's.
    Own(Driver),
}

/// A scenario's own load; see [`Load::Own`].
pub type Driver = for<'a> fn(Drive<'a>) -> DriverFuture<'a>;

/// What a [`Driver`] returns.
pub type DriverFuture<'a> = Pin<Box<dyn Future<Output = Result<Driven, DrillError>> + Send + 'a>>;

/// What a [`Driver`] is given: the half and rampart, running.
pub struct Drive<'a> {
    /// The scenario's plan (its duration, rate and timeout bound the load).
    pub plan: &'a Plan,
    /// Which half.
    pub mode: Mode,
    /// rampart over the stage: `server.addr` to send to, `server.state`
    /// for its pool and services (setting up, checking totals after).
    pub server: &'a Server,
}

/// What a [`Driver`] measured.
pub struct Driven {
    /// The load, as the open loop reports it.
    pub load: DrillReport,
    /// Figures only the driver can take (SQL totals after a sale), shown
    /// before the scenario's [`figures`](Scenario::figures).
    pub figures: Vec<Figure>,
}

/// One incident, replayed.
pub struct Scenario {
    /// `rampart drill scenario NAME`.
    pub name: &'static str,
    /// The incident in the source document, in a line.
    pub incident: &'static str,
    /// The guards that make the difference, in a line.
    pub guards: &'static str,
    /// The load and the faults (`quick`: the CI version, seconds long).
    pub plan: fn(quick: bool) -> Plan,
    /// Turns the service config into this half's.
    pub configure: fn(&mut Config, Mode),
    /// What loads each half.
    pub load: Load,
    /// What the client does after a failed answer in this half
    /// ([`Load::Users`]).
    pub client: fn(Mode) -> ClientRetry,
    /// This scenario's own figures for one half.
    pub figures: fn(&Plan, &Half) -> Vec<Figure>,
}

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().copied().find(|s| s.name == name)
}

/// Runs `scenario` naive then guarded on a fresh stage, and compares.
pub async fn run(
    scenario: &Scenario,
    quick: bool,
    rate: Option<f64>,
    pg_url: &str,
) -> Result<Comparison, DrillError> {
    let mut plan = (scenario.plan)(quick);
    if let Some(rate) = rate {
        plan.rate = rate;
    }
    let mut stage = Stage::create(pg_url, plan.rows).await?;
    if plan.redis.is_some() {
        if let Err(e) = stage.start_redis().await {
            stage.remove().await;
            return Err(e);
        }
    }
    let mut halves = Vec::with_capacity(2);
    for mode in [Mode::Naive, Mode::Guarded] {
        match measure::half(scenario, &plan, &mut stage, mode).await {
            Ok(half) => halves.push(half),
            Err(e) => {
                stage.remove().await;
                return Err(e);
            }
        }
    }
    stage.remove().await;
    let guarded = halves.pop();
    let naive = halves.pop();
    match (naive, guarded) {
        (Some(naive), Some(guarded)) => Ok(Comparison::new(scenario, &plan, quick, naive, guarded)),
        _ => Err(DrillError::Internal("a half did not run".to_owned())),
    }
}

fn slo_arg(s: &str) -> Result<Slo, String> {
    parse_slo(s)
}

/// `rampart drill scenario` flags.
#[derive(clap::Args, Debug)]
pub struct ScenarioArgs {
    /// The scenario to run (`--list` names them).
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// Name every scenario and the incident it replays.
    #[arg(long)]
    pub list: bool,
    /// The short version (seconds per half), for CI.
    #[arg(long)]
    pub quick: bool,
    /// Write a self-contained HTML report (charts and table) here.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Print the comparison as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The guarded half's objective, e.g. `p99<50ms,errors<0.1%`; a miss
    /// exits with status 3. (The naive half is expected to miss it.)
    #[arg(long, value_name = "TERMS", value_parser = slo_arg)]
    pub slo: Option<Slo>,
    /// Offered load instead of the scenario's own (requests per second,
    /// e.g. `500/s`): the defaults suit a small, shared machine.
    #[arg(long, value_name = "N/s", value_parser = super::config::parse_arrival_rate)]
    pub rate: Option<f64>,
    /// PostgreSQL (loopback) for the private schema; the user must be able
    /// to create schemas.
    #[arg(long, value_name = "URL", env = "RAMPART_DRILL_PG_URL", default_value = DEFAULT_PG_URL)]
    pub pg_url: String,
}

/// The `--list` text.
pub fn list() -> String {
    let mut out = String::new();
    for s in SCENARIOS {
        out.push_str(&format!(
            "{:<14}{}\n{:<14}guard: {}\n",
            s.name, s.incident, "", s.guards
        ));
    }
    out
}

/// Runs `rampart drill scenario …`.
pub async fn command(args: ScenarioArgs) -> Result<(), StartError> {
    if args.list {
        print!("{}", list());
        return Ok(());
    }
    // rampart runs in this process as under `serve`, so with serve's panic
    // hook (counted, rate-limited lines): a scenario's panics are measured,
    // not printed one by one.
    crate::ops::panic_hook::install();
    let name = args.name.unwrap_or_default();
    let scenario = find(&name).ok_or_else(|| {
        StartError::Usage(format!(
            "no scenario `{name}`; there are: {}",
            SCENARIOS
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let mut comparison = run(scenario, args.quick, args.rate, &args.pg_url)
        .await
        .map_err(|e| StartError::Usage(e.to_string()))?;
    if let Some(slo) = &args.slo {
        comparison.check(slo);
    }
    if args.json {
        let text = serde_json::to_string_pretty(&comparison)
            .map_err(|e| StartError::Usage(format!("cannot write JSON: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", comparison.render_table());
    }
    if let Some(path) = &args.report {
        std::fs::write(path, render_html(&comparison)).map_err(|e| {
            StartError::Usage(format!("cannot write the report {}: {e}", path.display()))
        })?;
        eprintln!("report: {}", path.display());
    }
    match &comparison.slo {
        Some(verdict) if !verdict.missed.is_empty() => Err(super::command::missed(
            &format!("SLO `{}` (guarded half)", verdict.slo),
            &verdict.missed,
        )),
        _ => Ok(()),
    }
}

/// A naive half's resource: no breaker, no bulkhead, nothing kept to
/// answer from (no grace, no stale-if-error, no stale-if-slow).
pub(crate) fn unguarded(r: &mut crate::config::ResourceConfig) {
    r.guards.breaker = false;
    r.guards.bulkhead = false;
    r.cache.grace = Duration::ZERO;
    r.cache.stale_if_slow = None;
    r.cache.stale_if_error = Duration::ZERO;
}

/// A query of real weight: PostgreSQL 20–30 ms away all run long (the
/// proxy's latency), so loads hold the pool long enough to queue on it.
pub(crate) fn distant_source() -> Vec<(Duration, Fault)> {
    vec![(
        Duration::ZERO,
        Fault::Latency {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
        },
    )]
}

/// The `users` resource of a config: the one every scenario reads.
pub(crate) fn users(
    config: &mut Config,
) -> impl Iterator<Item = &mut crate::config::ResourceConfig> {
    config.resources.iter_mut().filter(|r| r.name == "users")
}
