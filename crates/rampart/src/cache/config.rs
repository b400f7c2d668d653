//! A cache's settings, with defaults users of HTTP caches will recognise.

use std::time::Duration;

/// What a caller that lost the lease does when the holder does not publish
/// in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum LeaseTimeoutPolicy {
    /// Load from the source anyway (through the breaker and bulkhead), and
    /// fill only L1: the holder is still responsible for L2. nginx's
    /// `proxy_cache_lock_timeout` does the same.
    Load,
    /// Fail with [`ErrorKind::LeaseWaitTimeout`](crate::ErrorKind::LeaseWaitTimeout).
    Fail,
}

/// Per-cache settings. With the `serde` feature, a table whose missing
/// fields take these defaults and whose unknown fields are refused.
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct CacheConfig {
    /// L1 capacity in entries.
    pub l1_capacity: usize,
    /// How long an entry is fresh.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub ttl: Duration,
    /// After `ttl`, how long a value is still served while one background
    /// refresh runs (stale-while-revalidate; Varnish's grace is 10 s).
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub grace: Duration,
    /// After `ttl`, how long a value may still be served when the source
    /// fails or a guard refuses (stale-if-error). At least `grace`.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub stale_if_error: Duration,
    /// Spread of TTLs, as a fraction: each entry's TTL is drawn uniformly
    /// from `ttl × (1 ± jitter)`, so keys loaded together do not expire
    /// together (cache avalanche).
    pub jitter: f64,
    /// How long "this key does not exist" is remembered.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub negative_ttl: Duration,
    /// XFetch's beta; `None` turns probabilistic early refresh off. 1.0 is
    /// the paper's recommendation; higher refreshes earlier.
    pub early_refresh_beta: Option<f64>,
    /// How long a load may take before it counts as failed.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub load_timeout: Duration,
    /// How long a caller that has an expired value still in its
    /// stale-if-error window waits for the load before it is answered with
    /// that value (`x-cache: stale-if-slow`); the load goes on in the
    /// background. `None` waits for the load (up to `load_timeout`). Why a
    /// bound by default: when the source stalls, the breaker needs failed
    /// calls to open, which takes up to `load_timeout` each; callers that
    /// have something to serve should not pay that wait.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub stale_if_slow: Option<Duration>,
    /// How long a caller that lost the lease waits for the holder. Kept
    /// well under a request timeout: past it the caller loads itself (or
    /// fails, per `on_lease_timeout`), so a dead holder costs each request
    /// at most this.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub lease_wait: Duration,
    /// While waiting, how often a lease loser re-reads L2 and tries the
    /// lease again, notice or not: an expired lease (its holder died) or a
    /// lost release notice then costs at most this.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub lease_retry: Duration,
    /// What it does when that wait runs out.
    pub on_lease_timeout: LeaseTimeoutPolicy,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            l1_capacity: 100_000,
            ttl: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(300),
            jitter: 0.1,
            negative_ttl: Duration::from_secs(5),
            early_refresh_beta: None,
            load_timeout: Duration::from_secs(2),
            stale_if_slow: Some(Duration::from_millis(250)),
            lease_wait: Duration::from_secs(1),
            lease_retry: Duration::from_millis(50),
            on_lease_timeout: LeaseTimeoutPolicy::Load,
        }
    }
}

impl CacheConfig {
    /// Checks every field; the message names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.l1_capacity == 0 {
            return Err("l1_capacity must be at least 1".into());
        }
        if self.ttl.is_zero() {
            return Err("ttl must be greater than 0".into());
        }
        if self.stale_if_error < self.grace {
            return Err(format!(
                "stale_if_error ({:?}) must be at least grace ({:?})",
                self.stale_if_error, self.grace
            ));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(format!("jitter must be in [0, 1), got {}", self.jitter));
        }
        if let Some(beta) = self.early_refresh_beta {
            if !(beta.is_finite() && beta > 0.0) {
                return Err(format!("early_refresh_beta must be > 0, got {beta}"));
            }
        }
        if self.load_timeout.is_zero() {
            return Err("load_timeout must be greater than 0".into());
        }
        if self.stale_if_slow.is_some_and(|d| d.is_zero()) {
            return Err("stale_if_slow must be greater than 0 (or off)".into());
        }
        if self.lease_wait.is_zero() {
            return Err("lease_wait must be greater than 0".into());
        }
        if self.lease_retry.is_zero() {
            return Err("lease_retry must be greater than 0".into());
        }
        Ok(())
    }
}
