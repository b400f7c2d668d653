//! Starting and stopping the service: connect, demo data, caches, bind,
//! warm-up in the background, serve until told to stop, drain.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cache::{demo, filter, source, warmup};
use crate::config::Config;
use crate::http::auth::{AdminToken, TokenOrigin};
use crate::http::{accept, connection, layers};
use crate::ops::panic_hook;
use crate::start_error::StartError;
use crate::state::AppState;
use crate::{app, cache};

/// Slack past the request timeout for a busy connection to write its
/// answer before the watchdog calls it stuck.
pub(crate) const WRITE_SLACK: std::time::Duration = std::time::Duration::from_secs(10);

/// A running service.
pub struct Server {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    pub state: AppState,
    admin_token: Arc<AdminToken>,
    stop: CancellationToken,
    serving: JoinHandle<Result<(), std::io::Error>>,
    warming: JoinHandle<()>,
    /// Existence filter builds and rebuilds; stops with `stop`.
    filtering: JoinHandle<()>,
    /// The stock reaper (expired holds back into stock); stops with `stop`.
    reaping: JoinHandle<()>,
    /// The config center's notice listener and reconcile; stops with `stop`.
    propagating: JoinHandle<()>,
    /// SIGHUP and the settings namespace (`reload/`); stops with `stop`.
    reloading: JoinHandle<()>,
}

impl Server {
    /// Starts the service for `config` and returns once it is listening.
    /// Demo data is generated first when the database is the embedded one.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let warmup_enabled = config.warmup.enabled;
        let listen = config.listen;
        // Before anything is opened: a bad token file stops the start.
        let admin_token = Arc::new(AdminToken::resolve(&config)?);
        let state = AppState::open(config).await?;
        state.config_center.open().await?;
        crate::ops::deadlock::spawn(Arc::downgrade(&state.metrics));
        let listener = listener(listen, state.config.server.listen_backlog).map_err(|source| {
            StartError::Bind {
                addr: listen.to_string(),
                source,
            }
        })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: listen.to_string(),
            source,
        })?;
        let app = layers::wrap(app::routes(state.clone(), Arc::clone(&admin_token)), &state);
        let server = &state.config.server;
        let settings = accept::Settings {
            max_connections: server.max_connections,
            connection: connection::Limits {
                header_read_timeout: server.header_read_timeout,
                idle_timeout: server.idle_timeout,
                busy_timeout: server.request_timeout + WRITE_SLACK,
                max_buf_size: layers::hyper_max_buf_size(server),
            },
            charge_misses: state.miss_budget.is_some(),
        };
        let stop = CancellationToken::new();

        let warming = {
            let (state, stop) = (state.clone(), stop.clone());
            tokio::spawn(async move {
                if warmup_enabled {
                    warmup::run(&state, &stop).await;
                } else {
                    state.readiness.warmed();
                }
            })
        };
        let filtering = tokio::spawn(filter::run(state.clone(), stop.clone()));
        let reaping = tokio::spawn(crate::stock::reaper::run(state.clone(), stop.clone()));
        let propagating = crate::config_center::propagation::spawn(
            Arc::clone(&state.config_center),
            stop.clone(),
        );
        let reloading = crate::reload::spawn(&state, &stop);
        let serving = {
            let (stop, metrics) = (stop.clone(), Arc::clone(&state.metrics));
            tokio::spawn(accept::serve(listener, app, settings, metrics, stop))
        };
        Ok(Server {
            addr,
            state,
            admin_token,
            stop,
            serving,
            warming,
            filtering,
            reaping,
            propagating,
            reloading,
        })
    }

    /// Where the admin token for write endpoints came from.
    pub fn admin_token_origin(&self) -> &TokenOrigin {
        self.admin_token.origin()
    }

    /// Stops accepting, lets in-flight requests finish (up to the
    /// configured grace), cancels the warm-up and filter builds.
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.stop.cancel();
        let grace = self.state.config.server.shutdown_grace;
        let mut serving = self.serving;
        let drained = tokio::time::timeout(grace, &mut serving).await;
        let _ = self.warming.await;
        let _ = self.filtering.await;
        let _ = self.reaping.await;
        let _ = self.propagating.await;
        let _ = self.reloading.await;
        match drained {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(source))) => Err(StartError::Bind {
                addr: self.addr.to_string(),
                source,
            }),
            Ok(Err(join)) => Err(StartError::Database(format!("server task failed: {join}"))),
            Err(_) => {
                tracing::warn!(
                    ?grace,
                    "in-flight requests did not finish within the grace period"
                );
                serving.abort();
                Ok(())
            }
        }
    }
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully; SIGHUP and
/// `POST /v1/admin/reload` re-read the config through `reload_source`.
pub async fn run_until_signal(
    config: Config,
    reload_source: crate::reload::ConfigSource,
) -> Result<(), StartError> {
    panic_hook::install();
    let database = source::redact(&config.database_url());
    let embedded = config.is_embedded_database();
    let server = Server::start(config).await?;
    server.state.reload.set_source(reload_source);
    let base = format!("http://{}", server.addr);
    println!("rampart serving on {base}  (source: {database})");
    for name in cache::routes::resource_names(&server.state) {
        let r = &server.state.resources[&name];
        let example = match r.config.key_type {
            crate::config::KeyType::Integer => "1".to_owned(),
            crate::config::KeyType::String => demo::sku(1),
        };
        println!("  GET  {base}/v1/r/{name}/{{key}}        e.g. {base}/v1/r/{name}/{example}");
    }
    println!("  GET  {base}/readyz  {base}/metrics  {base}/openapi.json");
    println!(
        "  POST {base}/v1/r/{{resource}}/{{key}}/invalidate  (Authorization: Bearer <admin token>)"
    );
    let origin = server.admin_token_origin();
    match origin {
        TokenOrigin::Generated(_) | TokenOrigin::Reused(_) if !embedded => println!(
            "admin token: {origin} (none configured for this shared database: \
             set server.admin_token_file or RAMPART_ADMIN_TOKEN to use one token on every instance)"
        ),
        _ => println!("admin token: {origin}"),
    }
    shutdown_signal().await;
    println!("rampart: shutting down, draining in-flight requests …");
    server.shutdown().await
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// A listening socket on `addr` with room for `backlog` connections
/// waiting for an accept (`server.listen_backlog`; `TcpListener::bind`
/// always asks for 1024). Address reuse on Unix, as `bind` sets it there,
/// so a restart does not wait out the old socket's TIME_WAIT (on Windows
/// the same option would let another process take the port).
fn listener(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
