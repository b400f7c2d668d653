//! Limits on how much work reaches a dependency: a [`Bulkhead`] bounds how
//! many calls run at once (and how many may wait), a [`RetryBudget`] bounds
//! how many retries are sent relative to real traffic, and [`Backoff`] spaces
//! the retries that are allowed.
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
