//! Watches a config-center namespace as a typed value and prints each
//! version it takes; a version that does not fit the type or fails the
//! check is refused and reported, and the last good one stays.
//!
//! ```text
//! rampart serve &
//! cargo run -p rampart-client --example watch_config -- \
//!     --server http://127.0.0.1:7070 --client web-1 --file app.lkg.json app
//! ```
//!
//! The namespace holds `{"greeting": "…", "max_connections": N}`. Several
//! `--server`s fail over in order; `--file` keeps the last good version so
//! the next start works while the center is down; `--changes N` exits after
//! N changes. Without arguments it prints its usage and exits.

use std::time::Duration;

use rampart_client::{Client, ConfigWatcher};
use serde::Deserialize;

/// What the service configures from the namespace.
#[derive(Deserialize)]
struct AppConfig {
    greeting: String,
    max_connections: u32,
}

const USAGE: &str =
    "usage: watch_config [--server URL]... [--client ID] [--file PATH] [--changes N] NAMESPACE";

struct Args {
    servers: Vec<String>,
    client: Option<String>,
    file: Option<String>,
    changes: Option<u64>,
    namespace: String,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        servers: Vec::new(),
        client: None,
        file: None,
        changes: None,
        namespace: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--server" => args.servers.push(value()?),
            "--client" => args.client = Some(value()?),
            "--file" => args.file = Some(value()?),
            "--changes" => {
                args.changes = Some(value()?.parse().map_err(|e| format!("--changes: {e}"))?)
            }
            _ if arg.starts_with("--") => return Err(format!("unknown flag {arg}")),
            _ => args.namespace = arg,
        }
    }
    if args.namespace.is_empty() {
        return Err(USAGE.into());
    }
    if args.servers.is_empty() {
        args.servers.push("http://127.0.0.1:7070".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    if std::env::args().len() == 1 {
        // Without arguments (as `cargo run --example` with none): usage.
        println!(
            "{USAGE}\n(start `rampart serve` and put a namespace first: README, \"Config center\")"
        );
        return;
    }
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = watch(args).await {
        eprintln!("watch_config: {e}");
        std::process::exit(1);
    }
}

async fn watch(args: Args) -> Result<(), rampart_client::ClientError> {
    let mut client = Client::builder(args.servers);
    if let Some(id) = args.client {
        client = client.client_id(id);
    }
    let mut builder = ConfigWatcher::<AppConfig>::builder(client.build()?, &args.namespace)
        .validate(|c: &AppConfig| {
            if c.max_connections == 0 {
                Err("max_connections must be above 0".into())
            } else {
                Ok(())
            }
        });
    if let Some(file) = args.file {
        builder = builder.last_known_good(file);
    }
    let mut watcher = builder.start().await?;
    let status = watcher.status();
    println!(
        "version {}{}: {}",
        status.version,
        if status.from_file {
            " (last known good, from the file)"
        } else {
            ""
        },
        describe(&watcher.get())
    );
    let mut seen = 0;
    let mut refused = status.refused;
    while args.changes.is_none_or(|n| seen < n) {
        tokio::select! {
            config = watcher.changed() => {
                seen += 1;
                println!("version {}: {}", watcher.version(), describe(&config));
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let status = watcher.status();
        if status.refused > refused {
            refused = status.refused;
            println!(
                "refused: {} (keeping version {})",
                status.last_refusal.unwrap_or_default(),
                status.version
            );
        }
    }
    Ok(())
}

fn describe(config: &AppConfig) -> String {
    format!(
        "greeting {:?}, max_connections {}",
        config.greeting, config.max_connections
    )
}
