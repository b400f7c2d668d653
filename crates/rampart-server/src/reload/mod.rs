//! Live reload of rampart's own guards: per-resource cache settings (TTL,
//! grace, jitter, negative TTL, …), breaker thresholds, bulkhead limits and
//! the server's shed limit change without a restart.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | `[reload]`: the optional config-center namespace |
//! | [`plan`] | what differs between two configs; what cannot change live |
//! | [`apply`] | [`Reload`]: validate, refuse or swap, count, version |
//! | [`routes`] | `POST /v1/admin/reload` and its route table |
//! | [`namespace`] | the config-center namespace as a second source |
//!
//! Every trigger (SIGHUP, the admin route, a new namespace version) ends in
//! `Reload::apply`: the whole new config is validated with the same
//! `validate()` a start uses, settings that only a restart can change are
//! compared and refused by name, and only then is anything swapped. A
//! refusal leaves every running setting as it was.

pub mod apply;
pub mod config;
pub mod namespace;
pub mod plan;
pub mod routes;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

pub use apply::{Applied, ConfigSource, Origin, Reload};
pub use config::ReloadConfig;

/// Starts the reload triggers that run in the background: SIGHUP, and the
/// config-center namespace when `reload.namespace` is set. Both stop with
/// `stop`.
pub fn spawn(state: &AppState, stop: &CancellationToken) -> JoinHandle<()> {
    let (state, stop) = (state.clone(), stop.clone());
    tokio::spawn(async move {
        tokio::join!(
            namespace::sighup(state.clone(), stop.clone()),
            namespace::follow(state, stop)
        );
    })
}
