//! The error of a request, and the one place it becomes an HTTP response:
//! `{ "error", "code", "detail" }` with a precise status. (What stops the
//! service from starting is a `start_error::StartError`.)

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// Everything that can go wrong with one request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No resource by that name.
    #[error("no resource named {:?}", echo(.0))]
    UnknownResource(String),

    /// A key does not have the resource's key type.
    #[error("bad key for {resource}: {detail}")]
    BadKey { resource: String, detail: String },

    /// A request is malformed (a query parameter, a count bound).
    #[error("{0}")]
    BadRequest(String),

    /// The key does not exist in the source (remembered negatively).
    #[error("{resource} {key:?} does not exist")]
    NotFound { resource: String, key: String },

    /// A guard refused or the source failed (from the library).
    #[error(transparent)]
    Guard(#[from] rampart::Error),

    /// Too many requests in flight: shed.
    #[error("overloaded: too many requests in flight")]
    Overloaded,

    /// The request took longer than the request timeout.
    #[error("request timed out")]
    Timeout,

    /// The handler panicked; the panic was contained to this request.
    #[error("internal error (a panic was contained)")]
    Panic,

    /// No route matches the path (any method).
    #[error("no route for {method} {path}")]
    UnknownRoute { method: String, path: String },

    /// The path exists but not for this method; axum adds the `Allow`
    /// header listing the methods that do exist.
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },

    /// The request URI is longer than `server.max_uri_bytes`.
    #[error("the request URI has {len} bytes; at most {max}")]
    UriTooLong { len: usize, max: usize },

    /// The header section is larger than `server.max_header_bytes`.
    #[error("the request headers have {len} bytes; at most {max}")]
    HeadersTooLarge { len: usize, max: usize },

    /// A path segment could not be decoded (bad percent-encoding, not UTF-8).
    #[error("bad path: {0}")]
    BadPath(String),

    /// The query string could not be decoded into the route's parameters.
    #[error("bad query string: {0}")]
    BadQuery(String),

    /// A write endpoint was called without `Authorization: Bearer <token>`.
    #[error("this endpoint needs an admin token: Authorization: Bearer <token>")]
    Unauthorized,

    /// A filter rebuild was asked for a resource without an existence filter.
    #[error("resource {:?} has no existence filter ([resource.filter])", echo(.0))]
    NoFilter(String),

    /// A filter rebuild was asked for while one is running.
    #[error("a rebuild of {:?}'s existence filter is already running", echo(.0))]
    RebuildRunning(String),

    /// A write endpoint was called with a token that is not the admin token.
    #[error("the admin token does not match")]
    Forbidden,

    /// A CPU profile was asked for while another is being taken.
    #[error("a profile is being taken; one at a time")]
    ProfileInProgress,

    /// The profiler could not start or render (see `ops/profile.rs`).
    #[error("profiling failed: {0}")]
    Profiler(String),

    /// A session route without a bearer token, or with one that has no
    /// live session (see `sessions/`).
    #[error("session: {0}")]
    NoSession(&'static str),

    /// The in-process session store holds `sessions.max_sessions` already.
    #[error("{max} live sessions already (sessions.max_sessions); try again later")]
    SessionsFull { max: usize },

    /// The OS random number generator failed (no token can be made).
    #[error("no randomness: {0}")]
    Entropy(String),
    /// No stock was ever set for the SKU.
    #[error("no stock for SKU {:?}", echo(.0))]
    UnknownSku(String),

    /// Fewer units are left than a reservation asked for.
    #[error("sold out: {available} left of {sku:?}, {asked} asked")]
    SoldOut {
        sku: String,
        available: i64,
        asked: i64,
    },

    /// A reservation without an `Idempotency-Key` header.
    #[error("the Idempotency-Key header is required: one key per purchase attempt, the same on every retry")]
    MissingIdempotencyKey,

    /// The `Idempotency-Key` was used for another request.
    #[error("the Idempotency-Key {:?} was used for another request (another SKU or quantity)", echo(.0))]
    IdempotencyKeyReused(String),

    /// The `Idempotency-Key`'s first request is still being answered.
    #[error("a request with the Idempotency-Key {:?} is still being answered; retry shortly", echo(.0))]
    IdempotencyInFlight(String),

    /// No reservation by that id.
    #[error("no reservation {:?}", echo(.0))]
    UnknownReservation(String),

    /// The reservation's hold ran out; its units went back into stock.
    #[error("reservation {:?} expired; its units went back into stock", echo(.0))]
    ReservationExpired(String),

    /// The reservation was already confirmed or cancelled.
    #[error("reservation {:?} is already {state}", echo(.id))]
    ReservationSettled { id: String, state: String },

    /// A conditional write's `If-Match` / `If-None-Match` did not hold.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),

    /// A total below what is already held and sold.
    #[error("total {total} is below the {committed} units held or sold")]
    TotalBelowCommitted { total: i64, committed: i64 },

    /// The stock tables could not be read or written.
    #[error("stock database: {0}")]
    StockStore(String),
    /// No config namespace by that name.
    #[error("no config namespace named {:?}", echo(.0))]
    UnknownNamespace(String),

    /// A config namespace name outside `[A-Za-z0-9._-]{1,128}`.
    #[error("bad namespace name {0:?}: 1 to 128 of A-Z a-z 0-9 . _ -")]
    BadNamespace(String),

    /// No such version of a config namespace.
    #[error("{:?} has no version {version}", echo(namespace))]
    UnknownVersion { namespace: String, version: u64 },

    /// `If-Match` named another version than the current one.
    #[error("the current version is {0}; If-Match must name it")]
    VersionMismatch(u64),

    /// `If-None-Match: *` on a namespace that exists.
    #[error("the namespace exists, at version {0}; change it with If-Match")]
    NamespaceExists(u64),

    /// A config write without `If-Match` or `If-None-Match: *`.
    #[error(
        "a write needs If-Match: \"N\" (the version it changes) or If-None-Match: * (to create)"
    )]
    PreconditionRequired,

    /// A config content (or body) over the configured size.
    #[error("the content has {} bytes; at most {max} (config_center.max_content_bytes)", len.map_or_else(|| "more".to_owned(), |n| n.to_string()))]
    ContentTooLarge { len: Option<usize>, max: usize },

    /// A body that is not JSON.
    #[error("malformed JSON at line {line}, column {column}: {detail}")]
    MalformedJson {
        line: usize,
        column: usize,
        detail: String,
    },

    /// JSON of the wrong shape.
    #[error("{0}")]
    InvalidBody(String),

    /// A change record without some of its fields.
    #[error("the change record needs {}", .0.join(", "))]
    MissingChange(Vec<&'static str>),

    /// Content that violates the namespace's JSON Schema.
    #[error("the content violates the namespace's schema in {total} place(s): {}", violations.iter().map(|(p, m)| format!("{} {m}", if p.is_empty() { "/" } else { p })).collect::<Vec<_>>().join("; "))]
    SchemaViolation {
        violations: Vec<(String, String)>,
        total: usize,
    },

    /// A schema that is not a valid JSON Schema.
    #[error("not a valid JSON Schema: {0}")]
    InvalidSchema(String),

    /// A change while a canary is pending.
    #[error("{:?} has a canary pending: promote or abort it first", echo(.0))]
    CanaryActive(String),

    /// Promote or abort without a canary.
    #[error("{:?} has no canary pending", echo(.0))]
    NoCanary(String),

    /// The config center's database failed.
    #[error("the config store failed: {0}")]
    ConfigStore(String),

    /// A reload refused: the new config is invalid or changes a setting
    /// only a restart can change (the message names it). Nothing changed.
    #[error("reload refused, the running settings stay: {0}")]
    ReloadRefused(String),

    /// `config_center.enabled` is off.
    #[error("the config center is disabled (config_center.enabled)")]
    ConfigCenterDisabled,
}

