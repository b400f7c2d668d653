//! [`RedisTier`]: the shared L2 on Redis or Redis Cluster.

use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use rampart::cache::{FillOutcome, Stored, Tier, TierRead};
use rampart::Error;

use crate::bounds::ms;
use crate::breakers::slot_of;
use crate::codec;
use crate::conn::GuardedRedis;
use crate::keys::{KeySet, INVALIDATE_CHANNEL};
use crate::scripts::{FILL, FILL_COPY, INVALIDATE, INVALIDATE_COPY, READ};

/// A fresh generation epoch: random, below 2^52 so that Lua (doubles) and
/// `INCR` both hold it and what follows it exactly. Why random: see
/// [`scripts`](crate::scripts).
fn epoch() -> u64 {
    fastrand::u64(1..(1 << 52))
}

/// One resource's entries in Redis.
///
/// With `replicas = N > 1` every entry is kept in N copies under different
/// hash tags (hot-key splitting): a read picks one copy at random, a fill
/// writes all of them, an invalidation clears all of them.
///
/// Copy 0 (the key's own tag) holds the generation that counts; each other
/// copy mirrors it, because a fill presents one generation for all copies
/// and no script can touch two slots. A fill goes to copy 0 first, checked
/// as for a single copy, and to the others only if copy 0 took it; an
/// invalidation bumps copy 0 first, then sets every other copy's
/// generation to the new one and deletes its entry. So for a fill that
/// read its generation before an invalidation: if it reached copy 0 after
/// the bump, it is refused there and goes nowhere; if before, each other
/// copy either gets it before the invalidation does (and the invalidation
/// deletes it) or after (and refuses it: its generation has moved). No
/// stale copy survives. A copy without a generation (new, or its node lost
/// it) adopts the one of a fill that copy 0 has just confirmed — the one
/// window left is a copy whose node loses its data in the milliseconds
/// between an invalidation passing it and such a fill reaching it. A read
/// of a copy without an entry asks copy 0, so a copy that lags costs
/// spreading, never correctness or a load.
///
/// Generations start from random epochs and expire after the resource's
/// longest entry life; see [`scripts`](crate::scripts) and
/// [`bounds`](crate::bounds) for why.
pub struct RedisTier<K> {
    redis: GuardedRedis,
    resource: Arc<str>,
    replicas: u32,
    generation_ms: u64,
    _keys: PhantomData<fn(&K)>,
}

impl<K> RedisTier<K> {
    /// The tier of `resource` over `redis`, one copy per entry. Generation
    /// keys live `max_entry_life` after their last use
    /// ([`bounds::max_entry_life`](crate::bounds::max_entry_life) computes
    /// it from the cache's settings).
    pub fn new(
        redis: GuardedRedis,
        resource: impl Into<Arc<str>>,
        max_entry_life: Duration,
    ) -> Self {
        RedisTier {
            redis,
            resource: resource.into(),
            replicas: 1,
            generation_ms: ms(max_entry_life),
            _keys: PhantomData,
        }
    }

