//! A bulkhead on the write routes (`POST …/invalidate`), built from the
//! library's own tower layer (`rampart::layer::BulkheadLayer`).
//!
//! Why: each invalidation is a Redis script, a pub/sub message and a fan-out
//! to every instance's L1, on the same Redis the read path needs. An admin
//! script that invalidates a whole table in parallel would otherwise queue
//! unbounded work on it; with the bulkhead it gets at most
//! [`MAX_CONCURRENT`] at once, [`MAX_QUEUED`] waiting, and a 503 with
//! `Retry-After` (code `overloaded`) beyond that — back-pressure it can
//! act on. The read routes are not behind it: their sources have the
//! cache's own bulkheads.
//!
//! The layer sits inside the admin check, so unauthenticated requests never
//! take a slot.

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::Router;
use rampart::layer::BulkheadLayer;
use rampart::limit::{Bulkhead, BulkheadConfig};
use rampart::BoxError;
use tower::ServiceBuilder;

use crate::error::Error;

/// Write requests handled at once: enough to keep Redis busy for a
/// script, few beside the read path's own Redis calls.
pub const MAX_CONCURRENT: usize = 8;
/// Write requests waiting for a slot: a script's burst, not a backlog.
pub const MAX_QUEUED: usize = 32;
/// The longest a write waits for a slot before its 503.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

/// The bulkhead every write route shares.
pub fn write_bulkhead() -> Bulkhead {
    Bulkhead::new(
        "admin-writes",
        BulkheadConfig {
            max_concurrent: MAX_CONCURRENT,
            max_queued: MAX_QUEUED,
            max_wait: MAX_WAIT,
        },
    )
}

/// Puts `bulkhead` on every route of `routes` (use as a route layer).
pub fn limit_writes<S>(routes: Router<S>, bulkhead: Bulkhead) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes.route_layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(refused))
            .layer(BulkheadLayer::new(bulkhead)),
    )
}

/// The bulkhead's refusal as the crate's `overloaded` (503, `Retry-After`):
/// the same answer as the edge's shedding, which the OpenAPI document
/// already lists for every route; the write's source is not what is busy.
async fn refused(error: BoxError) -> Error {
    match error.downcast::<rampart::Error>() {
        Ok(guard) if guard.is_rejection() => Error::Overloaded,
        Ok(guard) => Error::Guard(*guard),
        // The routes behind it are infallible: only the bulkhead errs.
        Err(other) => Error::Guard(rampart::Error::source(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use axum::routing::post;
    use std::sync::Arc;
    use tokio::sync::Semaphore;
    use tower::ServiceExt;

    /// Over the limit, a write is refused at once with the crate's 503 and
    /// `Retry-After`; the writes in flight finish, and the slots come back.
    #[tokio::test]
    async fn writes_beyond_the_bulkhead_get_503_with_retry_after() {
        let gate = Arc::new(Semaphore::new(0));
        let held = Arc::clone(&gate);
        let bulkhead = Bulkhead::new(
            "admin-writes",
            BulkheadConfig {
                max_concurrent: 1,
                max_queued: 0,
                max_wait: MAX_WAIT,
            },
        );
        let routes = Router::new().route(
            "/w",
            post(move || {
                let held = Arc::clone(&held);
                async move {
                    let _ = held.acquire().await.map(|permit| permit.forget());
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let app = limit_writes(routes, bulkhead.clone());
        let request = || Request::post("/w").body(Body::empty()).unwrap();

        let first = tokio::spawn(app.clone().oneshot(request()));
        while bulkhead.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let refused = app.clone().oneshot(request()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(refused.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "overloaded");

        gate.add_permits(1);
        assert_eq!(
            first.await.unwrap().unwrap().status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(bulkhead.in_flight(), 0);
        gate.add_permits(1);
        let after = app.oneshot(request()).await.unwrap();
        assert_eq!(after.status(), StatusCode::NO_CONTENT);
    }
}
