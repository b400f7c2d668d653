//! The sessions' HTTP routes and their OpenAPI table. Thin: parse, call
//! the store, answer. The token travels only in the `Authorization`
//! header (never the URI, which the access log records) and in the body
//! of the two answers that make one, marked `Cache-Control: no-store`.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use rampart::clock::{Clock, WallClock};
use serde_json::{json, Value};

use super::config::SessionsConfig;
use super::memory::MemoryStore;
use super::redis::RedisStore;
use super::store::{Data, Session, SessionStore};
use super::token::{bearer, Token};
use crate::config::Config;
use crate::error::Error;
use crate::ops::openapi::Route;
use crate::state::AppState;

/// What the session handlers share.
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    clock: WallClock,
    config: SessionsConfig,
}

impl Sessions {
    /// Sessions over `store`, timed by `clock`.
    pub fn new(store: Arc<dyn SessionStore>, clock: WallClock, config: SessionsConfig) -> Self {
        Sessions {
            store,
            clock,
            config,
        }
    }

    /// The store: Redis's when the service has Redis, else this process's
    /// (with its sweeper running).
    pub fn for_state(state: &AppState) -> Sessions {
        let config = state.config.sessions.clone();
        let clock = WallClock::new(Clock::coarse());
        let store: Arc<dyn SessionStore> = match &state.redis {
            Some(shared) => Arc::new(RedisStore::new(
                shared.redis().clone(),
                shared.namespace(),
                config.clone(),
            )),
            None => {
                let memory = Arc::new(MemoryStore::new(config.clone()));
                MemoryStore::spawn_sweeper(&memory, clock.clone());
                memory
            }
        };
        Sessions::new(store, clock, config)
    }

    /// The store, for tests and measurements.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// A session as answered: its data and its three deadlines.
    fn view(&self, session: &Session) -> Value {
        let absolute = session.created_ms.saturating_add(self.config.absolute_ms());
        let idle = session.last_seen_ms.saturating_add(self.config.idle_ms());
        json!({
            "data": session.data,
            "created_ms": session.created_ms,
            "last_seen_ms": session.last_seen_ms,
            "expires_ms": idle.min(absolute),
            "absolute_expires_ms": absolute,
        })
    }

