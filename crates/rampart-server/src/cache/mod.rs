//! The read-through cache capability: `GET /v1/r/{resource}/{key}` and
//! friends over a SQL source, one guarded `TieredCache` per resource.
//!
//! | module | what |
//! |---|---|
//! | [`routes`] | the handlers, thin |
//! | [`keys`] | a resource's key, checked at the edge |
//! | [`source`] | the SQL pool, rows as JSON, the cache's `Loader` |
//! | [`warmup`] | start-up warm-up, bounded and adaptive |
//! | [`ceiling`] | the source's plain batch-read rate, for `rampart warm --measure` |
//! | [`pressure`] | the warm-up's back-off signal (pool waits, foreground p99) |
//! | [`filter`] | the existence filters: start-up build, periodic and on-demand rebuilds |
//! | [`miss_budget`] | the per-client miss budget (429 past it), charged on misses only |
//! | [`demo`] | the demo data set of the embedded default |
//! | [`guards`] | `[resource.guards]`: guards switched off for `rampart drill scenario`'s naive runs |
//! | [`faults`] | `[resource.faults]`: faults injected into loads (a share of keys panic), for drills |

pub mod ceiling;
pub mod demo;
pub mod faults;
pub mod filter;
pub mod guards;
pub mod keys;
pub mod miss_budget;
pub mod pressure;
pub mod routes;
pub mod source;
pub mod warmup;
