//! `[config_center]`: the config center's settings and their bounds.

use std::time::Duration;

use serde::Deserialize;

/// The config center (`/v1/config/...`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigCenterConfig {
    /// Off: no tables are created and the routes answer 404 `unknown_namespace`.
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
    /// The largest content a version may hold, as compact JSON (413 past it).
    #[serde(default = "defaults::max_content_bytes")]
    pub max_content_bytes: usize,
    /// The longest a long-poll or watch is held (a longer `wait` is cut to
    /// it): below the 60 s most proxies and load balancers allow an idle
    /// response, so the hold ends with a 304 rather than a proxy's 504.
    #[serde(default = "defaults::max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// How often the current versions are read from the database, so a
    /// lost notice (or a write by another instance without notices)
    /// delays an update by at most this, never loses it.
    #[serde(default = "defaults::reconcile_interval", with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// On PostgreSQL: hear other instances' writes at once by LISTEN/NOTIFY
    /// (off: only the reconcile delivers them).
    #[serde(default = "defaults::listen")]
    pub listen: bool,
    /// Requests held or served on the watch routes at once (they are not
    /// counted against `server.max_concurrent_requests`, which bounds
    /// work, not parked waiters); past it, 503 `overloaded`.
    #[serde(default = "defaults::max_watchers")]
    pub max_watchers: usize,
}

impl Default for ConfigCenterConfig {
    fn default() -> Self {
        ConfigCenterConfig {
            enabled: defaults::enabled(),
            max_content_bytes: defaults::max_content_bytes(),
            max_wait: defaults::max_wait(),
            reconcile_interval: defaults::reconcile_interval(),
            listen: defaults::listen(),
            max_watchers: defaults::max_watchers(),
        }
    }
}

/// The longest `max_wait` accepted: a hold longer than common proxy
/// timeouts would be cut by the proxy, not answered.
pub const MAX_WAIT_BOUND: Duration = Duration::from_secs(300);

impl ConfigCenterConfig {
    /// The section's own bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_content_bytes == 0 || self.max_content_bytes > 64 * 1024 * 1024 {
            return Err("config_center.max_content_bytes must be between 1 and 64 MiB".into());
        }
        if self.max_wait.is_zero() || self.max_wait > MAX_WAIT_BOUND {
            return Err("config_center.max_wait must be greater than 0 and at most 5m".into());
        }
        if self.reconcile_interval < Duration::from_millis(10) {
            return Err("config_center.reconcile_interval must be at least 10ms".into());
        }
        if self.max_watchers == 0 {
            return Err("config_center.max_watchers must be at least 1".into());
        }
        Ok(())
    }
}

mod defaults {
    use std::time::Duration;

    pub fn enabled() -> bool {
        true
    }
    pub fn max_content_bytes() -> usize {
        1024 * 1024
    }
    pub fn max_wait() -> Duration {
        Duration::from_secs(55)
    }
    pub fn reconcile_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn listen() -> bool {
        true
    }
    pub fn max_watchers() -> usize {
        20_000
    }
}