    /// A new token's answer: the token (shown this once) and the session.
    fn with_token(&self, status: StatusCode, token: &Token, session: &Session) -> Response {
        let mut body = self.view(session);
        body["token"] = json!(token.as_str());
        body["token_type"] = json!("Bearer");
        let mut response = (status, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// The session routes over `state`'s store.
pub fn routes<S>(state: &AppState) -> Router<S> {
    router(Arc::new(Sessions::for_state(state)))
}

/// The session routes over `sessions`.
pub fn router<S>(sessions: Arc<Sessions>) -> Router<S> {
    Router::new()
        .route("/v1/sessions", post(create))
        .route(
            "/v1/sessions/current",
            get(read).patch(patch).delete(delete),
        )
        .route("/v1/sessions/current/rotate", post(rotate))
        .with_state(sessions)
}

/// The body as a JSON object: `optional` allows an empty body (no data).
fn object(body: Result<Bytes, BytesRejection>, optional: bool) -> Result<Data, Error> {
    let body = body.map_err(|e| Error::BadRequest(format!("body: {}", e.body_text())))?;
    if optional && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Data::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(data)) => Ok(data),
        Ok(other) => Err(Error::BadRequest(format!(
            "body: must be a JSON object, got {}",
            kind(&other)
        ))),
        Err(e) => Err(Error::BadRequest(format!("body: not JSON: {e}"))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const NO_SESSION: Error = Error::NoSession("no live session for this token");

/// `POST /v1/sessions`: a new session with the body's data.
async fn create(
    State(sessions): State<Arc<Sessions>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let data = object(body, true)?;
    let token = Token::generate()?;
    let now = sessions.clock.unix_ms();
    let session = sessions.store.create(token.id(), data, now).await?;
    Ok(sessions.with_token(StatusCode::CREATED, &token, &session))
}

/// `GET /v1/sessions/current`.
async fn read(
    State(sessions): State<Arc<Sessions>>,
    headers: HeaderMap,
) -> Result<Json<Value>, Error> {
    let id = bearer(&headers)?;
    let now = sessions.clock.unix_ms();
    let session = sessions.store.get(&id, now).await?.ok_or(NO_SESSION)?;
    Ok(Json(sessions.view(&session)))
}

/// `PATCH /v1/sessions/current`: merge the body into the data.
async fn patch(
    State(sessions): State<Arc<Sessions>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, Error> {
    let id = bearer(&headers)?;
    let patch = object(body, false)?;
    let now = sessions.clock.unix_ms();
    let session = sessions
        .store
        .patch(&id, patch, now)
        .await?
        .ok_or(NO_SESSION)?;
    Ok(Json(sessions.view(&session)))
}

/// `DELETE /v1/sessions/current`: log out.
async fn delete(
    State(sessions): State<Arc<Sessions>>,
    headers: HeaderMap,
) -> Result<StatusCode, Error> {
    let id = bearer(&headers)?;
    let now = sessions.clock.unix_ms();
    if sessions.store.delete(&id, now).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(NO_SESSION)
    }
}

/// `POST /v1/sessions/current/rotate`: a new token for the same session.
async fn rotate(
    State(sessions): State<Arc<Sessions>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let id = bearer(&headers)?;
    let token = Token::generate()?;
    let now = sessions.clock.unix_ms();
    let session = sessions
        .store
        .rotate(&id, token.id(), now)
        .await?
        .ok_or(NO_SESSION)?;
    Ok(sessions.with_token(StatusCode::OK, &token, &session))
}

/// The answers every route that takes a token can give.
const NO_TOKEN: (u16, &[&str], &str) = (
    401,
    &["no_session"],
    "No `Authorization: Bearer <token>`, or no live session for it (unknown, logged out, rotated or expired).",
);
const STORE_DOWN: (u16, &[&str], &str) = (
    503,
    &["cache_unavailable", "breaker_open"],
    "The session store (Redis) did not answer, or its breaker is open.",
);
const PANIC: (u16, &[&str], &str) = (
    500,
    &["panic", "internal"],
    "A panic, contained to this request.",
);

/// The sessions' routes, documented.
pub const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/v1/sessions",
        summary: "Create a session; its token is answered this once.",
        responses: &[
            (201, &[], "The session and its token (Cache-Control: no-store)."),
            (400, &["bad_request"], "The body is not a JSON object, or its data is larger than sessions.max_data_bytes."),
            PANIC,
            (503, &["sessions_full", "cache_unavailable", "breaker_open"], "sessions.max_sessions live sessions already (in-process store), or the session store (Redis) is down."),
        ],
        extra: Some(create_doc),
    },
    Route {
        method: "get",
        path: "/v1/sessions/current",
        summary: "The caller's session; restarts its idle timeout.",
        responses: &[(200, &[], "The session."), NO_TOKEN, PANIC, STORE_DOWN],
        extra: Some(session_doc),
    },
    Route {
        method: "patch",
        path: "/v1/sessions/current",
        summary: "Merge the body into the session's data (top-level keys replaced, null removes one), atomically per session.",
        responses: &[
            (200, &[], "The session after the merge."),
            (400, &["bad_request"], "The body is not a JSON object, or the data would be larger than sessions.max_data_bytes (nothing is changed)."),
            NO_TOKEN,
            PANIC,
            STORE_DOWN,
        ],
        extra: Some(patch_doc),
    },
    Route {
        method: "delete",
        path: "/v1/sessions/current",
        summary: "Log out: the session and its token are gone.",
        responses: &[(204, &[], "Logged out."), NO_TOKEN, PANIC, STORE_DOWN],
        extra: Some(bearer_doc),
    },
    Route {
        method: "post",
        path: "/v1/sessions/current/rotate",
        summary: "A new token for the same session (data and creation time kept); the old token is dead.",
        responses: &[(200, &[], "The session and its new token (Cache-Control: no-store)."), NO_TOKEN, PANIC, STORE_DOWN],
        extra: Some(rotate_doc),
    },
];

fn session_schema(with_token: bool) -> Value {
    let mut schema = json!({
        "type": "object",
        "required": ["data", "created_ms", "last_seen_ms", "expires_ms", "absolute_expires_ms"],
        "properties": {
            "data": { "type": "object", "description": "The session's data." },
            "created_ms": { "type": "integer", "minimum": 0, "description": "Creation, Unix ms." },
            "last_seen_ms": { "type": "integer", "minimum": 0, "description": "Last use, Unix ms." },
            "expires_ms": { "type": "integer", "minimum": 0, "description": "When it expires unless used again (the nearer of the idle and absolute deadlines), Unix ms." },
            "absolute_expires_ms": { "type": "integer", "minimum": 0, "description": "When it expires however much it is used, Unix ms." },
        },
    });
    if with_token {
        schema["required"]
            .as_array_mut()
            .into_iter()
            .for_each(|r| r.extend([json!("token"), json!("token_type")]));
        schema["properties"]["token"] = json!({
            "type": "string", "pattern": "^[A-Za-z0-9_-]{43}$",
            "description": "256 random bits, URL-safe base64: present it as `Authorization: Bearer <token>`. Shown only here.",
        });
        schema["properties"]["token_type"] = json!({ "const": "Bearer" });
    }
    schema
}

fn body_doc(required: bool) -> Value {
    json!({
        "required": required,
        "content": { "application/json": {
            "schema": { "type": "object", "additionalProperties": true },
            "example": { "user_id": 42, "cart": ["sku-1"] },
        } },
    })
}

fn answer(status: &str, with_token: bool) -> Value {
    let mut answer = json!({ "responses": { status: { "content": { "application/json": {
        "schema": session_schema(with_token),
    } } } } });
    if with_token {
        answer["responses"][status]["headers"] = json!({
            "cache-control": { "required": true, "schema": { "const": "no-store" } },
        });
    }
    answer
}

fn create_doc(_: &Config) -> Value {
    let mut doc = answer("201", true);
    doc["requestBody"] = body_doc(false);
    doc
}

fn bearer_doc(_: &Config) -> Value {
    json!({ "security": [{ "sessionToken": [] }] })
}

fn session_doc(config: &Config) -> Value {
    let mut doc = answer("200", false);
    crate::ops::openapi::merge(&mut doc, bearer_doc(config));
    doc
}

fn patch_doc(config: &Config) -> Value {
    let mut doc = session_doc(config);
    doc["requestBody"] = body_doc(true);
    doc
}

fn rotate_doc(config: &Config) -> Value {
    let mut doc = answer("200", true);
    crate::ops::openapi::merge(&mut doc, bearer_doc(config));
    doc
}
