//! HTTP handlers: thin. They parse, ask the cache, and shape the answer;
//! errors become responses in `error.rs`, defences live in `layers.rs`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use rampart::cache::Lookup;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::auth::{self, AdminToken};
use crate::error::{echo, Error};
use crate::extract::{Path, Query};
use crate::openapi;
use crate::source::Key;
use crate::state::{AppState, Resource};

/// The routes, without the defence layers (see `layers::wrap`). Write
/// routes require `admin_token` (see `auth.rs`).
pub fn routes(state: AppState, admin_token: Arc<AdminToken>) -> Router {
    let admin = middleware::from_fn_with_state(admin_token, auth::require_admin);
    let router = Router::new()
        .route("/v1/r/{resource}/{key}", get(get_one))
        .route("/v1/r/{resource}", get(get_batch))
        .route(
            "/v1/r/{resource}/{key}/invalidate",
            post(invalidate).route_layer(admin),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json));
    #[cfg(feature = "test-routes")]
    let router = router
        .route("/v1/test/panic", get(test_panic))
        .route("/v1/test/slow", get(test_slow));
    router
        // After every route: it applies to the routes present.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(unknown_route)
        .with_state(state)
}

/// Any path no route matches.
async fn unknown_route(method: Method, uri: Uri) -> Error {
    Error::UnknownRoute {
        method: method.to_string(),
        path: echo(uri.path()),
    }
}

/// A route's path with a method it does not have (axum adds `Allow`).
async fn method_not_allowed(method: Method, uri: Uri) -> Error {
    Error::MethodNotAllowed {
        method: method.to_string(),
        path: echo(uri.path()),
    }
}

fn parse_key(resource: &Resource, raw: &str) -> Result<Key, Error> {
    Key::parse(resource.config.key_type, raw).map_err(|detail| Error::BadKey {
        resource: resource.config.name.clone(),
        // The parser quotes the key whole; echo a bounded part of it.
        detail: detail.replace(&format!("{raw:?}"), &format!("{:?}", echo(raw))),
    })
}

fn count_answer(state: &AppState, resource: &str, outcome: &str) {
    state
        .metrics
        .requests
        .with_label_values(&[resource, outcome])
        .inc();
}

fn x_cache(lookup: &Lookup<Bytes>) -> HeaderValue {
    HeaderValue::from_static(lookup.source().as_str())
}

/// `GET /v1/r/{resource}/{key}`: the row as JSON.
async fn get_one(
    State(state): State<AppState>,
    Path((name, raw_key)): Path<(String, String)>,
) -> Result<Response, Error> {
    let resource = state.resource(&name)?;
    let key = parse_key(resource, &raw_key)?;
    let lookup = match resource.cache.get(&key).await {
        Ok(lookup) => lookup,
        Err(err) => {
            let err = Error::from(err);
            state.metrics.count_answer(&name, err.code());
            return Err(err);
        }
    };
    state.metrics.count_answer(&name, lookup.source().as_str());
    let mut response = match lookup.value() {
        Some(row) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            row.clone(),
        )
            .into_response(),
        None => Error::NotFound {
            resource: name,
            key: echo(&raw_key),
        }
        .into_response(),
    };
    /// `age` values below this come from a table of static strings: a
    /// header value made from an integer is a heap allocation per answer,
    /// and fresh entries are young.
    const STATIC_AGES: u64 = 1024;
    static AGES: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let age = resource.cache.age(&lookup).as_secs();
    let age = match AGES
        .get_or_init(|| {
            // One string for the whole table, kept for the process's life.
            let text: &'static str = (0..STATIC_AGES)
                .map(|n| n.to_string())
                .collect::<String>()
                .leak();
            let mut at = 0;
            (0..STATIC_AGES)
                .map(|n| {
                    let len = n.to_string().len();
                    at += len;
                    HeaderValue::from_static(&text[at - len..at])
                })
                .collect()
        })
        .get(usize::try_from(age).unwrap_or(usize::MAX))
    {
        Some(value) => value.clone(),
        None => HeaderValue::from(age),
    };
    // A constant name: a string name is parsed and checked on every insert.
    const X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");
    let headers = response.headers_mut();
    headers.insert(X_CACHE, x_cache(&lookup));
    headers.insert(header::AGE, age);
    Ok(response)
}