    /// The same tier with `replicas` copies of every entry (at least 1).
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Copy 0's entry and generation, creating the generation if missing.
    /// The generation is nearly always there (created by the first read,
    /// kept by fills and invalidations), so a plain MGET answers; only a
    /// key without one pays a second call, to the READ script that creates
    /// it. Measured: the script on every read cost about 35 % of pipelined
    /// read throughput on loopback, MGET first costs nothing on a warm key.
    async fn read_primary(&self, key: &str) -> Result<TierRead<Bytes>, Error> {
        let keys = KeySet::new(&self.resource, key);
        if let Some(read) = self.read_with_generation(&keys).await? {
            return Ok(read);
        }
        let generation_ms = self.generation_ms;
        let (value, generation): (Option<Vec<u8>>, u64) = self
            .redis
            .call(keys.slot(), |mut conn| async move {
                READ.key(&keys.value)
                    .key(&keys.generation)
                    .arg(epoch())
                    .arg(generation_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(TierRead {
            // Bytes this version cannot read are a miss, not an error.
            entry: value.as_deref().and_then(codec::decode),
            generation,
        })
    }

    /// One MGET of an entry and its generation; `None` if there is no
    /// generation (whatever the entry: without a generation it cannot be
    /// refilled, and for copy 0 the READ script must create one).
    async fn read_with_generation(&self, keys: &KeySet) -> Result<Option<TierRead<Bytes>>, Error> {
        let (value, generation): (Option<Vec<u8>>, Option<u64>) = self
            .redis
            .call(keys.slot(), |mut conn| async move {
                redis::cmd("MGET")
                    .arg(&keys.value)
                    .arg(&keys.generation)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(generation.map(|generation| TierRead {
            // Bytes this version cannot read are a miss, not an error.
            entry: value.as_deref().and_then(codec::decode),
            generation,
        }))
    }

    /// Copy `replica > 0`'s entry with its mirrored generation, or `None`
    /// if it has no readable entry or no generation (then copy 0 answers).
    async fn read_copy(&self, key: &str, replica: u32) -> Result<Option<TierRead<Bytes>>, Error> {
        let keys = KeySet::replica(&self.resource, key, replica);
        let read = self.read_with_generation(&keys).await?;
        Ok(read.filter(|read| read.entry.is_some()))
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
        let key = key.to_string();
        let replica = if self.replicas > 1 {
            fastrand::u32(..self.replicas)
        } else {
            0
        };
        if replica > 0 {
            if let Some(read) = self.read_copy(&key, replica).await? {
                return Ok(read);
            }
        }
        self.read_primary(&key).await
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
        let generation_ms = self.generation_ms;
        let fill = |keys: KeySet, script: &'static redis::Script| {
            let payload = payload.clone();
            self.redis.call(keys.slot(), move |mut conn| async move {
                script
                    .key(&keys.value)
                    .key(&keys.generation)
                    .key(&keys.stored_fence)
                    .arg(generation)
                    .arg(fence)
                    .arg(payload.as_ref())
                    .arg(ttl_ms)
                    .arg(generation_ms)
                    .invoke_async::<i64>(&mut conn)
                    .await
            })
        };
        // Copy 0 decides (see the type's doc); the other copies follow,
        // concurrently (each its own slot), and only if it took the fill.
        if fill(KeySet::new(&self.resource, &key), &FILL).await? != 1 {
            return Ok(FillOutcome::Refused);
        }
        // A copy that fails to take it only costs spreading: its readers
        // fall back to copy 0.
        futures_util::future::join_all(
            (1..self.replicas).map(|r| fill(KeySet::replica(&self.resource, &key, r), &FILL_COPY)),
        )
        .await;
        Ok(FillOutcome::Stored)
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
        let generation_ms = self.generation_ms;
        // Copy 0 first, then the others in order (see the type's doc for
        // why that is safe), and every copy even after one failed: a copy
        // skipped would keep serving the old entry to a share of readers.
        let primary = KeySet::new(&self.resource, &key);
        let bumped = self
            .redis
            .call(primary.slot(), |mut conn| async move {
                INVALIDATE
                    .key(&primary.value)
                    .key(&primary.generation)
                    .key(&primary.stored_fence)
                    .arg(epoch())
                    .arg(generation_ms)
                    .invoke_async::<u64>(&mut conn)
                    .await
            })
            .await;
        let (generation, mut first_error) = match bumped {
            Ok(generation) => (generation, None),
            // Copy 0 is out of reach: the other copies get a fresh epoch no
            // fill can hold, so they refuse fills (their readers ask copy
            // 0) until the next invalidation or until it expires.
            Err(err) => (epoch(), Some(err)),
        };
        for r in 1..self.replicas {
            let keys = KeySet::replica(&self.resource, &key, r);
            let cleared = self
                .redis
                .call(keys.slot(), |mut conn| async move {
                    INVALIDATE_COPY
                        .key(&keys.value)
                        .key(&keys.generation)
                        .key(&keys.stored_fence)
                        .arg(generation)
                        .arg(generation_ms)
                        .invoke_async::<i64>(&mut conn)
                        .await
                })
                .await;
            if let Err(err) = cleared {
                first_error.get_or_insert(err);
            }
        }
        // Every process drops its L1 copy (the invalidation bus) — also when
        // a copy failed: the L1 copies are stale either way.
        let notice = format!("{}\n{key}", self.resource);
        let published = self
            .redis
            .call(slot_of(INVALIDATE_CHANNEL), |mut conn| async move {
                redis::cmd("PUBLISH")
                    .arg(INVALIDATE_CHANNEL)
                    .arg(notice)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await;
        match (first_error, published) {
            (Some(err), _) | (None, Err(err)) => Err(err),
            (None, Ok(_)) => Ok(()),
        }
    }
}
