//! The guards' settings as a service's config file writes them (feature
//! `serde`): missing fields take the `Default`s, unknown ones are refused,
//! durations are human-readable.
#![cfg(all(feature = "serde", not(rampart_loom)))]

use std::time::Duration;

use rampart::breaker::{BreakerConfig, SlidingWindow};
use rampart::cache::{CacheConfig, LeaseTimeoutPolicy};
use rampart::limit::BulkheadConfig;

#[derive(serde::Deserialize)]
struct File {
    #[serde(default)]
    cache: CacheConfig,
    #[serde(default)]
    breaker: BreakerConfig,
    #[serde(default)]
    bulkhead: BulkheadConfig,
}

#[test]
fn an_empty_table_is_the_defaults() {
    let file: File = toml::from_str("").expect("parse");
    assert_eq!(
        format!("{:?}", file.cache),
        format!("{:?}", CacheConfig::default())
    );
    assert_eq!(file.breaker, BreakerConfig::default());
    assert_eq!(file.bulkhead, BulkheadConfig::default());
}

#[test]
fn fields_are_read_with_their_units() {
    let file: File = toml::from_str(
        r#"
        [cache]
        ttl = "90s"
        stale_if_slow = "100ms"
        on_lease_timeout = "fail"
        [breaker]
        window = "100 calls"
        open_wait = "2s"
        [bulkhead]
        max_wait = "250ms"
        "#,
    )
    .expect("parse");
    assert_eq!(file.cache.ttl, Duration::from_secs(90));
    assert_eq!(file.cache.stale_if_slow, Some(Duration::from_millis(100)));
    assert_eq!(file.cache.on_lease_timeout, LeaseTimeoutPolicy::Fail);
    assert_eq!(file.cache.grace, CacheConfig::default().grace);
    assert_eq!(file.breaker.window, SlidingWindow::Count { calls: 100 });
    assert_eq!(file.breaker.open_wait, Duration::from_secs(2));
    assert_eq!(file.bulkhead.max_wait, Duration::from_millis(250));
    let timed: File = toml::from_str("[breaker]\nwindow = \"1m\"").expect("parse");
    assert_eq!(timed.breaker.window, SlidingWindow::Time { seconds: 60 });
}

#[test]
fn unknown_fields_and_bad_values_are_refused_by_name() {
    for (text, needle) in [
        ("[cache]\nttll = \"1s\"", "ttll"),
        ("[cache]\nttl = \"soon\"", "ttl"),
        ("[breaker]\nwindow = \"1.5s\"", "whole seconds"),
        ("[breaker]\nwindow = \"many calls\"", "number of calls"),
        ("[cache]\non_lease_timeout = \"wait\"", "on_lease_timeout"),
    ] {
        let err = match toml::from_str::<File>(text) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(err) => err.to_string(),
        };
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}
