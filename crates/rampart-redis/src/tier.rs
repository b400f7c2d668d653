//! [`RedisTier`]: the shared L2 on Redis or Redis Cluster.

use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rampart::cache::{FillOutcome, Stored, Tier, TierRead};
use rampart::Error;

use crate::codec;
use crate::conn::Redis;
use crate::keys::{KeySet, INVALIDATE_CHANNEL};
use crate::scripts::{FILL, INVALIDATE};

/// How long a generation counter outlives its last invalidation. It must
/// outlast any load in flight (seconds); a day is generous and bounds the
/// memory of keys invalidated once and never again.
pub const GENERATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// One resource's entries in Redis.
pub struct RedisTier<K> {
    redis: Redis,
    resource: Arc<str>,
    _keys: PhantomData<fn(&K)>,
}

impl<K> RedisTier<K> {
    /// The tier of `resource` over `redis`.
    pub fn new(redis: Redis, resource: impl Into<Arc<str>>) -> Self {
        RedisTier {
            redis,
            resource: resource.into(),
            _keys: PhantomData,
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[async_trait]
impl<K> Tier<K, Bytes> for RedisTier<K>
where
    K: Display + Send + Sync + 'static,
{
    async fn get(&self, key: &K) -> Result<TierRead<Bytes>, Error> {
        let keys = KeySet::new(&self.resource, &key.to_string());
        let (value, generation): (Option<Vec<u8>>, Option<u64>) = self
            .redis
            .call(|mut conn| async move {
                redis::cmd("MGET")
                    .arg(&keys.value)
                    .arg(&keys.generation)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(TierRead {
            // Bytes this version cannot read are a miss, not an error.
            entry: value.as_deref().and_then(codec::decode),
            generation: generation.unwrap_or(0),
        })
    }

    async fn get_many(&self, keys: &[K]) -> Result<Vec<TierRead<Bytes>>, Error> {
        // Concurrent single reads: the multiplexed connection pipelines
        // them on the wire, and in a Cluster each goes to its own slot's
        // node (one pipeline across slots would not).
        futures_util::future::try_join_all(keys.iter().map(|key| self.get(key))).await
    }

    async fn fill(
        &self,
        key: &K,
        entry: Stored<Bytes>,
        generation: u64,
        fence: u64,
    ) -> Result<FillOutcome, Error> {
        let ttl_ms = entry.error_until_ms.saturating_sub(unix_ms());
        if ttl_ms == 0 {
            return Ok(FillOutcome::Refused);
        }
        let keys = KeySet::new(&self.resource, &key.to_string());
        let payload = codec::encode(&entry);
        let stored: i64 = self
            .redis
            .call(|mut conn| async move {
                FILL.key(&keys.value)
                    .key(&keys.generation)
                    .key(&keys.stored_fence)
                    .arg(generation)
                    .arg(fence)
                    .arg(payload.as_ref())
                    .arg(ttl_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(if stored == 1 {
            FillOutcome::Stored
        } else {
            FillOutcome::Refused
        })
    }

    async fn invalidate(&self, key: &K) -> Result<(), Error> {
        let key = key.to_string();
        let keys = KeySet::new(&self.resource, &key);
        let notice = format!("{}\n{key}", self.resource);
        let generation_ttl = u64::try_from(GENERATION_TTL.as_millis()).unwrap_or(u64::MAX);
        self.redis
            .call(|mut conn| async move {
                let _: i64 = INVALIDATE
                    .key(&keys.value)
                    .key(&keys.generation)
                    .key(&keys.stored_fence)
                    .arg(generation_ttl)
                    .invoke_async(&mut conn)
                    .await?;
                // Every process drops its L1 copy (the invalidation bus).
                redis::cmd("PUBLISH")
                    .arg(INVALIDATE_CHANNEL)
                    .arg(notice)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await?;
        Ok(())
    }
}
