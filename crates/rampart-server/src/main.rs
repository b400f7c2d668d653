//! `rampart`: see `rampart --help`.

use clap::Parser;

use rampart_server::ops::metrics::runtime::thread_counter;

fn main() -> std::process::ExitCode {
    let cli = rampart_server::cli::Cli::parse();
    rampart_server::ops::logging::init(cli.log_format);
    // tokio's default runtime, with its threads counted: tokio reports its
    // blocking threads only under `--cfg tokio_unstable`, and every thread
    // it starts that is not a worker is one (`rampart_tokio_blocking_threads`).
    let (started, stopped) = thread_counter();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(started)
        .on_thread_stop(stopped)
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rampart: cannot start the tokio runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(rampart_server::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rampart: {err}");
            std::process::ExitCode::from(err.exit_code())
        }
    }
}
