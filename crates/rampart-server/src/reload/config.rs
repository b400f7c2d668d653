//! `[reload]`: where live settings may come from besides the file.

use serde::Deserialize;

/// Live reload's own settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// A config-center namespace holding live settings as JSON (the same
    /// fields as the file's, e.g. `{"server": {"max_concurrent_requests":
    /// 512}, "resource": {"users": {"cache": {"ttl": "30s"}}}}`); each new
    /// version is validated and applied over the file's settings. Absent:
    /// the file (SIGHUP, `POST /v1/admin/reload`) is the only source.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The client id this instance reads the namespace as, so a canary of
    /// the namespace can target some instances (default: none, the
    /// stable version).
    #[serde(default)]
    pub client: Option<String>,
}

impl ReloadConfig {
    /// The section's own checks.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(name) = &self.namespace {
            let ok = (1..=128).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return Err(format!(
                    "reload.namespace {name:?} must be 1 to 128 of A-Z a-z 0-9 . _ -"
                ));
            }
        }
        if self.client.as_ref().is_some_and(|c| c.is_empty()) {
            return Err("reload.client must not be empty (or absent)".into());
        }
        Ok(())
    }
}
