//! A resource's key, parsed and checked once at the edge (so the cache, the
//! SQL binding and the Redis key names never see an unchecked string).

use std::fmt;
use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::config::KeyType;

/// Longest string key accepted, in bytes.
pub const MAX_STRING_KEY: usize = 256;

/// A resource key, already checked against the resource's key type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Int(i64),
    Str(Arc<str>),
}

impl Key {
    /// Parses a key from a URL segment; the message says what is wrong.
    pub fn parse(key_type: KeyType, raw: &str) -> Result<Key, String> {
        match key_type {
            KeyType::Integer => raw
                .parse::<i64>()
                .map(Key::Int)
                .map_err(|_| format!("{raw:?} is not an integer key")),
            KeyType::String => {
                if raw.is_empty() {
                    Err("the key is empty".into())
                } else if raw.len() > MAX_STRING_KEY {
                    Err(format!("the key is longer than {MAX_STRING_KEY} bytes"))
                } else if raw.chars().any(char::is_control) {
                    Err("the key contains control characters".into())
                } else {
                    Ok(Key::Str(Arc::from(raw)))
                }
            }
        }
    }

    pub(crate) fn bind<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        match self {
            Key::Int(i) => query.bind(*i),
            Key::Str(s) => query.bind(s.to_string()),
        }
    }

    /// Reads a key of `key_type` from a row's column (by name or index).
    pub(crate) fn from_row<I>(
        key_type: KeyType,
        row: &AnyRow,
        column: I,
    ) -> Result<Key, sqlx::Error>
    where
        I: sqlx::ColumnIndex<AnyRow>,
    {
        Ok(match key_type {
            KeyType::Integer => Key::Int(row.try_get::<i64, _>(column)?),
            KeyType::String => Key::Str(Arc::from(row.try_get::<String, _>(column)?)),
        })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Str(s) => f.write_str(s),
        }
    }
}
