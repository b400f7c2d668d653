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
///
/// With `replicas = N > 1` every entry is kept in N copies under different
/// hash tags (hot-key splitting): a read picks one copy at random, a fill
/// writes all of them, an invalidation clears all of them. Each copy has its
/// own generation, and invalidation bumps and deletes copy by copy, each
/// step atomic on its slot: a fill that read a generation before the
/// invalidation is refused by every copy already bumped, and whatever it
/// wrote to a copy not yet reached is deleted when the invalidation gets
/// there. No stale copy survives.
pub struct RedisTier<K> {
    redis: Redis,
    resource: Arc<str>,
    replicas: u32,
    _keys: PhantomData<fn(&K)>,
}

impl<K> RedisTier<K> {
    /// The tier of `resource` over `redis`, one copy per entry.
    pub fn new(redis: Redis, resource: impl Into<Arc<str>>) -> Self {
        Self::with_replicas(redis, resource, 1)
    }

    /// Same, with `replicas` copies of every entry (at least 1).
    pub fn with_replicas(redis: Redis, resource: impl Into<Arc<str>>, replicas: u32) -> Self {
        RedisTier {
            redis,
            resource: resource.into(),
            replicas: replicas.max(1),
            _keys: PhantomData,
        }
    }

    fn copies(&self, key: &str) -> impl Iterator<Item = KeySet> + '_ {
        let key = key.to_owned();
        (0..self.replicas).map(move |r| KeySet::replica(&self.resource, &key, r))
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
        let replica = if self.replicas > 1 {
            fastrand::u32(..self.replicas)
        } else {
            0
        };
        let keys = KeySet::replica(&self.resource, &key.to_string(), replica);
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
        let payload = codec::encode(&entry);
        let key = key.to_string();
        // Every copy, concurrently (each its own slot); stored if the first
        // copy took it.
        let outcomes = futures_util::future::join_all(self.copies(&key).map(|keys| {
            let payload = payload.clone();
            self.redis.call(|mut conn| async move {
                FILL.key(&keys.value)
                    .key(&keys.generation)
                    .key(&keys.stored_fence)
                    .arg(generation)
                    .arg(fence)
                    .arg(payload.as_ref())
                    .arg(ttl_ms)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
        }))
        .await;
        match outcomes.into_iter().next() {
            Some(Ok(1)) => Ok(FillOutcome::Stored),
            Some(Ok(_)) | None => Ok(FillOutcome::Refused),
            Some(Err(err)) => Err(err),
        }
    }

    async fn fill_many(
        &self,
        fills: Vec<(K, Stored<Bytes>, u64, u64)>,
    ) -> Result<Vec<FillOutcome>, Error> {
        // Concurrent: the multiplexed connection pipelines them, and each
        // goes to its own slot's node.
        futures_util::future::try_join_all(fills.into_iter().map(
            |(key, entry, generation, fence)| async move {
                self.fill(&key, entry, generation, fence).await
            },
        ))
        .await
    }

    async fn invalidate(&self, key: &K) -> Result<(), Error> {
        let key = key.to_string();
        let generation_ttl = u64::try_from(GENERATION_TTL.as_millis()).unwrap_or(u64::MAX);
        // Copy by copy, in order: see the type's doc for why that is safe.
        for keys in self.copies(&key) {
            self.redis
                .call(|mut conn| async move {
                    INVALIDATE
                        .key(&keys.value)
                        .key(&keys.generation)
                        .key(&keys.stored_fence)
                        .arg(generation_ttl)
                        .invoke_async::<i64>(&mut conn)
                        .await
                })
                .await?;
        }
        // Every process drops its L1 copy (the invalidation bus).
        let notice = format!("{}\n{key}", self.resource);
        self.redis
            .call(|mut conn| async move {
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
