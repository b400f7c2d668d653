//! `/v1/config/...`: read, long-poll and watch (anyone); write, roll back
//! and canary (admin token, through the write bulkhead — see `app.rs`).
//! Thin: the rules live in `store.rs` (what a change may do) and
//! `registry.rs` / `model.rs` (what a client is served).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::future::{select_all, FutureExt};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::model::{rfc3339, Change, NsState, Version};
use super::store::{NewCanary, Precondition};
use super::ConfigCenter;
use crate::error::{echo, Error};
use crate::http::etag::{etag, quoted_version};
use crate::http::extract::{Path, Query};
use crate::ops::openapi::Route;
use crate::state::AppState;

/// Whether a request (method, route template) may hold its answer up to
/// `config_center.max_wait`: `GET /v1/config/{ns}` and `POST
/// /v1/config/watch`. `layers.rs` gives them that much more than the
/// request timeout, and counts them against `config_center.max_watchers`
/// instead of the in-flight limit (a parked watcher is not work).
pub fn is_watch(method: &Method, template: &str) -> bool {
    (method == Method::GET && template == "/v1/config/{ns}")
        || (method == Method::POST && template == "/v1/config/watch")
}

/// The `wait` of a long-poll or watch that names none.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The longest namespace name.
const MAX_NAME: usize = 128;
/// The most namespaces one watch may name.
const MAX_WATCHED: usize = 1_000;
/// The most client ids a canary may list, and the longest id.
const MAX_CANARY_CLIENTS: usize = 10_000;
const MAX_CLIENT_ID: usize = 256;
/// The most versions one history page may hold.
const MAX_HISTORY: u32 = 1_000;
/// The largest version number a request may name (the database's BIGINT).
const MAX_VERSION: u64 = i64::MAX as u64;
/// What a `wait` looks like: seconds, or a number with ms, s or m.
const WAIT_PATTERN: &str = "^[0-9]{1,6}(ms|s|m)?$";
/// An `If-Match` value: a version in quotes, as the ETag.
const ETAG_PATTERN: &str = "^\"[0-9]{1,18}\"$";

/// The read routes (no token).
pub fn reads() -> Router<AppState> {
    Router::new()
        .route("/v1/config", get(list))
        .route("/v1/config/watch", post(watch))
        .route("/v1/config/{ns}", get(read))
        .route("/v1/config/{ns}/history", get(history))
        .route("/v1/config/{ns}/versions/{version}", get(one_version))
        .route("/v1/config/{ns}/diff", get(diff))
}

/// The write routes (behind the admin token and the write bulkhead).
pub fn writes() -> Router<AppState> {
    Router::new()
        .route("/v1/config/{ns}", put(write))
        .route("/v1/config/{ns}/rollback", post(rollback))
        .route(
            "/v1/config/{ns}/canary",
            put(start_canary).delete(abort_canary),
        )
        .route("/v1/config/{ns}/canary/promote", post(promote_canary))
}

fn center(state: &AppState) -> Result<&ConfigCenter, Error> {
    if state.config_center.settings.enabled {
        Ok(&state.config_center)
    } else {
        Err(Error::ConfigCenterDisabled)
    }
}

/// A namespace name: 1–128 of `A-Z a-z 0-9 . _ -` (it appears in URLs,
/// NOTIFY payloads and file names the client may derive from it).
fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadNamespace(echo(name)))
    }
}

fn json_response(status: StatusCode, body: impl Into<Body>, version: Option<u64>) -> Response {
    let mut response = (status, body.into()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(version) = version {
        headers.insert(header::ETAG, etag(version));
    }
    response
}

fn not_modified(version: u64) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    response.headers_mut().insert(header::ETAG, etag(version));
    response
}

/// A `wait` query or body value: humantime (`30s`, `500ms`) or seconds.
fn parse_wait(text: Option<&str>, max: Duration) -> Result<Duration, Error> {
    let wait = match text {
        None => DEFAULT_WAIT,
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) => Duration::from_secs(seconds),
            Err(_) => humantime::parse_duration(text)
                .map_err(|e| Error::BadRequest(format!("wait {:?}: {e} (e.g. 30s)", echo(text))))?,
        },
    };
    Ok(wait.min(max))
}

fn check_client(client: Option<&str>) -> Result<(), Error> {
    match client {
        Some(id) if id.is_empty() || id.chars().count() > MAX_CLIENT_ID => Err(Error::BadRequest(
            format!("client must be 1 to {MAX_CLIENT_ID} characters"),
        )),
        _ => Ok(()),
    }
}

// ---- reads -----------------------------------------------------------

