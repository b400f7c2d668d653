//! tower middleware over the guards (feature `tower`): each guard as a
//! [`Layer`](tower::Layer) that composes in a
//! [`ServiceBuilder`](tower::ServiceBuilder) around any
//! [`Service`](tower::Service) — an HTTP client, a database call wrapped in
//! `service_fn`, a whole axum router.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rampart::BoxError> {
//! use std::time::Duration;
//! use rampart::breaker::{BreakerConfig, CircuitBreaker};
//! use rampart::layer::{BulkheadLayer, CircuitBreakerLayer};
//! use rampart::limit::{Bulkhead, BulkheadConfig};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! let breaker = CircuitBreaker::new("users-db", BreakerConfig::default());
//! let bulkhead = Bulkhead::new("users-db", BulkheadConfig::default());
//! let users = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()))
//!     .layer(BulkheadLayer::new(bulkhead))
//!     .service(service_fn(|id: u64| async move {
//!         Ok::<_, std::io::Error>(format!("user {id}"))
//!     }));
//! assert_eq!(users.oneshot(42).await?, "user 42");
//! # Ok(()) }
//! ```
//!
//! | layer | guard | error when it refuses |
//! |---|---|---|
//! | [`CircuitBreakerLayer`] | [`CircuitBreaker`](crate::breaker::CircuitBreaker) | [`ErrorKind::BreakerOpen`](crate::ErrorKind::BreakerOpen) |
//! | [`BulkheadLayer`] | [`Bulkhead`](crate::limit::Bulkhead) | [`ErrorKind::BulkheadFull`](crate::ErrorKind::BulkheadFull), [`ErrorKind::BulkheadTimeout`](crate::ErrorKind::BulkheadTimeout) |
//! | [`RetryPolicy`] (for tower's `RetryLayer`) | [`RetryBudget`](crate::limit::RetryBudget) + [`Backoff`](crate::limit::Backoff) | the last attempt's error |
//! | [`SingleFlightLayer`] | [`Flight`](crate::flight::Flight) | the shared call's error, as [`ErrorKind::Source`](crate::ErrorKind::Source) |
//!
//! Conventions shared by every layer, as tower's own middleware does them:
//!
//! * The service's error is [`BoxError`](crate::BoxError): the inner
//!   service's error boxed as it was (except behind [`SingleFlightLayer`],
//!   where one error is shared by every waiter and so arrives as an
//!   [`Error`](crate::Error) of kind `Source` wrapping it), or a boxed
//!   [`Error`](crate::Error) when a guard refused. [`RetryPolicy`] leaves
//!   the error type as it is. `err.downcast_ref::<rampart::Error>()` tells them
//!   apart; [`Error::is_rejection`](crate::Error::is_rejection) and
//!   [`Error::retry_after`](crate::Error::retry_after) say what to answer.
//! * Guards are shared, not owned: the layer holds a clone of the guard you
//!   built (cheap, an `Arc`), so you keep a handle for metrics
//!   ([`CircuitBreaker::stats`](crate::breaker::CircuitBreaker::stats)) and
//!   operator actions, and one guard can sit in several stacks.
//! * Cancellation (the response future dropped) releases whatever the call
//!   held and reports nothing; a panic inside the inner service releases
//!   it too, and the breaker counts it as a failure.
//!
//! # In axum
//!
//! axum wants middleware whose error is `Infallible`: put a
//! `HandleErrorLayer` outside the guards to turn a refusal into a response.
//!
//! ```
//! use axum::error_handling::HandleErrorLayer;
//! use axum::http::{header, StatusCode};
//! use axum::response::IntoResponse;
//! use axum::routing::post;
//! use axum::Router;
//! use rampart::layer::BulkheadLayer;
//! use rampart::limit::{Bulkhead, BulkheadConfig};
//! use rampart::BoxError;
//! use tower::ServiceBuilder;
//!
//! async fn refused(error: BoxError) -> impl IntoResponse {
//!     let retry_after = error
//!         .downcast_ref::<rampart::Error>()
//!         .and_then(rampart::Error::retry_after)
//!         .map_or(1, |wait| wait.as_secs().max(1));
//!     (
//!         StatusCode::SERVICE_UNAVAILABLE,
//!         [(header::RETRY_AFTER, retry_after.to_string())],
//!         error.to_string(),
//!     )
//! }
//!
//! let exports = Bulkhead::new("exports", BulkheadConfig::default());
//! let app: Router = Router::new()
//!     .route("/export", post(|| async { "started" }))
//!     .route_layer(
//!         ServiceBuilder::new()
//!             .layer(HandleErrorLayer::new(refused))
//!             .layer(BulkheadLayer::new(exports)),
//!     );
//! # let _ = app;
//! ```
//!
//! `rampart serve` puts its write routes behind a bulkhead this way
//! (`crates/rampart-server/src/http/write_limit.rs`).
//!
//! # Order
//!
//! Outermost first: retry → breaker → bulkhead → the call. The
//! breaker before the bulkhead refuses at once when the dependency is down
//! instead of queueing for a call that would be refused anyway (the same
//! order as [`Guarded`](crate::guarded::Guarded)); retry outside the
//! breaker, with a policy that does not retry rejections, so a retry is
//! spent only on a real failure.

mod breaker;
mod bulkhead;
mod retry;
mod single_flight;

pub use breaker::{
    CircuitBreakerLayer, CircuitBreakerService, Classify, ErrorsAreFailures, Outcome,
    ResponseFuture as CircuitBreakerFuture,
};
pub use bulkhead::{BulkheadLayer, BulkheadService, ResponseFuture as BulkheadFuture};
pub use retry::{RetryErrors, RetryPolicy, Retryable};
pub use single_flight::{SingleFlightLayer, SingleFlightService};
