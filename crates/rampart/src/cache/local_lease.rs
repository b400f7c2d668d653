//! An in-process [`Lease`]: what the embedded deployment and tests use, with
//! the same contract as the Redis lease (one holder, a growing fence, losers
//! woken on release, an expiry for a holder that never lets go).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::lease::{Acquired, Lease, LeaseGuard, LeaseWait};
use crate::clock::{Clock, Instant};
use crate::Error;

/// Leases held in this process.
pub struct LocalLease<K> {
    holders: Arc<Mutex<HashMap<K, Holder>>>,
    fences: AtomicU64,
    ttl: Duration,
    clock: Clock,
}

struct Holder {
    fence: u64,
    expires: Instant,
    /// Dropped on release, which wakes every subscribed loser.
    released: watch::Sender<()>,
}

impl<K> LocalLease<K> {
    /// Leases that expire after `ttl` if their holder never lets go.
    pub fn new(ttl: Duration) -> Self {
        Self::with_clock(ttl, Clock::new())
    }

    /// Same, on a given clock.
    pub fn with_clock(ttl: Duration, clock: Clock) -> Self {
        LocalLease {
            holders: Arc::new(Mutex::new(HashMap::new())),
            fences: AtomicU64::new(0),
            ttl,
            clock,
        }
    }
}

#[async_trait]
impl<K> Lease<K> for LocalLease<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    async fn acquire(&self, key: &K) -> Result<Acquired, Error> {
        let now = self.clock.now();
        let mut holders = self.holders.lock();
        if let Some(holder) = holders.get(key) {
            if now < holder.expires {
                // Subscribed under the lock: a release after this point is
                // seen by the receiver.
                let mut released = holder.released.subscribe();
                return Ok(Acquired::Lost(LeaseWait::new(async move {
                    // Err means the sender was dropped: released.
                    let _ = released.changed().await;
                })));
            }
        }
        // Relaxed: the fence only has to grow; the map lock orders grants.
        let fence = self.fences.fetch_add(1, Ordering::Relaxed) + 1;
        let (released, _) = watch::channel(());
        // Replacing an expired holder drops its sender, waking its losers.
        holders.insert(
            key.clone(),
            Holder {
                fence,
                expires: now + self.ttl,
                released,
            },
        );
        drop(holders);
        let holders = Arc::clone(&self.holders);
        let key = key.clone();
        Ok(Acquired::Won(LeaseGuard::new(fence, move || {
            let mut holders = holders.lock();
            // Compare-and-delete: only our own grant, not a successor's.
            if holders.get(&key).is_some_and(|h| h.fence == fence) {
                holders.remove(&key);
            }
        })))
    }
}