#[derive(Deserialize)]
struct BatchQuery {
    keys: Option<String>,
}

#[derive(Serialize)]
struct BatchItem<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_cache: Option<&'static str>,
    /// `Some(None)` is a key that does not exist: `"value": null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Option<&'a RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<BatchError>,
}

#[derive(Serialize)]
struct BatchError {
    code: &'static str,
    detail: String,
}

/// `GET /v1/r/{resource}?keys=1,2,3`: many rows, in the order asked; a key
/// that does not exist has `"value": null`, one that failed has `"error"`.
async fn get_batch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<BatchQuery>,
) -> Result<Response, Error> {
    let resource = state.resource(&name)?;
    let raw = query
        .keys
        .ok_or_else(|| Error::BadRequest("query parameter `keys` is required".into()))?;
    let raw_keys: Vec<&str> = raw.split(',').collect();
    let max = state.config.server.max_batch_keys;
    if raw_keys.len() > max {
        return Err(Error::BadRequest(format!(
            "`keys` has {} keys; at most {max} per request",
            raw_keys.len()
        )));
    }
    let keys = raw_keys
        .iter()
        .map(|raw| parse_key(resource, raw))
        .collect::<Result<Vec<Key>, Error>>()?;
    let answers = resource.cache.get_many(&keys).await;
    // Rows are JSON already; embed them without re-parsing into a tree.
    let raws: Vec<Option<Box<RawValue>>> = answers
        .iter()
        .map(|answer| {
            answer
                .as_ref()
                .ok()
                .and_then(Lookup::value)
                .and_then(|row| std::str::from_utf8(row).ok())
                .and_then(|text| RawValue::from_string(text.to_owned()).ok())
        })
        .collect();
    let items: Vec<BatchItem<'_>> = raw_keys
        .iter()
        .zip(&answers)
        .zip(&raws)
        .map(|((key, answer), raw)| match answer {
            Ok(lookup) => {
                count_answer(&state, &name, lookup.source().as_str());
                BatchItem {
                    key,
                    x_cache: Some(lookup.source().as_str()),
                    value: Some(raw.as_deref()),
                    error: None,
                }
            }
            Err(err) => {
                let err = Error::Guard(err.clone());
                count_answer(&state, &name, err.code());
                BatchItem {
                    key,
                    x_cache: None,
                    value: None,
                    error: Some(BatchError {
                        code: err.code(),
                        detail: err.to_string(),
                    }),
                }
            }
        })
        .collect();
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}

/// `POST /v1/r/{resource}/{key}/invalidate`: drop the key from every tier;
/// a load that began before this will not store its result.
async fn invalidate(
    State(state): State<AppState>,
    Path((name, raw_key)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let resource = state.resource(&name)?;
    let key = parse_key(resource, &raw_key)?;
    resource.cache.invalidate(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /healthz`: the process is alive.
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once warm-up reached its fraction or deadline.
async fn readyz(State(state): State<AppState>) -> Response {
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
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "warming" },
        "warmup": progress,
    });
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(state): State<AppState>) -> Response {
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
async fn openapi_json(State(state): State<AppState>) -> Json<serde_json::Value> {
    let names: Vec<&str> = state.resources.keys().map(String::as_str).collect();
    Json(openapi::document(&names))
}

/// A route that panics, compiled only for tests (feature `test-routes`).
#[cfg(feature = "test-routes")]
async fn test_panic() -> &'static str {
    panic!("test route panicked on purpose")
}

#[cfg(feature = "test-routes")]
#[derive(Deserialize)]
struct SlowQuery {
    ms: u64,
}

/// A route that takes `?ms=` milliseconds, compiled only for tests: for
/// shedding, timeouts and graceful shutdown.
#[cfg(feature = "test-routes")]
async fn test_slow(Query(query): Query<SlowQuery>) -> &'static str {
    tokio::time::sleep(std::time::Duration::from_millis(query.ms)).await;
    "done"
}

/// Resources in a stable order (for listings).
pub fn resource_names(state: &AppState) -> Vec<String> {
    let mut names: Vec<String> = state.resources.keys().cloned().collect();
    names.sort();
    names
}
