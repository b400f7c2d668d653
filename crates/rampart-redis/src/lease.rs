//! [`RedisLease`]: one holder per key across every process, with a fence
//! from `INCR` and a watchdog that renews the lease (every third of its
//! length) while the load runs. Release is compare-and-delete plus a
//! notice that wakes the waiters in every process.

use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rampart::cache::{Acquired, Lease, LeaseGuard, LeaseWait};
use rampart::Error;

use crate::conn::Redis;
use crate::keys::{KeySet, RELEASE_CHANNEL};
use crate::notices::Notices;
use crate::scripts::{ACQUIRE, RELEASE, RENEW};
use crate::tier::GENERATION_TTL;

/// Fenced leases for one resource's keys.
pub struct RedisLease<K> {
    redis: Redis,
    resource: Arc<str>,
    ttl: Duration,
    notices: Notices,
    _keys: PhantomData<fn(&K)>,
}

impl<K> RedisLease<K> {
    /// Leases of `ttl` (renewed while held) for `resource`'s keys; losers
    /// are woken through `notices`.
    pub fn new(
        redis: Redis,
        resource: impl Into<Arc<str>>,
        ttl: Duration,
        notices: Notices,
    ) -> Self {
        RedisLease {
            redis,
            resource: resource.into(),
            ttl,
            notices,
            _keys: PhantomData,
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl<K> Lease<K> for RedisLease<K>
where
    K: Display + Send + Sync + 'static,
{
    async fn acquire(&self, key: &K) -> Result<Acquired, Error> {
        let keys = KeySet::new(&self.resource, &key.to_string());
        // Registered before trying, so a release right after our failed
        // attempt still wakes us.
        let waiter = self.notices.waiter(&keys.tag);
        let token = format!("{:032x}", fastrand::u128(..));
        let (lease_ms, fence_ms) = (ms(self.ttl), ms(GENERATION_TTL));
        let fence: u64 = {
            let (keys, token) = (keys.clone(), token.clone());
            self.redis
                .call(|mut conn| async move {
                    ACQUIRE
                        .key(&keys.lease)
                        .key(&keys.fence)
                        .arg(&token)
                        .arg(lease_ms)
                        .arg(fence_ms)
                        .invoke_async(&mut conn)
                        .await
                })
                .await?
        };
        if fence == 0 {
            return Ok(Acquired::Lost(LeaseWait::new(waiter.wait())));
        }
        drop(waiter);
        let watchdog = {
            let (redis, keys, token) = (self.redis.clone(), keys.clone(), token.clone());
            let every = self.ttl / 3;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let renewed = redis
                        .call(|mut conn| {
                            let (keys, token) = (keys.clone(), token.clone());
                            async move {
                                RENEW
                                    .key(&keys.lease)
                                    .arg(&token)
                                    .arg(lease_ms)
                                    .invoke_async::<i64>(&mut conn)
                                    .await
                            }
                        })
                        .await;
                    // Lost it (expired, or Redis is unreachable): stop; the
                    // fence keeps a late fill from overwriting newer data.
                    if !matches!(renewed, Ok(1)) {
                        return;
                    }
                }
            })
        };
        let redis = self.redis.clone();
        Ok(Acquired::Won(LeaseGuard::new(fence, move || {
            watchdog.abort();
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return; // no runtime to release on: the lease expires by itself
            };
            runtime.spawn(async move {
                let _ = redis
                    .call(|mut conn| async move {
                        RELEASE
                            .key(&keys.lease)
                            .arg(&token)
                            .arg(RELEASE_CHANNEL)
                            .arg(&keys.tag)
                            .invoke_async::<i64>(&mut conn)
                            .await
                    })
                    .await;
            });
        })))
    }
}
