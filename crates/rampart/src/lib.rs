//! # rampart — concurrency-safety guards
//!
//! Small, composable guards that stand between many concurrent callers and
//! the shared state they hammer. Each module is one guard; each can be used
//! alone. None of them knows about HTTP, SQL or Redis: those live in the
//! `rampart-server` and `rampart-redis` crates, which plug into the traits
//! defined here ([`Loader`], [`Tier`], [`Lease`]).
//!
//! | module | guard | stops |
//! |---|---|---|
//! | [`flight`] | per-key single-flight | N identical loads of one cold key |
//! | [`breaker`] | circuit breaker | calls piling onto a dead dependency |
//! | [`limit`] | bulkhead, retry budget | unbounded concurrency, retry storms |
//! | [`cache`] | tiered read-through cache | stampedes, stale sets, penetration |
//! | [`existence`] | concurrent Bloom filter of the keys that exist | distinct missing keys each reaching the source |
//! | [`warm`] | bounded, batched, adaptive warm-up | a start-up storm taking the source down |
//!
//! Supporting pieces: [`guarded`] (one call behind breaker + bulkhead +
//! timeout, the outcome reported: how the guards compose), [`clock`] (one
//! cheap, mockable time source for every guard) and [`Error`] (the crate's
//! one error type).
//!
//! The read path that ties them together is described in `ARCHITECTURE.md`.

pub mod breaker;
pub mod cache;
pub mod clock;
mod error;
pub mod existence;
pub mod flight;
pub mod guarded;
pub mod limit;
mod sync;
pub mod warm;

pub use cache::{Lease, Loader, Tier};
pub use error::{BoxError, Error, ErrorKind};
