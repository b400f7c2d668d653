//! How long the bookkeeping keys of a cache key may live.
//!
//! Every cold miss leaves a generation (`:g`) and a fence counter (`:f`)
//! behind, and any client can cause cold misses on keys that do not exist.
//! Neither key is needed after the longest time an entry can live: a
//! generation only has to outlive the fills that read it and the entries
//! stored under it, a fence counter only the fences it issued. So both
//! expire after [`max_entry_life`], and Redis memory stays bounded by the
//! rate of misses times that life, whatever the input.

use std::time::Duration;

use rampart::cache::CacheConfig;

/// The longest an entry of a cache with `config` can matter: the longest
/// jittered TTL plus the stale-if-error window (what a fill stores it for),
/// plus the load timeout (a fill that read a generation lands at most that
/// long after reading it). Negative entries live `negative_ttl`, so that
/// counts too.
pub fn max_entry_life(config: &CacheConfig) -> Duration {
    let jitter = if config.jitter.is_finite() {
        config.jitter.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let longest_ttl = config.ttl.mul_f64(1.0 + jitter);
    let value = longest_ttl.saturating_add(config.stale_if_error);
    value
        .max(config.negative_ttl)
        .saturating_add(config.load_timeout)
}

/// `d` in whole milliseconds for a Redis `PX`, at least 1 (0 is an error
/// to Redis, and "no time" is not meant anywhere here).
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_life_covers_the_jittered_ttl_stale_window_and_load() {
        let config = CacheConfig {
            ttl: Duration::from_secs(60),
            jitter: 0.1,
            stale_if_error: Duration::from_secs(300),
            load_timeout: Duration::from_secs(5),
            ..CacheConfig::default()
        };
        assert_eq!(max_entry_life(&config), Duration::from_secs(66 + 300 + 5));
    }

    #[test]
    fn negative_entries_count_too() {
        let config = CacheConfig {
            ttl: Duration::from_secs(1),
            jitter: 0.0,
            stale_if_error: Duration::ZERO,
            grace: Duration::ZERO,
            negative_ttl: Duration::from_secs(30),
            load_timeout: Duration::from_secs(2),
            ..CacheConfig::default()
        };
        assert_eq!(max_entry_life(&config), Duration::from_secs(32));
    }
}
