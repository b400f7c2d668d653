//! `[stock]`: reservations, holds, request keys and the group commit.

use std::time::Duration;

use serde::Deserialize;

/// The `[stock]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockSettings {
    /// Serve `/v1/stock` and `/v1/reservations` (the tables are created at
    /// start).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long a reservation holds its units before they go back into
    /// stock unless confirmed.
    #[serde(default = "hold_for", with = "humantime_serde")]
    pub hold_for: Duration,
    /// How long a request key (and its settled reservation) is kept: a
    /// retry within it gets the first answer.
    #[serde(default = "key_ttl", with = "humantime_serde")]
    pub key_ttl: Duration,
    /// Request keys kept in process (the in-flight check and fast replays;
    /// the database keeps them all): past it new keys get 503.
    #[serde(default = "max_keys")]
    pub max_keys: usize,
    /// Reservations for one SKU batched into one transaction
    /// (`group_commit.rs`); off, each request is its own transaction.
    #[serde(default = "yes")]
    pub group_commit: bool,
    /// How long a batch waits for more requests.
    #[serde(default = "group_window", with = "humantime_serde")]
    pub group_window: Duration,
    /// Requests per batch at most.
    #[serde(default = "group_max")]
    pub group_max: usize,
    /// How often expired holds are returned into stock.
    #[serde(default = "reap_interval", with = "humantime_serde")]
    pub reap_interval: Duration,
    /// Units one reservation may ask for.
    #[serde(default = "max_qty")]
    pub max_qty: u64,
    /// Demo SKUs given stock on the embedded default (their
    /// `products.stock`).
    #[serde(default = "demo_skus")]
    pub demo_skus: u64,
    /// With Redis configured: check and hold in Redis first (one Lua
    /// script), so refusals during a sale cost the database nothing.
    #[serde(default = "yes")]
    pub redis_gate: bool,
    /// How often the Redis gate is rebuilt from the database (also at
    /// start): it may drift (never towards overselling: SQL decides).
    #[serde(default = "reconcile_interval", with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// **Drill only — never in production** (off by default): the SQL path
    /// oversells on purpose, as the incident's system did. A reservation
    /// reads `available` and `held`, then, in separate statements, writes
    /// `available = read - qty, held = read + qty` and inserts its row: no
    /// conditional decrement, no row lock between the read and the write,
    /// no group commit. Buyers racing each other sell the same units (lost
    /// updates); the row's `CHECK` still holds, so only the reservations
    /// counted against `total` show the oversell. `rampart drill scenario
    /// flash-sale` turns it on for its naive half.
    #[serde(default)]
    pub naive_read_then_write: bool,
}

impl Default for StockSettings {
    fn default() -> Self {
        StockSettings {
            enabled: true,
            hold_for: hold_for(),
            key_ttl: key_ttl(),
            max_keys: max_keys(),
            group_commit: true,
            group_window: group_window(),
            group_max: group_max(),
            reap_interval: reap_interval(),
            max_qty: max_qty(),
            demo_skus: demo_skus(),
            redis_gate: true,
            reconcile_interval: reconcile_interval(),
            naive_read_then_write: false,
        }
    }
}

impl StockSettings {
    /// What serde cannot check; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.hold_for < Duration::from_millis(100) {
            return Err("stock.hold_for must be at least 100ms".into());
        }
        if self.key_ttl < self.hold_for {
            return Err("stock.key_ttl must be at least stock.hold_for".into());
        }
        if self.max_keys == 0 {
            return Err("stock.max_keys must be at least 1".into());
        }
        if self.group_max == 0 || self.group_max > 10_000 {
            return Err("stock.group_max must be between 1 and 10000".into());
        }
        if self.group_window > Duration::from_secs(1) {
            return Err("stock.group_window must be at most 1s".into());
        }
        if self.reap_interval < Duration::from_millis(10) {
            return Err("stock.reap_interval must be at least 10ms".into());
        }
        if self.reconcile_interval < Duration::from_millis(100) {
            return Err("stock.reconcile_interval must be at least 100ms".into());
        }
        if self.max_qty == 0 || self.max_qty > i64::MAX as u64 / 2 {
            return Err("stock.max_qty must be between 1 and 2^62".into());
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}
fn hold_for() -> Duration {
    Duration::from_secs(10 * 60)
}
fn key_ttl() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}
fn max_keys() -> usize {
    1_000_000
}
fn group_window() -> Duration {
    Duration::from_millis(2)
}
fn group_max() -> usize {
    256
}
fn reap_interval() -> Duration {
    Duration::from_secs(1)
}
fn max_qty() -> u64 {
    1_000_000
}
fn demo_skus() -> u64 {
    100
}
fn reconcile_interval() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        assert_eq!(StockSettings::default().validate(), Ok(()));
        let parsed: StockSettings = toml::from_str("").expect("empty section");
        assert_eq!(parsed.hold_for, Duration::from_secs(600));
        assert_eq!(parsed.key_ttl, Duration::from_secs(86_400));
        for (text, field) in [
            ("hold_for = \"10ms\"", "stock.hold_for"),
            ("key_ttl = \"1m\"", "stock.key_ttl"),
            ("group_max = 0", "stock.group_max"),
            ("group_window = \"2s\"", "stock.group_window"),
            ("max_qty = 0", "stock.max_qty"),
            ("reap_interval = \"1ms\"", "stock.reap_interval"),
        ] {
            let settings: StockSettings = toml::from_str(text).expect(text);
            let message = settings.validate().expect_err(text);
            assert!(message.starts_with(field), "{text}: {message}");
        }
        assert!(toml::from_str::<StockSettings>("holdfor = \"1m\"").is_err());
    }
}
