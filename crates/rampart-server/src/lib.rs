//! # rampart-server — the `rampart` service
//!
//! A guarded read-through cache over a SQL database, served over HTTP.
//! One concern a module; `main.rs` only parses the command line.
//!
//! | module | what |
//! |---|---|
//! | [`cli`] | `rampart serve / demo-data / warm / drill` |
//! | [`config`] | the TOML config, env and flag overrides, validation |
//! | [`server`] | start, serve, graceful shutdown |
//! | [`accept`] | the accept loop: connection cap, accept-error back-off, drain |
//! | [`connection`] | one connection: header, idle and busy deadlines |
//! | [`state`] | what handlers share: resources, caches, metrics, readiness |
//! | [`api`] | the HTTP handlers |
//! | [`layers`] | request id, tracing, metrics, head limits, shedding, timeout, panic isolation |
//! | [`extract`] | path and query extractors whose rejections are the crate's errors |
//! | [`auth`] | the admin token and the layer on write routes |
//! | [`panic_hook`] | the process's panic hook: counted, rate-limited logging |
//! | [`error`] | a request's error and its HTTP responses (the one place) |
//! | [`start_error`] | what stops `rampart` from starting: config, database, bind |
//! | [`source`] | the SQL pool, rows as JSON, the cache's loader |
//! | [`demo`] | the demo data set |
//! | [`warmup`] | start-up warm-up and the readiness gate |
//! | [`pressure`] | the warm-up's back-off signal |
//! | [`readiness`] | the `/readyz` gate: warm-up, Redis subscription, deadline |
//! | [`metrics`] | Prometheus metrics |
//! | [`openapi`] | `/openapi.json` from one route table |
//! | [`drill`] | the load generator and release gate |

pub mod accept;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connection;
pub mod demo;
pub mod drill;
pub mod error;
pub mod extract;
pub mod layers;
pub mod metrics;
pub mod openapi;
pub mod panic_hook;
pub mod pressure;
pub mod readiness;
pub mod server;
pub mod source;
pub mod start_error;
pub mod state;
pub mod warmup;

pub use config::Config;
pub use error::Error;
pub use server::Server;
pub use start_error::StartError;
