//! What a config-center call can fail with.

use serde_json::Value;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered an error: its status, stable `code` and
    /// `detail`, and the whole body (a 412 carries `current_version`).
    #[error("{status} {code}: {detail}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The stable error code (`version_mismatch`, `schema_violation` …).
        code: String,
        /// What went wrong, in words.
        detail: String,
        /// The error body as sent.
        body: Value,
    },
    /// No server could be reached (each one's failure, in order).
    #[error("no config server answered: {}", .0.join("; "))]
    Unreachable(Vec<String>),
    /// An answer that is not what the API documents.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// A version's content that does not deserialize into the watched
    /// type, or that the validator refused.
    #[error("version {version} refused: {reason}")]
    Refused {
        /// The version refused.
        version: u64,
        /// Why.
        reason: String,
    },
    /// Bad client settings (no URL, a URL without a scheme …).
    #[error("{0}")]
    Config(String),
    /// The last-known-good file could not be read or written.
    #[error("last-known-good file {path}: {message}")]
    Persist {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
}

impl ClientError {
    /// The status of a server error (`None` for other failures).
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}
