//! The crate's one error type, and the one place it becomes an HTTP
//! response: `{ "error", "code", "detail" }` with a precise status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// Everything that can go wrong in the service, at start-up or per request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config file (or the embedded one) is invalid.
    #[error("config {file}: {message}")]
    Config { file: String, message: String },

    /// The database could not be reached or a query failed.
    #[error("database: {0}")]
    Database(String),

    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },

    /// No resource by that name.
    #[error("no resource named {0:?}")]
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
}

#[derive(Serialize)]
struct Body<'a> {
    error: String,
    code: &'a str,
    detail: String,
}

impl Error {
    /// The status, the stable machine-readable code and, for rejections,
    /// how many seconds to wait before retrying.
    fn classify(&self) -> (StatusCode, &'static str, Option<u64>) {
        use rampart::ErrorKind as G;
        match self {
            Error::Config { .. } | Error::Bind { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
            }
            Error::Database(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "source_unavailable",
                Some(1),
            ),
            Error::UnknownResource(_) => (StatusCode::NOT_FOUND, "unknown_resource", None),
            Error::BadKey { .. } => (StatusCode::BAD_REQUEST, "bad_key", None),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", None),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found", None),
            Error::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", Some(1)),
            Error::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout", Some(1)),
            Error::Panic => (StatusCode::INTERNAL_SERVER_ERROR, "panic", None),
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
                G::RetryBudgetExhausted => {
                    (StatusCode::SERVICE_UNAVAILABLE, "retry_budget", Some(1))
                }
                G::Source(_) | G::Tier(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "source_unavailable",
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
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, retry_after) = self.classify();
        // `Guard` displays transparently, so every detail is `to_string`.
        let body = Body {
            error: code.replace('_', " "),
            code,
            detail: self.to_string(),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
