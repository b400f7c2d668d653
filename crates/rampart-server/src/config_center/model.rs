//! What a namespace is in memory: its current version, its schema, an
//! optional canary; and which of them a client sees.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The change-risk card every version carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Change {
    pub author: String,
    pub reason: String,
    pub rollback_plan: String,
}

/// One immutable version of a namespace (or a canary's candidate).
#[derive(Debug)]
pub struct Version {
    pub version: u64,
    /// Hex SHA-256 of `content`'s bytes.
    pub digest: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub content: Box<RawValue>,
    pub change: Change,
    /// The `GET /v1/config/{ns}` answer for this version, made once.
    pub body: Bytes,
}

/// `GET /v1/config/{ns}`'s body.
#[derive(Serialize)]
struct GetBody<'a> {
    namespace: &'a str,
    version: u64,
    digest: &'a str,
    created_at: String,
    content: &'a RawValue,
    canary: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    resync: bool,
}

impl Version {
    /// A version of `namespace` from its stored parts.
    pub fn new(
        namespace: &str,
        version: u64,
        created_at: i64,
        content: Box<RawValue>,
        change: Change,
        canary: bool,
    ) -> Version {
        let digest = digest(content.get());
        let mut v = Version {
            version,
            digest,
            created_at,
            content,
            change,
            body: Bytes::new(),
        };
        v.body = v.render(namespace, canary, false);
        v
    }

    /// The GET answer's body; `resync` marks an answer to a client that
    /// was ahead of the server.
    pub fn render(&self, namespace: &str, canary: bool, resync: bool) -> Bytes {
        let body = GetBody {
            namespace,
            version: self.version,
            digest: &self.digest,
            created_at: rfc3339(self.created_at),
            content: &self.content,
            canary,
            resync,
        };
        // Serialising borrowed strings and a raw value cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// A candidate version served to some clients before everyone.
#[derive(Debug)]
pub struct Canary {
    /// Numbered as the version it becomes when promoted (base + 1).
    pub version: Arc<Version>,
    pub clients: HashSet<String>,
    /// 0–100: the share of other clients (by a stable hash of their id).
    pub percent: u8,
}

/// A namespace as served: what one `Snapshot` version holds.
#[derive(Debug)]
pub struct NsState {
    pub name: String,
    /// Bumped by every change (a version, a canary started, promoted or
    /// aborted): the snapshot's version, so no instance goes backwards.
    pub revision: u64,
    pub stable: Arc<Version>,
    pub canary: Option<Canary>,
    /// The namespace's JSON Schema, if it has one (text as stored).
    pub schema: Option<String>,
    /// Unix milliseconds of the last change.
    pub updated_at: i64,
}

impl NsState {
    /// The version `client` is served, and whether it is the canary.
    pub fn view(&self, client: Option<&str>) -> (&Arc<Version>, bool) {
        match (&self.canary, client) {
            (Some(canary), Some(client)) if in_canary(&self.name, client, canary) => {
                (&canary.version, true)
            }
            _ => (&self.stable, false),
        }
    }
}

/// Whether `client` is on the canary side: listed, or its stable hash
/// bucket (0–99) is below the percentage. Same id, same side, on every
/// instance and every release: the bucket is SHA-256 of the namespace and
/// the id, not a per-process hash.
pub fn in_canary(namespace: &str, client: &str, canary: &Canary) -> bool {
    canary.clients.contains(client) || bucket(namespace, client) < u64::from(canary.percent)
}

/// The stable bucket 0–99 of (namespace, client).
pub fn bucket(namespace: &str, client: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update(namespace.as_bytes());
    hash.update([0]);
    hash.update(client.as_bytes());
    let out = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_be_bytes(first) % 100
}

/// Hex SHA-256 of `text`.
pub fn digest(text: &str) -> String {
    use std::fmt::Write;
    let out = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in out {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Unix milliseconds as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(unix_ms: i64) -> String {
    let at = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
