//! Tiered read-through cache: L1 in process → L2 [`Tier`] → [`Loader`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rampart::Error> {
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use rampart::cache::{CacheStatus, TieredCache};
//! use rampart::{BoxError, Loader};
//!
//! /// The source of truth: a database query in real life.
//! struct Users;
//!
//! #[async_trait]
//! impl Loader<u64, Arc<str>> for Users {
//!     async fn load(&self, id: &u64) -> Result<Option<Arc<str>>, BoxError> {
//!         Ok((*id < 100).then(|| Arc::from(format!("user {id}")))) // None: no such user
//!     }
//! }
//!
//! // Breaker and bulkhead in front of the loader are on by default.
//! let users: TieredCache<u64, Arc<str>> = TieredCache::builder("users", Users).build()?;
//! let first = users.get(&7).await?;
//! assert_eq!((first.value().map(|v| &**v), first.status()), (Some("user 7"), CacheStatus::Miss));
//! assert_eq!(users.get(&7).await?.status(), CacheStatus::Hit);
//! assert_eq!(users.get(&404).await?.value(), None); // remembered as absent
//! # Ok(()) }
//! ```
//!
//! Add an L2 shared between processes with [`TieredCacheBuilder::tier`] and
//! [`TieredCacheBuilder::lease`] (the `rampart-redis` crate provides both).
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
mod refresh;
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
pub use tiered::{CacheStats, FillTicket, Get, TieredCache, TieredCacheBuilder};
