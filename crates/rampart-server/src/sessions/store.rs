//! What every session store does, and the rules they share: how data
//! merges, how big it may be, when a session has expired.

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};

use super::token::SessionId;
use crate::error::Error;

/// A session's data: a JSON object.
pub type Data = Map<String, Value>;

/// One session as a store answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// The caller's data.
    pub data: Data,
    /// When it was created (Unix ms); the absolute timeout counts from here.
    pub created_ms: u64,
    /// When it was last used (Unix ms); the idle timeout counts from here.
    pub last_seen_ms: u64,
}

/// Where sessions live. Every method takes `now` (Unix ms) from the
/// caller's clock, so the rules are the same in every store and a mock
/// clock drives them in tests. An expired session is answered as absent.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session under `id` (a fresh token's hash).
    async fn create(&self, id: SessionId, data: Data, now: u64) -> Result<Session, Error>;

    /// The live session, its idle timeout restarted.
    async fn get(&self, id: &SessionId, now: u64) -> Result<Option<Session>, Error>;

    /// Merges `patch` into the live session's data atomically (no write of
    /// a concurrent patch is lost), its idle timeout restarted.
    async fn patch(&self, id: &SessionId, patch: Data, now: u64) -> Result<Option<Session>, Error>;

    /// Removes the session; whether there was a live one.
    async fn delete(&self, id: &SessionId, now: u64) -> Result<bool, Error>;

    /// Moves the live session from `old` to `new` (the old token is dead
    /// from then on), keeping its creation time and data.
    async fn rotate(
        &self,
        old: &SessionId,
        new: SessionId,
        now: u64,
    ) -> Result<Option<Session>, Error>;

    /// Live sessions, where the store knows it cheaply (the in-process one).
    fn live_sessions(&self) -> Option<usize> {
        None
    }
}

/// The expiry rule: live while used within `idle_ms` and younger than
/// `absolute_ms`.
pub fn is_live(
    created_ms: u64,
    last_seen_ms: u64,
    now: u64,
    idle_ms: u64,
    absolute_ms: u64,
) -> bool {
    now < last_seen_ms.saturating_add(idle_ms) && now < created_ms.saturating_add(absolute_ms)
}

/// How many bytes a key and its value count for toward `max_data_bytes`.
pub fn entry_bytes(key: &str, value: &Value) -> usize {
    key.len() + value.to_string().len()
}

/// The merge rule (JSON Merge Patch, RFC 7396, at the top level): each
/// key of `patch` replaces the stored one; a `null` removes it. Refused,
/// with nothing changed, if the result would be larger than `max_bytes`.
pub fn merge(data: &mut Data, patch: Data, max_bytes: usize) -> Result<(), Error> {
    let mut size = data_bytes(data);
    for (key, value) in &patch {
        if let Some(old) = data.get(key) {
            size -= entry_bytes(key, old);
        }
        if !value.is_null() {
            size += entry_bytes(key, value);
        }
    }
    if size > max_bytes {
        return Err(too_large(size, max_bytes));
    }
    for (key, value) in patch {
        if value.is_null() {
            data.remove(&key);
        } else {
            data.insert(key, value);
        }
    }
    Ok(())
}

/// Refuses new data larger than `max_bytes`.
pub fn fits(data: &Data, max_bytes: usize) -> Result<(), Error> {
    let size = data_bytes(data);
    if size > max_bytes {
        return Err(too_large(size, max_bytes));
    }
    Ok(())
}

/// The size of `data` as `max_data_bytes` counts it.
pub fn data_bytes(data: &Data) -> usize {
    data.iter().map(|(k, v)| entry_bytes(k, v)).sum()
}

/// The error for data past `max_data_bytes`.
pub fn too_large(size: usize, max: usize) -> Error {
    Error::BadRequest(format!(
        "data: the session's data would be {size} bytes; at most {max} (sessions.max_data_bytes)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Data {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn merge_replaces_adds_and_removes_top_level_keys() {
        let mut data = object(json!({ "a": 1, "b": { "x": 1 }, "c": true }));
        merge(
            &mut data,
            object(json!({ "b": { "y": 2 }, "c": null, "d": "new" })),
            1024,
        )
        .expect("fits");
        assert_eq!(
            Value::Object(data),
            json!({ "a": 1, "b": { "y": 2 }, "d": "new" })
        );
    }

    #[test]
    fn merge_past_the_bound_changes_nothing() {
        let mut data = object(json!({ "a": "12345" }));
        let before = data.clone();
        let err =
            merge(&mut data, object(json!({ "b": "x".repeat(100) })), 64).expect_err("too big");
        assert!(err.to_string().contains("data:"), "{err}");
        assert_eq!(data, before);
        // Replacing a big value by a small one fits although the sum of both would not.
        let mut data = object(json!({ "a": "x".repeat(50) }));
        merge(&mut data, object(json!({ "a": "y" })), 60).expect("fits");
    }

    #[test]
    fn expiry_is_idle_or_absolute_whichever_first() {
        assert!(is_live(0, 0, 9, 10, 100));
        assert!(!is_live(0, 0, 10, 10, 100));
        assert!(is_live(0, 95, 99, 10, 100));
        assert!(!is_live(0, 95, 100, 10, 100));
    }
}
