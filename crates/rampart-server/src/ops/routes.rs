//! Operators' routes: liveness, readiness (with the warm-up's progress and
//! the Redis subscription), Prometheus metrics and the OpenAPI document.
//! Plus, behind the `test-routes` feature, routes that panic or stall on
//! purpose for the defence tests.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
#[cfg(feature = "test-routes")]
use serde::Deserialize;

#[cfg(feature = "test-routes")]
use crate::http::extract::Query;
use crate::ops::openapi;
use crate::state::AppState;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once warm-up reached its fraction or deadline.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let ready = state.is_ready();
    let progress: serde_json::Map<String, serde_json::Value> = state
        .resources
        .iter()
        .map(|(name, r)| {
            let w = &r.warm;
            (
                name.clone(),
                serde_json::json!({
                    "keys_done": w.keys_done(),
                    "keys_failed": w.keys_failed(),
                    "expected": w.expected(),
                    "finished": w.is_finished(),
                }),
            )
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = serde_json::json!({
        "status": if ready { "ready" } else { "warming" },
        "warmup": progress,
    });
    if let Some(shared) = &state.redis {
        let notices = shared.notices();
        body["redis"] = serde_json::json!({
            "subscribed": notices.is_subscribed(),
            "subscribed_through": notices
                .subscribed_url()
                .map(|url| crate::cache::source::redact(&url)),
            "subscriptions": notices.subscriptions(),
            "gaps": notices.gaps(),
        });
    }
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.refresh_gauges();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /openapi.json`: the API description, generated from `openapi.rs`'s
/// route table (which a test checks against this router).
pub async fn openapi_json(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(openapi::document(&state.config))
}

/// A route that panics, compiled only for tests (feature `test-routes`).
#[cfg(feature = "test-routes")]
pub async fn test_panic() -> &'static str {
    panic!("test route panicked on purpose")
}

#[cfg(feature = "test-routes")]
#[derive(Deserialize)]
pub struct SlowQuery {
    /// How long to take.
    pub ms: u64,
}

/// A route that takes `?ms=` milliseconds, compiled only for tests: for
/// shedding, timeouts and graceful shutdown.
#[cfg(feature = "test-routes")]
pub async fn test_slow(Query(query): Query<SlowQuery>) -> &'static str {
    tokio::time::sleep(std::time::Duration::from_millis(query.ms)).await;
    "done"
}
