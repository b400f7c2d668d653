//! `[sessions]`: how long a session lives and how many the in-process
//! store keeps.
//!
//! The timeouts' defaults follow the OWASP Session Management Cheat
//! Sheet ("Session Expiration"): an idle timeout of 15–30 minutes for
//! low-risk applications (2–5 for high-value ones; 30 min here) and an
//! absolute timeout of 4–8 hours for an application used through an office
//! day (8 h here). Lower both for high-value applications.

use std::time::Duration;

use serde::Deserialize;

/// The sessions' settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// A session not used for this long is gone (sliding: every use
    /// restarts it).
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A session is gone this long after it was created, however much it
    /// is used (rotation keeps the creation time).
    #[serde(default = "defaults::absolute_timeout", with = "humantime_serde")]
    pub absolute_timeout: Duration,
    /// Sessions the in-process store keeps at most; past it a new session
    /// is refused with 503 `sessions_full` (live sessions are never
    /// evicted to make room: that would log someone out). Redis's memory
    /// is bounded by Redis's own `maxmemory`.
    #[serde(default = "defaults::max_sessions")]
    pub max_sessions: usize,
    /// A session's data at most, in bytes (the sum of each top-level key's
    /// length and its value's JSON length).
    #[serde(default = "defaults::max_data_bytes")]
    pub max_data_bytes: usize,
    /// How often the in-process store drops expired sessions (an expired
    /// session is refused at once either way; this frees its memory).
    #[serde(default = "defaults::sweep_interval", with = "humantime_serde")]
    pub sweep_interval: Duration,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            idle_timeout: defaults::idle_timeout(),
            absolute_timeout: defaults::absolute_timeout(),
            max_sessions: defaults::max_sessions(),
            max_data_bytes: defaults::max_data_bytes(),
            sweep_interval: defaults::sweep_interval(),
        }
    }
}

impl SessionsConfig {
    /// Every setting's bound, the field named in the message.
    pub fn validate(&self) -> Result<(), String> {
        if self.idle_timeout < Duration::from_secs(1) {
            return Err("sessions.idle_timeout must be at least 1s".into());
        }
        if self.absolute_timeout < self.idle_timeout {
            return Err(format!(
                "sessions.absolute_timeout ({:?}) must be at least sessions.idle_timeout ({:?})",
                self.absolute_timeout, self.idle_timeout
            ));
        }
        if self.absolute_timeout > Duration::from_secs(366 * 24 * 3600) {
            return Err("sessions.absolute_timeout must be at most 366 days".into());
        }
        if self.max_sessions == 0 {
            return Err("sessions.max_sessions must be at least 1".into());
        }
        if !(2..=1_048_576).contains(&self.max_data_bytes) {
            return Err(format!(
                "sessions.max_data_bytes must be 2 to 1048576, got {}",
                self.max_data_bytes
            ));
        }
        if self.sweep_interval < Duration::from_millis(10) {
            return Err("sessions.sweep_interval must be at least 10ms".into());
        }
        Ok(())
    }

    /// The idle timeout in milliseconds.
    pub fn idle_ms(&self) -> u64 {
        u64::try_from(self.idle_timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// The absolute timeout in milliseconds.
    pub fn absolute_ms(&self) -> u64 {
        u64::try_from(self.absolute_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

mod defaults {
    use std::time::Duration;

    pub fn idle_timeout() -> Duration {
        Duration::from_secs(30 * 60)
    }
    pub fn absolute_timeout() -> Duration {
        Duration::from_secs(8 * 3600)
    }
    pub fn max_sessions() -> usize {
        1_000_000
    }
    pub fn max_data_bytes() -> usize {
        16 * 1024
    }
    pub fn sweep_interval() -> Duration {
        Duration::from_secs(30)
    }
}