/// `GET /v1/config`.
async fn list(State(state): State<AppState>) -> Result<Response, Error> {
    let center = center(&state)?;
    let namespaces: Vec<Value> = center
        .registry
        .all()
        .iter()
        .map(|snapshot| {
            let ns = snapshot.load();
            json!({
                "name": ns.name,
                "version": ns.stable.version,
                "digest": ns.stable.digest,
                "updated_at": rfc3339(ns.updated_at),
                "canary": ns.canary.as_ref().map(|c| json!({
                    "version": c.version.version,
                    "percent": c.percent,
                    "clients": c.clients.len(),
                })),
            })
        })
        .collect();
    Ok(Json(json!({ "namespaces": namespaces })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    client: Option<String>,
    after: Option<u64>,
    wait: Option<String>,
}

/// `GET /v1/config/{ns}`: the version this client is served; with
/// `after`, a long-poll.
async fn read(
    State(state): State<AppState>,
    Path(ns): Path<String>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let center = center(&state)?;
    let _slot = center.registry.enter_watch()?;
    check_name(&ns)?;
    check_client(query.client.as_deref())?;
    let snapshot = center
        .registry
        .get(&ns)
        .ok_or_else(|| Error::UnknownNamespace(ns.clone()))?;
    let client = query.client.as_deref();
    // `wait` alone is ignored: without `after` there is nothing to wait for.
    let Some(after) = query.after else {
        let current = snapshot.load();
        let (version, _) = current.view(client);
        if if_none_match(&headers, version.version) {
            return Ok(not_modified(version.version));
        }
        return Ok(json_response(
            StatusCode::OK,
            version.body.clone(),
            Some(version.version),
        ));
    };
    let wait = parse_wait(query.wait.as_deref(), center.settings.max_wait)?;
    crate::http::connection::hold_busy(wait);
    let deadline = Instant::now() + wait;
    // Subscribe before looking: a change between the look and the park
    // is then still seen.
    let mut changes = snapshot.subscribe();
    let mut current = snapshot.load_full();
    loop {
        if let Some(answer) = answer_watch(&current, client, after) {
            return Ok(answer);
        }
        let parked = center.registry.park();
        let woken = tokio::time::timeout_at(deadline, changes.changed()).await;
        drop(parked);
        match woken {
            Ok(newer) => current = newer,
            Err(_) => return Ok(not_modified(after)),
        }
    }
}

/// The long-poll's answer for a client at `after`, if it is not to wait:
/// the version it is served differs (200), or it is ahead of the server
/// (200 with `resync`: a restored database, or an aborted canary).
fn answer_watch(ns: &NsState, client: Option<&str>, after: u64) -> Option<Response> {
    let (version, canary) = ns.view(client);
    if version.version == after {
        return None;
    }
    let body = if after > version.version {
        version.render(&ns.name, canary, true)
    } else {
        version.body.clone()
    };
    Some(json_response(StatusCode::OK, body, Some(version.version)))
}

/// Whether `If-None-Match` names `version` (or is `*`).
fn if_none_match(headers: &HeaderMap, version: u64) -> bool {
    let Some(value) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let tag = format!("\"{version}\"");
    value
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == tag)
}

struct WatchBody {
    namespaces: BTreeMap<String, u64>,
    wait: Option<String>,
    client: Option<String>,
}

/// A watch body: `{ namespaces: { name: version }, wait?, client? }`.
/// Versions are whole numbers (`2.0` too: JSON does not tell them apart).
fn watch_body(bytes: &[u8]) -> Result<WatchBody, Error> {
    let mut body = body_object(bytes, &["namespaces", "wait", "client"])?;
    let mut text = |field: &str| match body.remove(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::InvalidBody(format!("{field} must be a string"))),
    };
    let wait = text("wait")?;
    let client = text("client")?;
    let Some(Value::Object(listed)) = body.remove("namespaces") else {
        return Err(Error::InvalidBody(
            "namespaces must be an object of { name: version }".into(),
        ));
    };
    let mut namespaces = BTreeMap::new();
    for (name, version) in listed {
        let whole = version.as_u64().or_else(|| {
            version
                .as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=MAX_VERSION as f64).contains(f))
                .map(|f| f as u64)
        });
        let Some(version) = whole else {
            return Err(Error::InvalidBody(format!(
                "namespaces.{}: a version is a whole number",
                echo(&name)
            )));
        };
        namespaces.insert(name, version);
    }
    Ok(WatchBody {
        namespaces,
        wait,
        client,
    })
}

