//! What operators use: health and readiness, metrics, the OpenAPI
//! document, and the process's panic hook.
//!
//! | module | what |
//! |---|---|
//! | [`routes`] | `/healthz`, `/readyz`, `/metrics`, `/openapi.json` |
//! | [`readiness`] | the `/readyz` gate: warm-up, Redis subscription, deadline |
//! | [`metrics`] | Prometheus metrics, one registry per server |
//! | [`openapi`] | `/openapi.json` from one route table |
//! | [`panic_hook`] | counted, rate-limited panic logging |
//! | [`deadlock`] | parking_lot's deadlock detector, logged and counted (feature `deadlock-detection`) |
//! | [`dashboard`] | `/dashboard`: the live page, its stats history and event stream |
//! | [`profile`] | CPU profiles on demand: pprof protobuf, SVG flame graph |
//! | [`logging`] | log format (text or JSON lines), filter, the access log |

pub mod dashboard;
pub mod deadlock;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod panic_hook;
pub mod profile;
pub mod readiness;
pub mod routes;
