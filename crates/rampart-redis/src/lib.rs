//! # rampart-redis — the guards' distributed half on Redis / Redis Cluster
//!
//! Plugs into the library's traits so that several `rampart` processes
//! share one cache tier and load each cold key once between them:
//!
//! | module | what |
//! |---|---|
//! | [`conn`] | one connection type for a single node or a Cluster; `GuardedRedis`, the one guarded call |
//! | [`breakers`] | one circuit breaker per node, following the Cluster's slot map |
//! | [`keys`] | key layout: a key's value, generation, lease and fences share a hash tag (one slot) |
//! | [`codec`] | the compact binary encoding of a stored entry |
//! | [`scripts`] | the Lua scripts: fenced fill, invalidation, lease acquire / renew / release |
//! | [`tier`] | [`RedisTier`]: the L2 [`Tier`](rampart::Tier) |
//! | [`lease`] | [`RedisLease`]: the fenced cross-process [`Lease`](rampart::Lease) with a watchdog |
//! | [`notices`] | one pub/sub subscriber per process: lease releases wake local waiters, invalidations reach L1, gaps are reported |
//! | [`bounds`] | how long a key's bookkeeping (generation, fence counter) lives |
//! | [`stock`] | [`RedisStock`](stock::RedisStock): the stock gate — one script checks and decrements, records the request key and the hold |
//! | [`deploy`] | [`RedisDeployment`]: connect, subscribe, attach tier + lease to caches, wire notices to L1 |
//!
//! Every Redis call is bounded by a timeout and goes through the circuit
//! breaker of the node it is for: while a node is down or slow, the
//! callers of its slots are told at once (an `ErrorKind::Tier`) and the
//! cache goes on without L2 for those keys.

#![warn(missing_docs)]

pub mod bounds;
pub mod breakers;
pub mod codec;
pub mod conn;
pub mod deploy;
pub mod keys;
pub mod lease;
pub mod notices;
pub mod scripts;
pub mod stock;
pub mod tier;

pub use conn::RedisConn;
pub use deploy::RedisDeployment;
pub use lease::RedisLease;
pub use notices::Notices;
pub use tier::RedisTier;
