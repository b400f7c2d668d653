//! Limits on how much work reaches a dependency: a [`Bulkhead`] bounds how
//! many calls run at once (and how many may wait), a [`RetryBudget`] bounds
//! how many retries are sent relative to real traffic, and [`Backoff`] spaces
//! the retries that are allowed.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rampart::Error> {
//! use std::time::Duration;
//! use rampart::limit::{Backoff, Bulkhead, BulkheadConfig, RetryBudget, RetryBudgetConfig};
//!
//! // At most 8 calls to the search service at once, 16 more may wait 100 ms.
//! let search = Bulkhead::new(
//!     "search",
//!     BulkheadConfig { max_concurrent: 8, max_queued: 16, max_wait: Duration::from_millis(100) },
//! );
//! let hits = search.run(async { 42 }).await?; // Err(BulkheadFull/Timeout) when overloaded
//!
//! // Retries: at most 20 % of requests (+ 10/s), each after a jittered wait.
//! let budget = RetryBudget::new(RetryBudgetConfig::default());
//! let backoff = Backoff::default();
//! budget.deposit(); // one original request
//! for attempt in 0..2 {
//!     if budget.withdraw().is_err() {
//!         break; // the budget is spent: give up instead of piling on
//!     }
//!     assert!(backoff.delay(attempt) <= backoff.max_delay(attempt));
//!     // tokio::time::sleep(backoff.delay(attempt)).await; then retry
//! }
//! # let _ = hits;
//! # Ok(()) }
//! ```
//!
//! Around a tower service: `rampart::layer::BulkheadLayer` and
//! `rampart::layer::RetryPolicy` (feature `tower`).
//!
//! Why these three together: a slow dependency makes callers pile up
//! (bulkhead), the pile-up makes calls fail, failures make callers retry
//! (budget), and synchronised retries arrive as a thundering herd (jittered
//! backoff). Each stops one stage of that spiral; each works alone.

mod backoff;
mod bulkhead;
mod retry_budget;

pub use backoff::Backoff;
pub use bulkhead::{Bulkhead, BulkheadConfig, BulkheadPermit};
pub use retry_budget::{RetryBudget, RetryBudgetConfig};
