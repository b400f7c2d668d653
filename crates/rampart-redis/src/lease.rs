//! [`RedisLease`]: one holder per key across every process, with a fence
//! from `INCR` and a watchdog that renews the lease (every third of its
//! length) while the load runs. Release is compare-and-delete plus a
//! notice that wakes the waiters in every process.
//!
//! Two things make a lease outlive its holder's interest, and both are
//! handled here:
//!
//! * An ACQUIRE whose answer never came (the call timed out, or the caller
//!   dropped the future) may still have run in Redis. Nobody would release
//!   that lease, and every process would wait for it to expire. So a
//!   release by token is armed before ACQUIRE is sent and fires unless a
//!   clear "won" or "lost" answer disarms it. The token is ours alone, so
//!   the release deletes only a lease that very call took.
//! * A RENEW that fails (a timeout, Redis briefly stalled) does not mean
//!   the lease is gone: the watchdog retries at short intervals until the
//!   lease's own expiry, and stops only when Redis says it is lost or that
//!   expiry has passed.

use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rampart::cache::{Acquired, Lease, LeaseGuard, LeaseWait};
use rampart::{Error, ErrorKind};
use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::bounds::ms;
use crate::conn::GuardedRedis;
use crate::keys::{KeySet, RELEASE_CHANNEL};
use crate::notices::Notices;
use crate::scripts::{ACQUIRE, RELEASE, RENEW};

/// Fenced leases for one resource's keys.
pub struct RedisLease<K> {
    redis: GuardedRedis,
    resource: Arc<str>,
    ttl: Duration,
    fence_ms: u64,
    notices: Notices,
    _keys: PhantomData<fn(&K)>,
}

impl<K> RedisLease<K> {
    /// Leases of `ttl` (renewed while held) for `resource`'s keys; losers
    /// are woken through `notices`. Fence counters live `max_entry_life`
    /// after the last lease granted
    /// ([`bounds::max_entry_life`](crate::bounds::max_entry_life)).
    pub fn new(
        redis: GuardedRedis,
        resource: impl Into<Arc<str>>,
        ttl: Duration,
        max_entry_life: Duration,
        notices: Notices,
    ) -> Self {
        RedisLease {
            redis,
            resource: resource.into(),
            ttl,
            fence_ms: ms(max_entry_life),
            notices,
            _keys: PhantomData,
        }
    }
}

/// How often a failed RENEW or RELEASE is tried again: often enough to get
/// through a short stall well inside the lease, rarely enough not to flood
/// a Redis that is coming back.
fn retry_every(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// Everything needed to release one lease by its token.
struct Release {
    redis: GuardedRedis,
    keys: KeySet,
    token: String,
    ttl: Duration,
    runtime: Option<Handle>,
}

impl Release {
    /// Releases in the background, trying again while Redis does not
    /// answer, until the lease would have expired by itself anyway.
    fn spawn(self) {
        let Some(runtime) = self.runtime.clone().or_else(|| Handle::try_current().ok()) else {
            return; // no runtime to release on: the lease expires by itself
        };
        runtime.spawn(self.run());
    }

    async fn run(self) {
        // Granted or renewed at the latest now, so held at most `ttl` more.
        let until = Instant::now() + self.ttl;
        loop {
            let answered = self
                .redis
                .call(self.keys.slot(), |mut conn| {
                    let (keys, token) = (&self.keys, &self.token);
                    async move {
                        RELEASE
                            .key(&keys.lease)
                            .arg(token)
                            .arg(RELEASE_CHANNEL)
                            .arg(&keys.tag)
                            .invoke_async::<i64>(&mut conn)
                            .await
                    }
                })
                .await;
            if answered.is_ok() || Instant::now() >= until {
                return;
            }
            tokio::time::sleep(retry_every(self.ttl)).await;
        }
    }
}

/// A release armed before ACQUIRE is sent: it fires when dropped, unless
/// an answer disarmed it first.
struct Armed(Option<Release>);

impl Armed {
    fn disarm(mut self) -> Option<Release> {
        self.0.take()
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release.spawn();
        }
    }
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
        let (lease_ms, fence_ms) = (ms(self.ttl), self.fence_ms);
        let armed = Armed(Some(Release {
            redis: self.redis.clone(),
            keys: keys.clone(),
            token: token.clone(),
            ttl: self.ttl,
            runtime: Handle::try_current().ok(),
        }));
        let sent = Instant::now();
        // On an error (or if this future is dropped here) `armed` fires.
        let answer: Result<u64, Error> = {
            let (keys, token) = (keys.clone(), token.clone());
            self.redis
                .call(keys.slot(), |mut conn| async move {
                    ACQUIRE
                        .key(&keys.lease)
                        .key(&keys.fence)
                        .key(&keys.stored_fence)
                        .arg(&token)
                        .arg(lease_ms)
                        .arg(fence_ms)
                        .invoke_async(&mut conn)
                        .await
                })
                .await
        };
        let fence = match answer {
            Ok(fence) => fence,
            // Refused by the open breaker: nothing was sent, nothing to
            // release (and no background task per miss while Redis is down).
            Err(err) if matches!(err.kind(), ErrorKind::BreakerOpen { .. }) => {
                drop(armed.disarm());
                return Err(err);
            }
            Err(err) => return Err(err),
        };
        // Answered: from here on we know whether there is a lease to release.
        let release = armed.disarm();
        if fence == 0 {
            // Lost: the lease is someone else's, nothing of ours to release.
            return Ok(Acquired::Lost(LeaseWait::new(waiter.wait())));
        }
        drop(waiter);
        let watchdog = tokio::spawn(watchdog(self.redis.clone(), keys, token, self.ttl, sent));
        Ok(Acquired::Won(LeaseGuard::new(fence, move || {
            watchdog.abort();
            if let Some(release) = release {
                release.spawn();
            }
        })))
    }
}

/// Renews the lease every third of its length while it is held. A RENEW
/// that fails is retried at short intervals until the lease's expiry as
/// last known (the send time of the last renewal that succeeded, plus the
/// length: Redis ran it no earlier than we sent it); a RENEW answered 0
/// means the lease is gone, and the fence keeps a late fill from
/// overwriting newer data.
async fn watchdog(
    redis: GuardedRedis,
    keys: KeySet,
    token: String,
    ttl: Duration,
    granted: Instant,
) {
    let every = ttl / 3;
    let lease_ms = ms(ttl);
    let mut held_until = granted + ttl;
    let mut next = granted + every;
    loop {
        tokio::time::sleep_until(next).await;
        let sent = Instant::now();
        let renewed = redis
            .call(keys.slot(), |mut conn| {
                let (keys, token) = (&keys, &token);
                async move {
                    RENEW
                        .key(&keys.lease)
                        .arg(token)
                        .arg(lease_ms)
                        .invoke_async::<i64>(&mut conn)
                        .await
                }
            })
            .await;
        match renewed {
            Ok(1) => {
                held_until = sent + ttl;
                next = sent + every;
            }
            Ok(_) => return,
            Err(_) if Instant::now() >= held_until => return,
            Err(_) => next = Instant::now() + retry_every(ttl),
        }
    }
}
