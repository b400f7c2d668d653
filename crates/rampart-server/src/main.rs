//! `rampart`: see `rampart --help`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // sqlx reports the warm-up's long key stream as a "slow
            // statement" at warn; it is expected, so only its errors show.
            EnvFilter::try_from_env("RAMPART_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx::query=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = rampart_server::cli::Cli::parse();
    match rampart_server::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rampart: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
