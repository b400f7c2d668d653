//! `rampart`: see `rampart --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = rampart_server::cli::Cli::parse();
    rampart_server::ops::logging::init(cli.log_format);
    match rampart_server::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rampart: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
