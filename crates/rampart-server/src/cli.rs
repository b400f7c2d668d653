//! The command line: `rampart serve | demo-data | warm | drill`.
//! Flags win over environment variables, which win over the config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::cache::{demo, source, warmup};
use crate::config::{Config, Secret};
use crate::ops::logging::LogFormat;
use crate::start_error::StartError;
use crate::state::AppState;
use crate::{drill, server};

/// The environment variable holding the admin token (see `auth.rs`).
pub const ADMIN_TOKEN_ENV: &str = "RAMPART_ADMIN_TOKEN";

#[derive(Parser, Debug)]
#[command(
    name = "rampart",
    version,
    about = "A guarded read-through cache over SQL, as an HTTP service."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as human text (colour only on a terminal) or JSON lines.
    /// The filter is `RAMPART_LOG`.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "RAMPART_LOG_FORMAT",
        default_value_t
    )]
    pub log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the configured resources over HTTP (default: the demo data set
    /// on embedded SQLite, on 127.0.0.1:7070).
    Serve(ConfigArgs),
    /// Create and fill the demo tables (idempotent).
    DemoData(DemoArgs),
    /// Run the warm-up alone and report, with a progress bar on a terminal.
    Warm(WarmArgs),
    /// Drive HTTP load at a running service (loopback only) and report.
    Drill(drill::DrillArgs),
}

/// Where the configuration comes from, and overrides of it.
#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// A TOML config file (default: the embedded demo configuration).
    #[arg(long, env = "RAMPART_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "RAMPART_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded SQLite database.
    #[arg(long, env = "RAMPART_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// sqlite://… or postgres://… (default: embedded SQLite in --data-dir).
    #[arg(long, env = "RAMPART_DATABASE_URL", value_parser = parse_database_url)]
    pub database_url: Option<String>,
    /// Demo users generated on first run of the embedded database.
    #[arg(long, env = "RAMPART_DEMO_ROWS")]
    pub demo_rows: Option<u64>,
    /// Redis for the shared tier: one redis:// URL, or several
    /// (comma-separated) Cluster seed nodes. Absent: in-process tier.
    #[arg(long, env = "RAMPART_REDIS_URL", value_delimiter = ',')]
    pub redis_url: Vec<String>,
}

/// `rampart warm`'s flags.
#[derive(Args, Debug, Clone)]
pub struct WarmArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// First read the same rows with a plain client (one connection, `IN`
    /// lists of the batch size), then warm, and print both rates and their
    /// ratio.
    #[arg(long)]
    pub measure: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// sqlite://… or postgres://…
    #[arg(long, env = "RAMPART_DATABASE_URL", value_parser = parse_database_url)]
    pub database_url: String,
    /// Users to generate (products: a hundredth).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
}

fn parse_database_url(url: &str) -> Result<String, String> {
    if ["sqlite:", "postgres:", "postgresql:"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        Ok(url.to_owned())
    } else {
        Err("must start with sqlite:// or postgres://".into())
    }
}

impl ConfigArgs {
    /// The file (or embedded) config with the overrides applied, validated.
    pub fn load(&self) -> Result<Config, StartError> {
        let (mut config, origin) = match &self.config {
            Some(path) => (Config::from_file(path)?, path.display().to_string()),
            None => (Config::embedded()?, "<embedded>".to_owned()),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &self.database_url {
            config.database.url = url.clone();
        }
        if let Some(rows) = self.demo_rows {
            config.demo_rows = rows;
        }
        if !self.redis_url.is_empty() {
            config.redis.urls = self.redis_url.clone();
        }
        // The admin token has no flag: a command line is visible to every
        // user of the machine (ps), an environment variable is not.
        if let Some(token) = std::env::var_os(ADMIN_TOKEN_ENV) {
            let token = token.into_string().map_err(|_| StartError::Config {
                file: origin.clone(),
                message: format!("{ADMIN_TOKEN_ENV} is not valid UTF-8"),
            })?;
            if !token.is_empty() {
                config.server.admin_token = Some(Secret::new(token));
            }
        }
        config.validate().map_err(|message| StartError::Config {
            file: origin,
            message,
        })?;
        Ok(config)
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), StartError> {
    match cli.command {
        Command::Serve(args) => server::run_until_signal(args.load()?).await,
        Command::DemoData(args) => {
            let mut config = Config::embedded()?;
            config.database.url = args.database_url.clone();
            let pool = source::connect(&config).await?;
            let report = demo::ensure(&pool, &args.database_url, args.rows, false).await?;
            println!(
                "demo data: {} users, {} products ({})",
                report.users,
                report.products,
                if report.inserted {
                    "filled"
                } else {
                    "already there"
                }
            );
            Ok(())
        }
        Command::Warm(args) => warm_only(args.config.load()?, args.measure).await,
        Command::Drill(args) => {
            let gate = args.gate();
            let json = args.json;
            let config = args
                .into_config()
                .map_err(|e| StartError::Usage(e.to_string()))?;
            let report = drill::run(&config)
                .await
                .map_err(|e| StartError::Usage(e.to_string()))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                println!("{}", report.render_table());
            }
            if let Some((max_error_rate, max_p99)) = gate {
                if let Err(reasons) = drill::gate(&report, max_error_rate, max_p99) {
                    return Err(StartError::Usage(format!(
                        "drill gate failed: {}",
                        reasons.join("; ")
                    )));
                }
            }
            Ok(())
        }
    }
}

/// `rampart warm`: the warm-up alone, with a progress bar on a terminal.
async fn warm_only(config: Config, measure: bool) -> Result<(), StartError> {
    let state = AppState::open(config).await?;
    let ceilings = if measure {
        warmup::ceilings(&state).await?
    } else {
        Vec::new()
    };
    let cancel = CancellationToken::new();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>10} [{bar:40}] {pos}/{len} keys  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let ticker = {
        let (state, bar) = (state.clone(), bar.clone());
        tokio::spawn(async move {
            loop {
                let (mut done, mut expected) = (0, 0);
                for r in state.resources.values() {
                    done += r.warm.keys_done() + r.warm.keys_failed();
                    expected += r.warm.expected().unwrap_or(0);
                }
                bar.set_length(expected.max(done));
                bar.set_position(done);
                bar.set_prefix("warming");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let interrupted = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        })
    };
    let reports = warmup::run(&state, &cancel).await;
    ticker.abort();
    interrupted.abort();
    bar.finish_and_clear();
    let mut failed = None;
    for (name, report) in reports {
        match report {
            Ok(r) => {
                println!(
                    "{name}: {} keys warm, {} failed, {:.1} s{}",
                    r.keys_done,
                    r.keys_failed,
                    r.elapsed.as_secs_f64(),
                    if r.cancelled { " (cancelled)" } else { "" }
                );
                if let Some((_, ceiling)) = ceilings.iter().find(|(n, _)| *n == name) {
                    println!("{}", warmup::compare(&name, ceiling, &r));
                }
            }
            Err(e) => {
                println!("{name}: warm-up stopped: {e}");
                failed = Some(e);
            }
        }
    }
    match failed {
        Some(e) => Err(StartError::Guard(e)),
        None => Ok(()),
    }
}