/// How much of a caller's input an error echoes back, in characters.
pub const ECHO_MAX_CHARS: usize = 64;

/// Caller input as an error detail echoes it: at most [`ECHO_MAX_CHARS`]
/// characters, then "…". A 65 KB key echoed whole would turn every bad
/// request into a 65 KB answer (and log line) the caller chose the size of.
pub fn echo(input: &str) -> String {
    truncate(input, ECHO_MAX_CHARS)
}

/// `text` cut to at most `max_chars` characters, "…" marking a cut.
fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The longest `detail` any error answers with, in characters: the last
/// bound on details built from messages this crate does not write (axum's
/// rejections, the library's errors), which may quote input.
const DETAIL_MAX_CHARS: usize = 512;

#[derive(Serialize)]
struct Body<'a> {
    error: String,
    code: &'a str,
    detail: String,
    /// Fields some errors add (`Error::extra`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Error {
    /// The status, the stable machine-readable code and, for rejections,
    /// how many seconds to wait before retrying.
    fn classify(&self) -> (StatusCode, &'static str, Option<u64>) {
        use rampart::ErrorKind as G;
        match self {
            Error::UnknownResource(_) => (StatusCode::NOT_FOUND, "unknown_resource", None),
            Error::BadKey { .. } => (StatusCode::BAD_REQUEST, "bad_key", None),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", None),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found", None),
            Error::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", Some(1)),
            Error::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout", Some(1)),
            Error::Panic => (StatusCode::INTERNAL_SERVER_ERROR, "panic", None),
            Error::UnknownRoute { .. } => (StatusCode::NOT_FOUND, "unknown_route", None),
            Error::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            Error::UriTooLong { .. } => (StatusCode::URI_TOO_LONG, "uri_too_long", None),
            Error::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                None,
            ),
            Error::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_path", None),
            Error::BadQuery(_) => (StatusCode::BAD_REQUEST, "bad_query", None),
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            Error::Forbidden => (StatusCode::FORBIDDEN, "forbidden", None),
            Error::NoFilter(_) => (StatusCode::NOT_FOUND, "no_filter", None),
            Error::RebuildRunning(_) => (StatusCode::CONFLICT, "rebuild_running", None),
            Error::ProfileInProgress => (StatusCode::CONFLICT, "profile_in_progress", None),
            Error::Profiler(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
            Error::NoSession(_) => (StatusCode::UNAUTHORIZED, "no_session", None),
            Error::SessionsFull { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "sessions_full", Some(1))
            }
            Error::Entropy(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
            Error::UnknownSku(_) => (StatusCode::NOT_FOUND, "unknown_sku", None),
            Error::SoldOut { .. } => (StatusCode::CONFLICT, "sold_out", None),
            Error::MissingIdempotencyKey => {
                (StatusCode::BAD_REQUEST, "missing_idempotency_key", None)
            }
            Error::IdempotencyKeyReused(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                None,
            ),
            Error::IdempotencyInFlight(_) => {
                (StatusCode::CONFLICT, "idempotency_in_flight", Some(1))
            }
            Error::UnknownReservation(_) => (StatusCode::NOT_FOUND, "unknown_reservation", None),
            Error::ReservationExpired(_) => (StatusCode::GONE, "reservation_expired", None),
            Error::ReservationSettled { .. } => (StatusCode::CONFLICT, "reservation_settled", None),
            Error::PreconditionFailed(_) => {
                (StatusCode::PRECONDITION_FAILED, "precondition_failed", None)
            }
            Error::UnknownNamespace(_) => (StatusCode::NOT_FOUND, "unknown_namespace", None),
            Error::BadNamespace(_) => (StatusCode::BAD_REQUEST, "bad_namespace", None),
            Error::UnknownVersion { .. } => (StatusCode::NOT_FOUND, "unknown_version", None),
            Error::VersionMismatch(_) => {
                (StatusCode::PRECONDITION_FAILED, "version_mismatch", None)
            }
            Error::NamespaceExists(_) => {
                (StatusCode::PRECONDITION_FAILED, "namespace_exists", None)
            }
            Error::PreconditionRequired => (
                StatusCode::PRECONDITION_REQUIRED,
                "precondition_required",
                None,
            ),
            Error::TotalBelowCommitted { .. } => {
                (StatusCode::CONFLICT, "total_below_committed", None)
            }
            Error::StockStore(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "source_unavailable",
                Some(1),
            ),
            Error::ContentTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "content_too_large", None)
            }
            Error::MalformedJson { .. } => (StatusCode::BAD_REQUEST, "malformed_json", None),
            Error::InvalidBody(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", None),
            Error::MissingChange(_) => (StatusCode::UNPROCESSABLE_ENTITY, "missing_change", None),
            Error::SchemaViolation { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "schema_violation", None)
            }
            Error::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema", None),
            Error::CanaryActive(_) => (StatusCode::CONFLICT, "canary_active", None),
            Error::NoCanary(_) => (StatusCode::NOT_FOUND, "no_canary", None),
            Error::ConfigStore(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "config_store_unavailable",
                Some(1),
            ),
            Error::ConfigCenterDisabled => (StatusCode::NOT_FOUND, "config_center_disabled", None),
            Error::ReloadRefused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "reload_refused", None),
            Error::Guard(err) => match err.kind() {
                G::BreakerOpen { retry_after, .. } => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "breaker_open",
                    Some(retry_after.as_secs().max(1)),
                ),
                G::BulkheadFull { .. } | G::BulkheadTimeout { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "source_busy", Some(1))
                }
                G::LeaseWaitTimeout(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "lease_timeout", Some(1))
                }
                // This client's misses, not the service: hits still work.
                G::Throttled { retry_after } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "miss_budget",
                    Some(retry_after.as_secs().max(1)),
                ),
                G::RetryBudgetExhausted => {
                    (StatusCode::SERVICE_UNAVAILABLE, "retry_budget", Some(1))
                }
                G::Source(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "source_unavailable",
                    Some(1),
                ),
                // The shared cache tier (Redis), not the source: operators
                // must be able to tell which dependency is down.
                G::Tier(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cache_unavailable",
                    Some(1),
                ),
                G::LoadTimeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "source_timeout", Some(1)),
                G::LoadPanicked(_) => (StatusCode::INTERNAL_SERVER_ERROR, "panic", None),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
            },
        }
    }

    /// The stable code, for metrics labels and logs.
    pub fn code(&self) -> &'static str {
        self.classify().1
    }

    /// Machine-readable fields beside `detail`, for the errors a client
    /// acts on: the current version of a 412, each missing field of a
    /// change record, each schema violation's JSON pointer, where a body
    /// stopped being JSON.
    fn extra(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        use serde_json::json;
        let value = match self {
            Error::VersionMismatch(current) | Error::NamespaceExists(current) => {
                json!({ "current_version": current })
            }
            Error::MissingChange(missing) => json!({ "missing": missing }),
            Error::SchemaViolation { violations, total } => json!({
                "violations": violations
                    .iter()
                    .map(|(pointer, message)| json!({ "pointer": pointer, "message": message }))
                    .collect::<Vec<_>>(),
                "total": total,
            }),
            Error::MalformedJson { line, column, .. } => json!({ "line": line, "column": column }),
            _ => return None,
        };
        match value {
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, retry_after) = self.classify();
        // `Guard` displays transparently, so every detail is `to_string`.
        let detail = truncate(&self.to_string(), DETAIL_MAX_CHARS);
        let body = Body {
            error: code.replace('_', " "),
            code,
            detail,
            extra: self.extra(),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Error::VersionMismatch(current) | Error::NamespaceExists(current) = &self {
            // The version to retry against, as the ETag a read would give.
            if let Ok(tag) = HeaderValue::from_str(&format!("\"{current}\"")) {
                headers.insert(header::ETAG, tag);
            }
        }
        if matches!(self, Error::Unauthorized | Error::NoSession(_)) {
            // RFC 6750: a 401 names the scheme the caller should use.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rampart\""),
            );
        }
        response
    }
}
