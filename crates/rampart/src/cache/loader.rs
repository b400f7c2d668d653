//! The source of truth behind a cache.

use std::collections::HashMap;
use std::hash::Hash;

use async_trait::async_trait;

use crate::BoxError;

/// Loads values from the source of truth (a database, a service).
///
/// `Ok(None)` means "this key does not exist": the cache remembers that
/// (negative caching) so that lookups of absent keys do not reach the
/// source every time (cache penetration).
#[async_trait]
pub trait Loader<K, V>: Send + Sync + 'static
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + 'static,
{
    /// Loads one key.
    async fn load(&self, key: &K) -> Result<Option<V>, BoxError>;

    /// Loads many keys in one round trip. A key absent from the answer does
    /// not exist. The default loads them one by one.
    async fn load_many(&self, keys: &[K]) -> Result<HashMap<K, V>, BoxError> {
        let mut found = HashMap::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = self.load(key).await? {
                found.insert(key.clone(), value);
            }
        }
        Ok(found)
    }
}
