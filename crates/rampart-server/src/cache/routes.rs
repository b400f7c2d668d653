//! The read-through cache's HTTP handlers, thin: they parse the key, ask
//! the resource's cache, and shape the answer (`x-cache`, `age`). Errors
//! become responses in `error.rs`; defences are the layers in `http/`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use rampart::cache::Lookup;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::cache::keys::Key;
use crate::error::{echo, Error};
use crate::http::extract::{segments_after, Path, Query, RawUri};
use crate::state::{AppState, Resource};

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
    HeaderValue::from_static(lookup.status().as_str())
}

/// `GET /v1/r/{resource}/{key}`: the row as JSON.
/// Also reached without the router, for `GET` (see `http::layers::App`):
/// this route serves `HEAD`.
pub async fn get_one(State(state): State<AppState>, RawUri(uri): RawUri) -> Response {
    read_one(&state, uri.path()).await
}

/// The answer to a read of `path` (`/v1/r/{resource}/{key}`), errors
/// included.
pub async fn read_one(state: &AppState, path: &str) -> Response {
    match lookup_one(state, path).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn lookup_one(state: &AppState, path: &str) -> Result<Response, Error> {
    let [name, raw_key] = segments_after::<2>(path, "/v1/r/")?;
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
    state.metrics.count_answer(&name, lookup.status().as_str());
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
            resource: name.into_owned(),
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

/// The batch route's query: every `name=value` pair, in order. Decoded
/// as pairs rather than into a struct because `keys` may repeat.
type BatchQuery = Vec<(String, String)>;

/// The keys a batch asks for: every `keys` parameter's value, in order. A
/// single parameter is split on commas (`?keys=1,2,3`); repeated ones are
/// taken whole (`?keys=a&keys=b,c` is `a` and `b,c`), so a key with a
/// comma can be asked for.
fn batch_keys(query: &BatchQuery) -> Result<Vec<&str>, Error> {
    let values: Vec<&str> = query
        .iter()
        .filter(|(name, _)| name == "keys")
        .map(|(_, value)| value.as_str())
        .collect();
    match values.as_slice() {
        [] => Err(Error::BadRequest(
            "query parameter `keys` is required".into(),
        )),
        [one] => Ok(one.split(',').collect()),
        many => Ok(many.to_vec()),
    }
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

/// `GET /v1/r/{resource}?keys=1,2,3` or `?keys=1&keys=2`: many rows, in
/// the order asked; a key that does not exist has `"value": null`, one
/// that failed has `"error"`.
pub async fn get_batch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<BatchQuery>,
) -> Result<Response, Error> {
    let resource = state.resource(&name)?;
    let raw_keys = batch_keys(&query)?;
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
                count_answer(&state, &name, lookup.status().as_str());
                BatchItem {
                    key,
                    x_cache: Some(lookup.status().as_str()),
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
pub async fn invalidate(
    State(state): State<AppState>,
    Path((name, raw_key)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let resource = state.resource(&name)?;
    let key = parse_key(resource, &raw_key)?;
    resource.cache.invalidate(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Resources in a stable order (for listings).
pub fn resource_names(state: &AppState) -> Vec<String> {
    let mut names: Vec<String> = state.resources.keys().cloned().collect();
    names.sort();
    names
}
