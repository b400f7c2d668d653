//! `[resource.guards]`: switches that take a guard off a resource's read
//! path. Every one is on by default and belongs on in production; they
//! exist so that `rampart drill scenario` can run the *same* service the
//! way the systems in the incidents ran (no single-flight, no breaker, no
//! bulkhead) and show the difference each guard makes, instead of
//! comparing rampart with a separately written fake.

use serde::Deserialize;

/// Which guards a resource's cache is built with.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct GuardsConfig {
    /// Concurrent misses of one key share one load (the in-process flight
    /// and the cross-process lease). Off: every miss loads (a stampede).
    pub single_flight: bool,
    /// The circuit breaker in front of the source (`[resource.breaker]`).
    /// Off: every miss reaches the source however it is failing.
    pub breaker: bool,
    /// The bulkhead on source loads (`[resource.bulkhead]`). Off: loads
    /// queue on the connection pool without a bound of their own.
    pub bulkhead: bool,
}

impl Default for GuardsConfig {
    fn default() -> Self {
        Self {
            single_flight: true,
            breaker: true,
            bulkhead: true,
        }
    }
}
