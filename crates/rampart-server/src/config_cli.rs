//! `rampart config …`: the operators' side of the config center, against a
//! running server, through `rampart-client` (so failover across several
//! `--server`s and the error bodies are the client's).
//!
//! Answers print as JSON on stdout; an error prints the server's code and
//! detail and exits 1.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use rampart_client::{Change, Client, ClientError, ConfigWatcher, Precondition};
use serde_json::Value;

use crate::start_error::StartError;

/// `rampart config`'s arguments.
#[derive(Args, Debug)]
pub struct ConfigCli {
    /// A server's base URL; repeat (or comma-separate) for failover.
    #[arg(
        long = "server",
        env = "RAMPART_SERVER",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub servers: Vec<String>,
    /// A file holding the admin token (default: `RAMPART_ADMIN_TOKEN`, else
    /// `rampart-data/admin-token` when it exists, as `rampart serve`
    /// generates it).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// The client id reads use (a canary may target it).
    #[arg(long, global = true)]
    pub client: Option<String>,
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// The change-risk card of a write.
#[derive(Args, Debug, Clone)]
pub struct ChangeArgs {
    /// Who makes the change.
    #[arg(long, env = "USER")]
    pub author: String,
    /// Why.
    #[arg(long)]
    pub reason: String,
    /// How to undo it.
    #[arg(long)]
    pub rollback_plan: String,
}

/// Where a write's content comes from.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct ContentArgs {
    /// The content as JSON text.
    #[arg(long)]
    pub content: Option<String>,
    /// A file holding the content (`-` for stdin).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// `rampart config` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// List the namespaces with their current versions.
    List,
    /// The version this client is served (or `--version V`).
    Get {
        namespace: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Write a new version: `--create`, `--if-match N`, or (neither) on
    /// top of the version read just before (still compare-and-set).
    Put {
        namespace: String,
        #[command(flatten)]
        content: ContentArgs,
        #[command(flatten)]
        change: ChangeArgs,
        #[arg(long, conflicts_with = "if_match")]
        create: bool,
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Versions newest first, with their change records.
    History {
        namespace: String,
        #[arg(long)]
        before: Option<u64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// The JSON Patch from one version to another.
    Diff {
        namespace: String,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
    /// A new version carrying version `--to`'s content.
    Rollback {
        namespace: String,
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        change: ChangeArgs,
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Print each version this client is served as it changes (Ctrl-C stops).
    Watch {
        namespace: String,
        /// Stop after this many changes.
        #[arg(long)]
        changes: Option<u64>,
        /// How long each long-poll is held.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// A canary release: start, promote, abort.
    #[command(subcommand)]
    Canary(CanaryCommand),
}

/// `rampart config canary` subcommands.
#[derive(Subcommand, Debug)]
pub enum CanaryCommand {
    /// Serve a candidate to listed clients and a percentage of the others.
    Start {
        namespace: String,
        #[command(flatten)]
        content: ContentArgs,
        #[command(flatten)]
        change: ChangeArgs,
        /// Client ids always in the canary (comma-separated).
        #[arg(long, value_delimiter = ',')]
        clients: Vec<String>,
        /// A stable percentage of the other clients (same id, same side).
        #[arg(long, default_value_t = 0)]
        percent: u8,
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// The candidate becomes the next version.
    Promote { namespace: String },
    /// Everyone back on the current version.
    Abort { namespace: String },
}

impl ChangeArgs {
    fn change(&self) -> Change {
        Change {
            author: self.author.clone(),
            reason: self.reason.clone(),
            rollback_plan: self.rollback_plan.clone(),
        }
    }
}

impl ContentArgs {
    fn read(&self) -> Result<Value, StartError> {
        let text = match (&self.content, &self.file) {
            (Some(text), _) => text.clone(),
            (None, Some(path)) if path.as_os_str() == "-" => {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| usage(format!("stdin: {e}")))?
            }
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| usage(format!("{}: {e}", path.display())))?,
            (None, None) => return Err(usage("--content or --file".into())),
        };
        serde_json::from_str(&text).map_err(|e| usage(format!("the content is not JSON: {e}")))
    }
}

fn usage(message: String) -> StartError {
    StartError::Usage(message)
}

fn failed(error: ClientError) -> StartError {
    StartError::Usage(error.to_string())
}

/// The admin token: `--token-file`, `RAMPART_ADMIN_TOKEN`, or the file
/// `rampart serve` generates by default.
fn token(args: &ConfigCli) -> Result<Option<String>, StartError> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("--token-file {}: {e}", path.display())))?;
        return Ok(Some(text.trim().to_owned()));
    }
    if let Ok(token) = std::env::var(crate::cli::ADMIN_TOKEN_ENV) {
        if !token.is_empty() {
            return Ok(Some(token));
        }
    }
    let default = PathBuf::from("rampart-data").join(crate::http::auth::TOKEN_FILE);
    Ok(std::fs::read_to_string(default)
        .ok()
        .map(|t| t.trim().to_owned()))
}

fn print(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// The current version of `namespace`, for a write on top of it.
async fn current(client: &Client, namespace: &str) -> Result<u64, StartError> {
    client
        .list()
        .await
        .map_err(failed)?
        .get("namespaces")
        .and_then(Value::as_array)
        .and_then(|all| all.iter().find(|n| n["name"] == namespace))
        .and_then(|n| n["version"].as_u64())
        .ok_or_else(|| {
            usage(format!(
                "no namespace {namespace:?} (create it with --create)"
            ))
        })
}

/// Runs `rampart config …`.
pub async fn run(args: ConfigCli) -> Result<(), StartError> {
    let mut builder = Client::builder(args.servers.clone());
    if let Some(token) = token(&args)? {
        builder = builder.token(token);
    }
    if let Some(id) = &args.client {
        builder = builder.client_id(id.clone());
    }
    let client = builder.build().map_err(failed)?;
    match args.command {
        ConfigCommand::List => print(&client.list().await.map_err(failed)?),
        ConfigCommand::Get {
            namespace,
            version: None,
        } => {
            let doc = client.get(&namespace).await.map_err(failed)?;
            print(&serde_json::json!({
                "namespace": doc.namespace,
                "version": doc.version,
                "digest": doc.digest,
                "created_at": doc.created_at,
                "canary": doc.canary,
                "content": doc.content,
            }));
        }
        ConfigCommand::Get {
            namespace,
            version: Some(version),
        } => print(&client.version(&namespace, version).await.map_err(failed)?),
        ConfigCommand::Put {
            namespace,
            content,
            change,
            create,
            if_match,
        } => {
            let expect = match (create, if_match) {
                (true, _) => Precondition::Create,
                (false, Some(n)) => Precondition::Version(n),
                (false, None) => Precondition::Version(current(&client, &namespace).await?),
            };
            let answer = client
                .put(&namespace, &content.read()?, &change.change(), expect)
                .await
                .map_err(failed)?;
            print(&answer);
        }
        ConfigCommand::History {
            namespace,
            before,
            limit,
        } => print(
            &client
                .history(&namespace, before, limit)
                .await
                .map_err(failed)?,
        ),
        ConfigCommand::Diff {
            namespace,
            from,
            to,
        } => print(&client.diff(&namespace, from, to).await.map_err(failed)?),
        ConfigCommand::Rollback {
            namespace,
            to,
            change,
            if_match,
        } => {
            let current = match if_match {
                Some(n) => n,
                None => current(&client, &namespace).await?,
            };
            let answer = client
                .rollback(&namespace, to, &change.change(), current)
                .await
                .map_err(failed)?;
            print(&answer);
        }
        ConfigCommand::Watch {
            namespace,
            changes,
            wait,
        } => watch(client, &namespace, changes, wait).await?,
        ConfigCommand::Canary(CanaryCommand::Start {
            namespace,
            content,
            change,
            clients,
            percent,
            if_match,
        }) => {
            let current = match if_match {
                Some(n) => n,
                None => current(&client, &namespace).await?,
            };
            let answer = client
                .canary_start(
                    &namespace,
                    &content.read()?,
                    &change.change(),
                    &clients,
                    percent,
                    current,
                )
                .await
                .map_err(failed)?;
            print(&answer);
        }
        ConfigCommand::Canary(CanaryCommand::Promote { namespace }) => {
            print(&client.canary_promote(&namespace).await.map_err(failed)?)
        }
        ConfigCommand::Canary(CanaryCommand::Abort { namespace }) => {
            print(&client.canary_abort(&namespace).await.map_err(failed)?)
        }
    }
    Ok(())
}

/// Prints the version served now, then each later one, one JSON line each.
async fn watch(
    client: Client,
    namespace: &str,
    changes: Option<u64>,
    wait: Duration,
) -> Result<(), StartError> {
    let mut watcher = ConfigWatcher::<Value>::builder(client, namespace)
        .wait(wait)
        .start()
        .await
        .map_err(failed)?;
    let line = |version: u64, content: &Value| {
        println!(
            "{}",
            serde_json::json!({ "namespace": namespace, "version": version, "content": content })
        );
    };
    line(watcher.version(), &watcher.get());
    let mut seen = 0;
    while changes.is_none_or(|n| seen < n) {
        let content = watcher.changed().await;
        seen += 1;
        line(watcher.version(), &content);
    }
    Ok(())
}
