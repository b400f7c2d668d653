//! Tiered read-through cache: L1 in process → L2 [`Tier`] → [`Loader`].
//!
//! The read path (see ARCHITECTURE.md for the picture):
//!
//! 1. **L1 hit** — fresh: answer ([`CacheStatus::Hit`], or [`CacheStatus::Negative`]
//!    for a key known not to exist). Within grace: answer the stale value
//!    ([`CacheStatus::Stale`]) and start one background refresh.
//!    On an L1 miss, an [`ExistenceFilter`](crate::existence::ExistenceFilter)
//!    (if configured) answers a key that certainly does not exist
//!    ([`CacheStatus::Negative`], no load, nothing cached), and an
//!    [`Admission`] (if configured) may refuse the miss (a per-caller budget).
//! 2. **Miss** — through [`Flight`](crate::flight::Flight): one task per key
//!    per process goes on, the others wait ([`CacheStatus::Coalesced`]).
//! 3. **L2** — a fresh entry fills L1 ([`CacheStatus::L2`]).
//! 4. **Lease** — across processes, one holder loads; the others wait for
//!    its release (bounded), then re-read L2.
//! 5. **Double check** L2, then the [`Loader`] behind the circuit breaker and
//!    the bulkhead; fill L2 and L1 ([`CacheStatus::Miss`]).
//! 6. If the source fails or a guard refuses, an expired value still inside
//!    its stale-if-error window is answered ([`CacheStatus::StaleIfError`]).
//!
//! **No stale sets.** Invalidation bumps a per-key generation before it
//! deletes; a fill carries the generation it read *before* loading and is
//! refused if it moved (the problem memcache leases solve).

mod admission;
mod config;
mod entry;
mod generation;
mod lease;
mod loader;
mod local_lease;
mod memory_tier;
mod tier;
mod tiered;

pub use admission::Admission;
pub use config::{CacheConfig, LeaseTimeoutPolicy};
pub use entry::{CacheStatus, Entry, Lookup};
pub use lease::{Acquired, Lease, LeaseGuard, LeaseWait};
pub use loader::Loader;
pub use local_lease::LocalLease;
pub use memory_tier::MemoryTier;
pub use tier::{FillOutcome, Stored, Tier, TierRead};
pub use tiered::{CacheStats, Get, TieredCache, TieredCacheBuilder};