/// `POST /v1/config/watch`: which of the named namespaces this client is
/// served another version of than it has; held until one changes.
async fn watch(State(state): State<AppState>, body: Body) -> Result<Response, Error> {
    let center = center(&state)?;
    let _slot = center.registry.enter_watch()?;
    let bytes = read_body(body, 1024 * 1024).await?;
    let body = watch_body(&bytes)?;
    if body.namespaces.is_empty() || body.namespaces.len() > MAX_WATCHED {
        return Err(Error::InvalidBody(format!(
            "namespaces must name 1 to {MAX_WATCHED} namespaces"
        )));
    }
    for name in body.namespaces.keys() {
        check_name(name)?;
    }
    check_client(body.client.as_deref())?;
    let wait = parse_wait(body.wait.as_deref(), center.settings.max_wait)?;
    crate::http::connection::hold_busy(wait);
    let deadline = Instant::now() + wait;
    let client = body.client.as_deref();
    loop {
        // Subscribe before looking (see `read`).
        let mut created = center.registry.created();
        let snapshots: Vec<_> = body
            .namespaces
            .keys()
            .map(|name| center.registry.get(name))
            .collect();
        let mut subscribers: Vec<_> = snapshots.iter().flatten().map(|s| s.subscribe()).collect();
        let mut changed = Map::new();
        for ((name, have), snapshot) in body.namespaces.iter().zip(&snapshots) {
            let served = match snapshot {
                Some(snapshot) => snapshot.load().view(client).0.version,
                // Not created yet: version 0. A client that has a version
                // of it is ahead of the server and told so.
                None => 0,
            };
            if served != *have {
                changed.insert(name.clone(), Value::from(served));
            }
        }
        if !changed.is_empty() {
            return Ok(Json(json!({ "changed": changed })).into_response());
        }
        let mut waits: Vec<_> = subscribers
            .iter_mut()
            .map(|s| async move { s.changed().await }.map(|_| ()).boxed())
            .collect();
        waits.push(async move { created.changed().await }.map(|_| ()).boxed());
        let parked = center.registry.park();
        let woken = tokio::time::timeout_at(deadline, select_all(waits)).await;
        drop(parked);
        if woken.is_err() {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    before: Option<u64>,
    limit: Option<u32>,
}

fn change_json(change: &Change) -> Value {
    json!({
        "author": change.author,
        "reason": change.reason,
        "rollback_plan": change.rollback_plan,
    })
}

/// `GET /v1/config/{ns}/history`.
async fn history(
    State(state): State<AppState>,
    Path(ns): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, Error> {
    let center = center(&state)?;
    check_name(&ns)?;
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_HISTORY {
        return Err(Error::BadRequest(format!(
            "limit must be 1 to {MAX_HISTORY}"
        )));
    }
    if center.registry.get(&ns).is_none() && center.store.load(&ns).await?.is_none() {
        return Err(Error::UnknownNamespace(ns));
    }
    let (rows, next) = center.store.history(&ns, query.before, limit).await?;
    let versions: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "version": row.version,
                "digest": row.digest,
                "created_at": rfc3339(row.created_at),
                "change": change_json(&row.change),
            })
        })
        .collect();
    Ok(Json(json!({ "versions": versions, "next": next })).into_response())
}

/// One stored version with its content, or 404.
async fn stored_version(
    center: &ConfigCenter,
    ns: &str,
    version: u64,
) -> Result<(super::store::HistoryRow, Value), Error> {
    let row = center.store.version(ns, version).await?;
    let Some(row) = row else {
        if center.registry.get(ns).is_none() && center.store.load(ns).await?.is_none() {
            return Err(Error::UnknownNamespace(ns.to_owned()));
        }
        return Err(Error::UnknownVersion {
            namespace: ns.to_owned(),
            version,
        });
    };
    let content: Value = serde_json::from_str(row.content.as_deref().unwrap_or("null"))
        .map_err(|e| Error::ConfigStore(format!("stored content: {e}")))?;
    Ok((row, content))
}

/// `GET /v1/config/{ns}/versions/{version}`.
async fn one_version(
    State(state): State<AppState>,
    Path((ns, version)): Path<(String, u64)>,
) -> Result<Response, Error> {
    let center = center(&state)?;
    check_name(&ns)?;
    let (row, content) = stored_version(center, &ns, version).await?;
    let body = json!({
        "namespace": ns,
        "version": row.version,
        "digest": row.digest,
        "created_at": rfc3339(row.created_at),
        "content": content,
        "change": change_json(&row.change),
    });
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(row.version));
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffQuery {
    from: u64,
    to: u64,
}

/// `GET /v1/config/{ns}/diff?from=A&to=B`: RFC 6902 JSON Patch from A to B.
async fn diff(
    State(state): State<AppState>,
    Path(ns): Path<String>,
    Query(query): Query<DiffQuery>,
) -> Result<Response, Error> {
    let center = center(&state)?;
    check_name(&ns)?;
    let (_, from) = stored_version(center, &ns, query.from).await?;
    let (_, to) = stored_version(center, &ns, query.to).await?;
    let patch = json_patch::diff(&from, &to);
    Ok(Json(patch).into_response())
}

// ---- writes ----------------------------------------------------------

