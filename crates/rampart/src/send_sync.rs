//! Compile-time proof that the public types can be shared between tasks
//! and threads: every guard is built once and used from many tasks, so
//! losing `Send` or `Sync` (an `Rc`, a `RefCell` slipped into a field) must
//! fail the build here, not in a user's `tokio::spawn`.
//!
//! Not under loom: its model types are checked by the loom tests instead.

use std::sync::Arc;

use crate::breaker::{BreakerConfig, BreakerStats, CircuitBreaker, Permit, State, Transition};
use crate::cache::{
    CacheConfig, CacheStats, CacheStatus, Entry, LeaseGuard, LeaseWait, LocalLease, Lookup,
    MemoryTier, TieredCache, TieredCacheBuilder,
};
use crate::clock::{Clock, Instant, Mock, WallClock};
use crate::flight::Flight;
use crate::guarded::Guarded;
use crate::limit::{Backoff, Bulkhead, BulkheadConfig, BulkheadPermit, RetryBudget};
use crate::warm::{WarmConfig, WarmProgress, WarmReport};
use crate::{Error, ErrorKind};

const fn shared<T: Send + Sync>() {}
const fn sent<T: Send>() {}

type Value = Arc<str>;

const _: () = {
    shared::<Error>();
    shared::<ErrorKind>();
    shared::<Clock>();
    shared::<Instant>();
    shared::<Mock>();
    shared::<WallClock>();
    shared::<CircuitBreaker>();
    shared::<BreakerConfig>();
    shared::<BreakerStats>();
    shared::<State>();
    shared::<Transition>();
    shared::<Permit>();
    shared::<Bulkhead>();
    shared::<BulkheadConfig>();
    shared::<BulkheadPermit>();
    shared::<RetryBudget>();
    shared::<Backoff>();
    shared::<Flight<u64, Value>>();
    shared::<Guarded<'static>>();
    shared::<TieredCache<u64, Value>>();
    shared::<TieredCacheBuilder<u64, Value>>();
    shared::<CacheConfig>();
    shared::<CacheStats>();
    shared::<CacheStatus>();
    shared::<Entry<Value>>();
    shared::<Lookup<Value>>();
    shared::<MemoryTier<u64, Value>>();
    shared::<LocalLease<u64>>();
    // Owned by the one task holding the lease: Send is what it needs.
    sent::<LeaseGuard>();
    sent::<LeaseWait>();
    shared::<WarmConfig>();
    shared::<WarmProgress>();
    shared::<WarmReport>();
};

#[cfg(feature = "tower")]
const _: () = {
    use crate::layer::{
        BulkheadLayer, BulkheadService, CircuitBreakerLayer, CircuitBreakerService, RetryPolicy,
    };
    type Inner = fn(u64) -> u64;
    shared::<CircuitBreakerLayer>();
    shared::<CircuitBreakerService<Inner>>();
    shared::<BulkheadLayer>();
    shared::<BulkheadService<Inner>>();
    shared::<RetryPolicy>();
};

/// The futures a service awaits inside its handlers must be `Send`, or
/// they cannot be used from axum or `tokio::spawn`. Never called: it only
/// has to compile.
#[allow(dead_code)]
fn futures_are_send(
    cache: &TieredCache<u64, Value>,
    flight: &Flight<u64, Value>,
    bulkhead: &Bulkhead,
) {
    fn send<T: Send>(_: &T) {}
    send(&cache.get(&1));
    send(&cache.get_many(&[1]));
    send(&cache.invalidate(&1));
    send(&flight.run(1, || async { Ok(Value::from("")) }));
    send(&bulkhead.acquire());
    send(&bulkhead.run(async {}));
}
