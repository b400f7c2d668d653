//! # rampart — concurrency-safety guards
//!
//! Small, composable guards that stand between many concurrent callers and
//! the shared state they hammer. Each module is one guard; each can be used
//! alone. None of them knows about HTTP, SQL or Redis: those live in the
//! `rampart-server` and `rampart-redis` crates, which plug into the traits
//! defined here ([`Loader`], [`Tier`], [`Lease`]).
//!
//! # Which guard for which failure
//!
//! | symptom | guard | what it does |
//! |---|---|---|
//! | the same rows are read over and over; the database is the bottleneck | [`cache::TieredCache`] | read-through cache: L1 in process, optional shared L2, the loader behind a breaker and a bulkhead |
//! | a hot key expires and N requests query it at once (stampede) | [`cache::TieredCache`], or [`flight::Flight`] / [`layer::SingleFlightLayer`] alone | one load per key, the others wait and share it |
//! | lookups of ids that do not exist all reach the database (penetration) | [`cache::TieredCache`] with [`existence::ExistenceFilter`] | caches "absent" (`negative_ttl`) for a key that comes back; the filter answers keys that certainly do not exist without a load, distinct ones included |
//! | a dependency is down and every call waits out its timeout | [`breaker::CircuitBreaker`], [`layer::CircuitBreakerLayer`] | stops calling it, answers at once with `retry_after`, probes to recover |
//! | a slow dependency ties up every worker / connection | [`limit::Bulkhead`], [`layer::BulkheadLayer`] | bounds calls in flight and the queue, sheds the rest at once |
//! | retries multiply the load on a struggling dependency (retry storm) | [`limit::RetryBudget`] + [`limit::Backoff`], [`layer::RetryPolicy`] | retries capped at a fraction of traffic, spaced with full jitter |
//! | a start-up warm-up floods the source | [`warm::warm`] | batched, bounded, rate-limited, backs off under pressure |
//! | a call must go through breaker + bulkhead + timeout, panics contained | [`guarded::Guarded`] | the composition the cache itself uses |
//!
//! # Ten-minute start: an axum handler with a cache, a breaker and a bulkhead
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rampart::Error> {
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use rampart::cache::TieredCache;
//! use rampart::{BoxError, Loader};
//!
//! struct Users; // holds your sqlx pool
//!
//! #[async_trait]
//! impl Loader<i64, Arc<str>> for Users {
//!     async fn load(&self, id: &i64) -> Result<Option<Arc<str>>, BoxError> {
//!         // sqlx::query_as("SELECT name FROM users WHERE id = ?").bind(id)
//!         //     .fetch_optional(&self.pool).await?.map(|(name,): (String,)| name.into())
//!         Ok(Some(Arc::from(format!("user {id}"))))
//!     }
//! }
//!
//! // Once, at start-up; clones share everything (put it in your axum state).
//! let users = TieredCache::builder("users", Users).build()?;
//! // In the handler:
//! match users.get(&42).await {
//!     Ok(lookup) => assert_eq!(lookup.value().map(|name| &**name), Some("user 42")),
//!     Err(refused) if refused.is_rejection() => { /* 503 + Retry-After: refused.retry_after() */ }
//!     Err(failed) => { /* 502 */ let _ = failed; }
//! }
//! # Ok(()) }
//! ```
//!
//! Runnable programs to copy from, in `crates/rampart/examples/` (each is
//! `cargo run -p rampart --example NAME`):
//!
//! | example | shows |
//! |---|---|
//! | `axum_read_through` | the above in a real axum server over SQLite with sqlx, answering 503 + `Retry-After` when a guard refuses |
//! | `guarded_http_client` | retry budget + breaker + bulkhead + timeout around a hyper client, against a local upstream that turns flaky, slow, down |
//! | `bounded_warmup` | a warm-up from a key stream, its bounds visible at the source |
//! | `redis_tier` (in `rampart-redis`) | two cache instances sharing one Redis tier and lease |
//!
//! # Modules
//!
//! | module | guard | stops |
//! |---|---|---|
//! | [`flight`] | per-key single-flight | N identical loads of one cold key |
//! | [`breaker`] | circuit breaker | calls piling onto a dead dependency |
//! | [`limit`] | bulkhead, retry budget, backoff | unbounded concurrency, retry storms |
//! | [`cache`] | tiered read-through cache | stampedes, stale sets, penetration |
//! | [`existence`] | concurrent Bloom filter of the keys that exist | distinct missing keys each reaching the source |
//! | [`warm`] | bounded, batched, adaptive warm-up | a start-up storm taking the source down |
//! | [`stock`] | per-SKU stock gate, reservations, idempotency by request key | overselling, double decrements on retry, holds that never come back |
//! | [`snapshot`] | versioned value swapped atomically, lock-free reads, never older | torn or backwards reads of hot-swapped configuration |
//! | [`layer`] | the guards as tower layers (feature `tower`) | — |
//!
//! Supporting pieces: [`guarded`] (one call behind breaker + bulkhead +
//! timeout, the outcome reported: how the guards compose), [`clock`] (one
//! cheap, mockable time source for every guard) and [`Error`] (the crate's
//! one error type: [`Error::is_rejection`] tells "a guard refused" from
//! "the call failed").
//!
//! # Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `tower` | off | [`layer`]: `CircuitBreakerLayer`, `BulkheadLayer`, `RetryPolicy`, `SingleFlightLayer` (depends on `tower` with `retry`) |
//! | `serde` | off | `Deserialize` for the guards' settings (`CacheConfig`, `BreakerConfig`, `BulkheadConfig`), durations as `"500ms"` |
//!
//! The guards need a Tokio runtime only where they wait (a bulkhead queue,
//! a cache's load timeout, the warm-up's rate limit).
//!
//! # Minimum supported Rust version
//!
//! 1.85 (the workspace's `rust-version`; `clippy.toml` holds clippy to it).
//! Raising it is a minor-version change (see `CONTRIBUTING.md`).
//!
//! The read path that ties the guards together is described in
//! `ARCHITECTURE.md`.

#![warn(missing_docs)]
// The crate docs link into `layer`, which exists only with `tower`; CI
// builds the docs with every feature, where every link is checked.
#![cfg_attr(not(feature = "tower"), allow(rustdoc::broken_intra_doc_links))]

pub mod breaker;
pub mod cache;
pub mod clock;
pub mod contention;
mod error;
pub mod existence;
pub mod flight;
pub mod guarded;
#[cfg(feature = "tower")]
pub mod layer;
pub mod limit;
#[cfg(not(rampart_loom))]
mod send_sync;
pub mod snapshot;
pub mod stock;
mod sync;
pub mod warm;

pub use cache::{Lease, Loader, Tier};
pub use error::{BoxError, Error, ErrorKind};