/// Reads a body of at most `max` bytes (413 past it).
async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, Error> {
    axum::body::to_bytes(body, max).await.map_err(|e| {
        if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
        {
            Error::ContentTooLarge { len: None, max }
        } else {
            Error::BadRequest(format!("reading the body: {e}"))
        }
    })
}

/// The body as JSON: 400 with line and column when it is not.
fn parse_json(bytes: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::MalformedJson {
        line: e.line(),
        column: e.column(),
        detail: e.to_string(),
    })
}

/// The version named by `If-Match: "N"`, or 428 without one.
fn if_match(headers: &HeaderMap) -> Result<u64, Error> {
    // An empty header is no header.
    let value = headers
        .get(header::IF_MATCH)
        .filter(|v| !v.as_bytes().trim_ascii().is_empty())
        .ok_or(Error::PreconditionRequired)?;
    value
        .to_str()
        .ok()
        .and_then(|v| quoted_version(v.trim()))
        .ok_or_else(|| {
            Error::BadRequest("If-Match must be a version in quotes, as the ETag: \"N\"".into())
        })
}

/// The write's precondition: `If-Match: "N"`, or `If-None-Match: *` to create.
fn precondition(headers: &HeaderMap) -> Result<Precondition, Error> {
    if headers
        .get(header::IF_MATCH)
        .is_some_and(|v| !v.as_bytes().trim_ascii().is_empty())
    {
        return if_match(headers).map(Precondition::Match);
    }
    // Only `*` means something on a write (create); any other value is
    // no precondition at all.
    match headers.get(header::IF_NONE_MATCH) {
        Some(v) if v.as_bytes().trim_ascii() == b"*" => Ok(Precondition::Create),
        _ => Err(Error::PreconditionRequired),
    }
}

/// The change record of a write body: 422 naming each missing (or
/// empty, or non-text) field.
fn change_of(body: &Map<String, Value>) -> Result<Change, Error> {
    let record = body.get("change").and_then(Value::as_object);
    let field = |name: &'static str| {
        record
            .and_then(|r| r.get(name))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let (author, reason, plan) = (field("author"), field("reason"), field("rollback_plan"));
    let mut missing = Vec::new();
    for (name, value) in [
        ("change.author", &author),
        ("change.reason", &reason),
        ("change.rollback_plan", &plan),
    ] {
        if value.is_none() {
            missing.push(name);
        }
    }
    match (author, reason, plan) {
        (Some(author), Some(reason), Some(rollback_plan)) => Ok(Change {
            author,
            reason,
            rollback_plan,
        }),
        _ => Err(Error::MissingChange(missing)),
    }
}

/// A write body as a JSON object with only `allowed` fields.
fn body_object(bytes: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, Error> {
    let Value::Object(body) = parse_json(bytes)? else {
        return Err(Error::InvalidBody("the body must be a JSON object".into()));
    };
    if let Some(unknown) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Error::InvalidBody(format!(
            "unknown field {:?}; expected {}",
            echo(unknown),
            allowed.join(", ")
        )));
    }
    Ok(body)
}

/// The content field: present, at most `max` bytes as compact JSON.
fn content_of(body: &mut Map<String, Value>, max: usize) -> Result<Value, Error> {
    let content = body
        .remove("content")
        .ok_or_else(|| Error::InvalidBody("content is missing".into()))?;
    let len = content.to_string().len();
    if len > max {
        return Err(Error::ContentTooLarge {
            len: Some(len),
            max,
        });
    }
    Ok(content)
}

/// The write body's limit: room for the content pretty-printed and the
/// change record.
fn body_limit(center: &ConfigCenter) -> usize {
    center
        .settings
        .max_content_bytes
        .saturating_mul(4)
        .saturating_add(64 * 1024)
}

/// The answer to a change: the namespace's new version, and `ETag`.
async fn changed(center: &ConfigCenter, ns: &str, status: StatusCode) -> Result<Response, Error> {
    center.refresh(ns).await?;
    let snapshot = center
        .registry
        .get(ns)
        .ok_or_else(|| Error::UnknownNamespace(ns.to_owned()))?;
    let current = snapshot.load();
    let body = version_summary(
        &current.name,
        &current.stable,
        current.canary.as_ref().map(|c| &c.version),
    );
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(current.stable.version));
    Ok(response)
}

fn version_summary(ns: &str, stable: &Version, canary: Option<&Arc<Version>>) -> Value {
    json!({
        "namespace": ns,
        "version": stable.version,
        "digest": stable.digest,
        "created_at": rfc3339(stable.created_at),
        "canary": canary.map(|c| json!({ "version": c.version, "digest": c.digest })),
    })
}

