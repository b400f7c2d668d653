//! # rampart-server — the `rampart` service
//!
//! A guarded read-through cache over a SQL database, served over HTTP. The
//! source folders are capabilities, each with thin handlers (`routes.rs`)
//! over what it serves; the next capabilities (config center, stock,
//! sessions) join as folders beside `cache/`. `main.rs` only parses the
//! command line.
//!
//! | module | what |
//! |---|---|
//! | [`cli`] | `rampart serve / demo-data / warm / drill` |
//! | [`config`] | the TOML config, env and flag overrides, validation |
//! | [`app`] | assembling the service once: pool, Redis, caches, router |
//! | [`state`] | what requests share at run time: resources, metrics, readiness |
//! | [`server`] | start, serve, graceful shutdown |
//! | [`cache`] | the read-through cache API over SQL: handlers, keys, source, warm-up |
//! | [`config_center`] | versioned config namespaces: CAS writes, watch, history, canary |
//! | [`config_cli`] | `rampart config …`: the config center from the command line, through `rampart-client` |
//! | [`reload`] | live reload of the guards' settings: SIGHUP, `POST /v1/admin/reload`, a config-center namespace |
//! | [`ops`] | health, readiness, metrics, OpenAPI, the panic hook, logs, profiling, the dashboard, the deadlock detector |
//! | [`http`] | the edge: accept loop, connection deadlines, layers, extractors, admin token |
//! | [`drill`] | the load generator and release gate |
//! | [`sessions`] | `/v1/sessions`: bearer-token sessions, in process or in Redis |
//! | [`stock`] | flash-sale stock: reservations, request keys, group commit, reaper |
//! | [`error`] | a request's error and its HTTP responses (the one place) |
//! | [`start_error`] | what stops `rampart` from starting: config, database, bind |

pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod config_center;
pub mod config_cli;
pub mod drill;
pub mod error;
pub mod http;
pub mod ops;
pub mod reload;
pub mod server;
pub mod sessions;
pub mod start_error;
pub mod state;
pub mod stock;

pub use config::Config;
pub use error::Error;
pub use server::Server;
pub use start_error::StartError;
