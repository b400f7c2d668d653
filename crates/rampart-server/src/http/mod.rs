//! The HTTP edge every capability shares: accepting connections, their
//! deadlines, the defence layers, extractors whose rejections are the
//! crate's errors, and the admin token on write routes.
//!
//! | module | what |
//! |---|---|
//! | [`accept`] | the accept loop: connection cap, accept-error back-off, drain |
//! | [`connection`] | one connection: header, idle and busy deadlines |
//! | [`layers`] | request id, tracing, metrics, head limits, shedding, timeout, panic isolation |
//! | [`extract`] | path and query extractors |
//! | [`etag`] | `"N"` entity tags: `ETag` out, `If-Match` back |
//! | [`auth`] | the admin token and the layer on write routes |
//! | [`write_limit`] | a bulkhead on the write routes (the library's `BulkheadLayer`) |

pub mod accept;
pub mod auth;
pub mod connection;
pub mod etag;
pub mod extract;
pub mod layers;
pub mod write_limit;