/// `PUT /v1/config/{ns}`.
async fn write(
    State(state): State<AppState>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let center = center(&state)?;
    check_name(&ns)?;
    let pre = precondition(&headers)?;
    let bytes = read_body(body, body_limit(center)).await?;
    let mut body = body_object(&bytes, &["content", "change", "schema"])?;
    let change = change_of(&body)?;
    let content = content_of(&mut body, center.settings.max_content_bytes)?;
    let schema = match body.remove("schema") {
        None | Some(Value::Null) => None,
        Some(schema) => {
            super::schema::compile(&schema)?;
            Some(schema.to_string())
        }
    };
    let version = center
        .store
        .put(&ns, pre, &content, &change, schema.as_deref())
        .await?;
    let status = if version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    changed(center, &ns, status).await
}

/// `POST /v1/config/{ns}/rollback`: a new version with an old one's content.
async fn rollback(
    State(state): State<AppState>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let center = center(&state)?;
    check_name(&ns)?;
    let expected = if_match(&headers)?;
    let bytes = read_body(body, 64 * 1024).await?;
    let body = body_object(&bytes, &["to", "change"])?;
    let change = change_of(&body)?;
    let to = body
        .get("to")
        .and_then(Value::as_u64)
        .ok_or_else(|| Error::InvalidBody("to must be a version number".into()))?;
    let (_, content) = stored_version(center, &ns, to).await?;
    center
        .store
        .put(&ns, Precondition::Match(expected), &content, &change, None)
        .await?;
    changed(center, &ns, StatusCode::OK).await
}

/// `PUT /v1/config/{ns}/canary`: a candidate for some clients, on top of
/// the version named by `If-Match`.
async fn start_canary(
    State(state): State<AppState>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let center = center(&state)?;
    check_name(&ns)?;
    let base = if_match(&headers)?;
    let bytes = read_body(body, body_limit(center)).await?;
    let mut body = body_object(&bytes, &["content", "change", "clients", "percent"])?;
    let change = change_of(&body)?;
    let content = content_of(&mut body, center.settings.max_content_bytes)?;
    let clients: Vec<String> = match body.remove("clients") {
        None | Some(Value::Null) => Vec::new(),
        Some(list) => serde_json::from_value(list)
            .map_err(|_| Error::InvalidBody("clients must be an array of strings".into()))?,
    };
    if clients.len() > MAX_CANARY_CLIENTS
        || clients
            .iter()
            .any(|c| c.is_empty() || c.chars().count() > MAX_CLIENT_ID)
    {
        return Err(Error::InvalidBody(format!(
            "clients: at most {MAX_CANARY_CLIENTS} ids of 1 to {MAX_CLIENT_ID} characters"
        )));
    }
    let percent = match body.remove("percent") {
        None | Some(Value::Null) => 0,
        Some(p) => p
            .as_u64()
            .filter(|p| *p <= 100)
            .and_then(|p| u8::try_from(p).ok())
            .ok_or_else(|| Error::InvalidBody("percent must be a whole number 0 to 100".into()))?,
    };
    if clients.is_empty() && percent == 0 {
        return Err(Error::InvalidBody(
            "a canary needs clients or a percent above 0".into(),
        ));
    }
    let text = content.to_string();
    center
        .store
        .start_canary(
            &ns,
            &NewCanary {
                base,
                content: &text,
                change: &change,
                clients: &clients,
                percent,
            },
        )
        .await?;
    changed(center, &ns, StatusCode::OK).await
}

/// `POST /v1/config/{ns}/canary/promote`: the candidate becomes the next version.
async fn promote_canary(
    State(state): State<AppState>,
    Path(ns): Path<String>,
) -> Result<Response, Error> {
    let center = center(&state)?;
    check_name(&ns)?;
    center.store.end_canary(&ns, true).await?;
    changed(center, &ns, StatusCode::OK).await
}

/// `DELETE /v1/config/{ns}/canary`: everyone back on the current version.
async fn abort_canary(
    State(state): State<AppState>,
    Path(ns): Path<String>,
) -> Result<Response, Error> {
    let center = center(&state)?;
    check_name(&ns)?;
    center.store.end_canary(&ns, false).await?;
    changed(center, &ns, StatusCode::OK).await
}

// ---- OpenAPI -----------------------------------------------------------

