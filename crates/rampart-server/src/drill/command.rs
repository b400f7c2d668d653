//! `rampart drill …` as the command line runs it: a load run against
//! `--target`s, or `rampart drill scenario NAME`.

use crate::start_error::StartError;

use super::config::DrillArgs;
use super::report::DrillReport;
use super::slo::Slo;

/// `rampart drill` and its one subcommand.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DrillCli {
    /// `scenario NAME`: replay an incident naive then guarded.
    #[command(subcommand)]
    pub command: Option<DrillCommand>,
    /// A load run against running targets.
    #[command(flatten)]
    pub load: DrillArgs,
}

/// `rampart drill` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum DrillCommand {
    /// Replay an incident against rampart with its guards off, then on, on
    /// private instances, and compare (`--list` names them).
    Scenario(super::scenario::ScenarioArgs),
}

/// Prints a report, as a table or JSON.
fn print(report: &DrillReport, json: bool) {
    if json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("rampart drill: cannot write JSON: {e}"),
        }
    } else {
        println!("{}", report.render_table());
    }
}

/// A missed objective, as the error that sets the exit status.
pub(crate) fn missed(slo: &str, reasons: &[String]) -> StartError {
    StartError::SloMissed(format!("{slo} missed: {}", reasons.join("; ")))
}

/// Runs `rampart drill …`.
pub async fn command(cli: DrillCli) -> Result<(), StartError> {
    if let Some(DrillCommand::Scenario(args)) = cli.command {
        return super::scenario::command(args).await;
    }
    let args = cli.load;
    let gate = args.gate();
    let json = args.json;
    let slo: Option<Slo> = args.slo.clone();
    let config = args
        .into_config()
        .map_err(|e| StartError::Usage(e.to_string()))?;
    let report = super::run(&config)
        .await
        .map_err(|e| StartError::Usage(e.to_string()))?;
    print(&report, json);
    if let Some((max_error_rate, max_p99)) = gate {
        if let Err(reasons) = super::report::gate(&report, max_error_rate, max_p99) {
            return Err(missed("drill gate", &reasons));
        }
    }
    if let Some(slo) = slo {
        if let Err(reasons) = slo.check(&report) {
            return Err(missed(&format!("SLO `{slo}`"), &reasons));
        }
    }
    Ok(())
}