/// The route table (`ops/openapi.rs` `TABLES`).
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/v1/config",
        summary: "List the config namespaces with their current versions and canaries.",
        responses: &[
            (200, &[], "{ namespaces: [{ name, version, digest, updated_at, canary }] }."),
            (404, &["config_center_disabled"], "config_center.enabled is off."),
        ],
        extra: Some(list_extra),
    },
    Route {
        method: "get",
        path: "/v1/config/{ns}",
        summary: "The namespace's version this client is served (canary or current); with after=N a long-poll held until that differs from N or wait ends.",
        responses: &[
            (200, &[], "{ namespace, version, digest, created_at, content, canary[, resync] }; ETag: \"N\"."),
            (304, &[], "If-None-Match names the version served, or the long-poll's wait ended with no change."),
            (400, &["bad_namespace", "bad_query", "bad_request"], "A bad name, after/wait/client."),
            (404, &["unknown_namespace", "config_center_disabled"], "No such namespace."),
            (503, &["overloaded"], "More than config_center.max_watchers requests on the watch routes."),
        ],
        extra: Some(read_extra),
    },
    Route {
        method: "post",
        path: "/v1/config/watch",
        summary: "Watch several namespaces: answers the names (and versions) this client is served another version of than it has, held until one changes or wait ends.",
        responses: &[
            (200, &[], "{ changed: { ns: version } } (0: the namespace does not exist)."),
            (304, &[], "Nothing changed before wait ended."),
            (400, &["malformed_json", "bad_namespace", "bad_request"], "Not JSON (line and column), a bad name or wait."),
            (404, &["config_center_disabled"], "config_center.enabled is off."),
            (413, &["content_too_large"], "A body over 1 MiB."),
            (422, &["invalid_body"], "Not { namespaces: { name: version }, wait?, client? }."),
            (503, &["overloaded"], "More than config_center.max_watchers requests on the watch routes."),
        ],
        extra: Some(watch_extra),
    },
    Route {
        method: "put",
        path: "/v1/config/{ns}",
        summary: "Write a new version (admin token): If-None-Match: * creates the namespace, If-Match: \"N\" changes version N.",
        responses: WRITE_ANSWERS,
        extra: Some(put_extra),
    },
    Route {
        method: "get",
        path: "/v1/config/{ns}/history",
        summary: "The namespace's versions, newest first, with their change records; page with before=next.",
        responses: &[
            (200, &[], "{ versions: [{ version, digest, created_at, change }], next }."),
            (400, &["bad_namespace", "bad_query", "bad_request"], "A bad name, before or limit (1 to 1000)."),
            (404, &["unknown_namespace", "config_center_disabled"], "No such namespace."),
            (503, &["config_store_unavailable"], "The database failed."),
        ],
        extra: Some(history_extra),
    },
    Route {
        method: "get",
        path: "/v1/config/{ns}/versions/{version}",
        summary: "One version with its content and change record.",
        responses: &[
            (200, &[], "{ namespace, version, digest, created_at, content, change }."),
            (400, &["bad_namespace", "bad_path"], "A bad name or version number."),
            (404, &["unknown_namespace", "unknown_version", "config_center_disabled"], "No such namespace or version."),
            (503, &["config_store_unavailable"], "The database failed."),
        ],
        extra: Some(version_extra),
    },
    Route {
        method: "get",
        path: "/v1/config/{ns}/diff",
        summary: "The RFC 6902 JSON Patch that turns version `from` into version `to`.",
        responses: &[
            (200, &[], "A JSON Patch array."),
            (400, &["bad_namespace", "bad_query"], "A bad name, from or to."),
            (404, &["unknown_namespace", "unknown_version", "config_center_disabled"], "No such namespace or version."),
            (503, &["config_store_unavailable"], "The database failed."),
        ],
        extra: Some(diff_extra),
    },
    Route {
        method: "post",
        path: "/v1/config/{ns}/rollback",
        summary: "A new version carrying version `to`'s content (admin token, If-Match: \"N\"); history is never rewritten.",
        responses: WRITE_ANSWERS,
        extra: Some(rollback_extra),
    },
    Route {
        method: "put",
        path: "/v1/config/{ns}/canary",
        summary: "Start a canary on top of version N (If-Match: \"N\", admin token): the candidate (numbered N+1) is served to the listed clients and a stable percentage of the others.",
        responses: WRITE_ANSWERS,
        extra: Some(canary_extra),
    },
    Route {
        method: "delete",
        path: "/v1/config/{ns}/canary",
        summary: "Abort the canary (admin token): every client is served the current version again.",
        responses: CANARY_END_ANSWERS,
        extra: Some(ns_admin_extra),
    },
    Route {
        method: "post",
        path: "/v1/config/{ns}/canary/promote",
        summary: "Promote the canary (admin token): its candidate becomes the next version, for everyone.",
        responses: CANARY_END_ANSWERS,
        extra: Some(ns_admin_extra),
    },
];

const WRITE_ANSWERS: &[(u16, &[&str], &str)] = &[
    (200, &[], "Changed: { namespace, version, digest, created_at, canary }; ETag: \"N\"."),
    (201, &[], "Created at version 1."),
    (400, &["malformed_json", "bad_namespace", "bad_request"], "Not JSON (with line and column), a bad name, or a malformed If-Match."),
    (401, &["unauthorized"], "No admin token (WWW-Authenticate: Bearer)."),
    (403, &["forbidden"], "Another token than the admin token."),
    (404, &["unknown_namespace", "unknown_version", "config_center_disabled"], "No such namespace (or version to roll back to)."),
    (409, &["canary_active"], "A canary is pending: promote or abort it first."),
    (412, &["version_mismatch", "namespace_exists"], "If-Match names another version than the current one (current_version and ETag say which), or If-None-Match: * on an existing namespace."),
    (413, &["content_too_large"], "The content is over config_center.max_content_bytes."),
    (422, &["missing_change", "invalid_body", "schema_violation", "invalid_schema"], "A change record field missing (each named in `missing`), content violating the schema (`violations`: JSON pointer and message each), or a bad body."),
    (428, &["precondition_required"], "Neither If-Match nor If-None-Match: *."),
    (503, &["config_store_unavailable", "overloaded"], "The database failed, or the write bulkhead is full."),
];

const CANARY_END_ANSWERS: &[(u16, &[&str], &str)] = &[
    (
        200,
        &[],
        "{ namespace, version, digest, created_at, canary: null }; ETag: \"N\".",
    ),
    (400, &["bad_namespace"], "A bad name."),
    (
        401,
        &["unauthorized"],
        "No admin token (WWW-Authenticate: Bearer).",
    ),
    (403, &["forbidden"], "Another token than the admin token."),
    (
        404,
        &["unknown_namespace", "no_canary", "config_center_disabled"],
        "No such namespace, or no canary pending.",
    ),
    (
        503,
        &["config_store_unavailable", "overloaded"],
        "The database failed, or the write bulkhead is full.",
    ),
];

fn ns_param() -> Value {
    json!({
        "name": "ns", "in": "path", "required": true,
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$" }
    })
}

fn etag_header() -> Value {
    json!({ "ETag": { "description": "The version, in quotes.", "schema": { "type": "string" } } })
}

fn version_schema() -> Value {
    json!({
        "type": "object",
        "required": ["namespace", "version", "digest", "created_at", "content", "canary"],
        "properties": {
            "namespace": { "type": "string" },
            "version": { "type": "integer", "minimum": 1 },
            "digest": { "type": "string" },
            "created_at": { "type": "string" },
            "content": {},
            "canary": { "type": "boolean" },
            "resync": { "type": "boolean" }
        }
    })
}

fn change_schema() -> Value {
    json!({
        "type": "object",
        "required": ["author", "reason", "rollback_plan"],
        "properties": {
            "author": { "type": "string", "minLength": 1 },
            "reason": { "type": "string", "minLength": 1 },
            "rollback_plan": { "type": "string", "minLength": 1 }
        }
    })
}

fn summary_schema() -> Value {
    json!({
        "type": "object",
        "required": ["namespace", "version", "digest", "created_at", "canary"],
        "properties": {
            "namespace": { "type": "string" },
            "version": { "type": "integer" },
            "digest": { "type": "string" },
            "created_at": { "type": "string" },
            "canary": { "type": ["object", "null"] }
        }
    })
}

fn list_extra(_: &crate::config::Config) -> Value {
    json!({ "responses": { "200": { "content": { "application/json": { "schema": {
        "type": "object", "required": ["namespaces"],
        "properties": { "namespaces": { "type": "array", "items": {
            "type": "object", "required": ["name", "version", "digest", "updated_at", "canary"],
            "properties": {
                "name": { "type": "string" }, "version": { "type": "integer" },
                "digest": { "type": "string" }, "updated_at": { "type": "string" },
                "canary": { "type": ["object", "null"] }
            }
        } } }
    } } } } } })
}

fn read_extra(_: &crate::config::Config) -> Value {
    json!({
        "parameters": [
            ns_param(),
            { "name": "client", "in": "query", "required": false, "description": "The caller's id, for canary selection.",
              "schema": { "type": "string", "minLength": 1, "maxLength": MAX_CLIENT_ID } },
            { "name": "after", "in": "query", "required": false, "description": "The version the caller has: a long-poll.",
              "schema": { "type": "integer", "minimum": 0, "maximum": MAX_VERSION } },
            { "name": "wait", "in": "query", "required": false, "description": "How long to hold a long-poll (with after; ignored without), e.g. 30s, 500ms, or seconds; capped at config_center.max_wait.",
              "schema": { "type": "string", "pattern": WAIT_PATTERN } },
            { "name": "If-None-Match", "in": "header", "required": false, "schema": { "type": "string" } }
        ],
        "responses": {
            "200": { "headers": etag_header(),
                     "content": { "application/json": { "schema": version_schema() } } },
            "304": { "headers": etag_header() }
        }
    })
}

fn watch_extra(_: &crate::config::Config) -> Value {
    json!({
        "requestBody": { "required": true, "content": { "application/json": { "schema": {
            "type": "object",
            "required": ["namespaces"],
            "additionalProperties": false,
            "properties": {
                "namespaces": { "type": "object", "minProperties": 1, "maxProperties": MAX_WATCHED,
                                "propertyNames": { "pattern": "^[A-Za-z0-9._-]{1,128}$" },
                                "additionalProperties": { "type": "integer", "minimum": 0, "maximum": MAX_VERSION } },
                "wait": { "type": "string", "pattern": WAIT_PATTERN },
                "client": { "type": "string", "minLength": 1, "maxLength": MAX_CLIENT_ID }
            }
        } } } },
        "responses": { "200": { "content": { "application/json": { "schema": {
            "type": "object", "required": ["changed"],
            "properties": { "changed": { "type": "object", "additionalProperties": { "type": "integer" } } }
        } } } } }
    })
}

fn admin_security() -> Value {
    json!([{ "bearerAuth": [] }])
}

fn write_body(extra: Value) -> Value {
    let mut properties = json!({
        "content": { "description": "Any JSON document." },
        "change": change_schema(),
    });
    if let (Some(target), Value::Object(more)) = (properties.as_object_mut(), extra) {
        target.extend(more);
    }
    json!({ "required": true, "content": { "application/json": { "schema": {
        "type": "object", "required": ["content", "change"], "properties": properties,
        "additionalProperties": false
    } } } })
}

fn put_extra(_: &crate::config::Config) -> Value {
    json!({
        "security": admin_security(),
        "parameters": [
            ns_param(),
            { "name": "If-Match", "in": "header", "required": false, "description": "\"N\": change version N.", "schema": { "type": "string", "pattern": ETAG_PATTERN } },
            { "name": "If-None-Match", "in": "header", "required": false, "description": "*: create the namespace.", "schema": { "type": "string" } }
        ],
        "requestBody": write_body(json!({ "schema": { "description": "A JSON Schema the content (and every later version) must satisfy." } })),
        "responses": {
            "200": { "headers": etag_header(), "content": { "application/json": { "schema": summary_schema() } } },
            "201": { "headers": etag_header(), "content": { "application/json": { "schema": summary_schema() } } },
            "412": { "headers": etag_header() }
        }
    })
}

fn if_match_param() -> Value {
    json!({ "name": "If-Match", "in": "header", "required": true, "description": "\"N\": the current version.", "schema": { "type": "string", "pattern": ETAG_PATTERN } })
}

fn rollback_extra(_: &crate::config::Config) -> Value {
    json!({
        "security": admin_security(),
        "parameters": [ns_param(), if_match_param()],
        "requestBody": { "required": true, "content": { "application/json": { "schema": {
            "type": "object", "required": ["to", "change"],
            "properties": { "to": { "type": "integer", "minimum": 1, "maximum": MAX_VERSION }, "change": change_schema() },
            "additionalProperties": false
        } } } },
        "responses": {
            "200": { "headers": etag_header(), "content": { "application/json": { "schema": summary_schema() } } },
            "412": { "headers": etag_header() }
        }
    })
}

fn canary_extra(_: &crate::config::Config) -> Value {
    json!({
        "security": admin_security(),
        "parameters": [ns_param(), if_match_param()],
        "requestBody": write_body(json!({
            "clients": { "type": "array", "maxItems": MAX_CANARY_CLIENTS,
                         "items": { "type": "string", "minLength": 1, "maxLength": MAX_CLIENT_ID } },
            "percent": { "type": "integer", "minimum": 0, "maximum": 100 }
        })),
        "responses": {
            "200": { "headers": etag_header(), "content": { "application/json": { "schema": summary_schema() } } },
            "412": { "headers": etag_header() }
        }
    })
}

fn ns_admin_extra(_: &crate::config::Config) -> Value {
    json!({
        "security": admin_security(),
        "parameters": [ns_param()],
        "responses": { "200": { "headers": etag_header(), "content": { "application/json": { "schema": summary_schema() } } } }
    })
}

fn history_extra(_: &crate::config::Config) -> Value {
    json!({
        "parameters": [
            ns_param(),
            { "name": "before", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 0, "maximum": MAX_VERSION } },
            { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": MAX_HISTORY } }
        ]
    })
}

fn version_extra(_: &crate::config::Config) -> Value {
    json!({
        "parameters": [
            ns_param(),
            { "name": "version", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 0, "maximum": MAX_VERSION } }
        ]
    })
}

fn diff_extra(_: &crate::config::Config) -> Value {
    json!({
        "parameters": [
            ns_param(),
            { "name": "from", "in": "query", "required": true, "schema": { "type": "integer", "minimum": 0, "maximum": MAX_VERSION } },
            { "name": "to", "in": "query", "required": true, "schema": { "type": "integer", "minimum": 0, "maximum": MAX_VERSION } }
        ]
    })
}
