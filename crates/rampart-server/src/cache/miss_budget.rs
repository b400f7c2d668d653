//! The per-client miss budget: the second line against cache penetration
//! (the existence filter is the first). A miss is a request that L1 and
//! the filter could not answer, the kind that can reach the source; each
//! client address may cause `server.misses_per_client` per second (a token
//! bucket of `server.miss_burst`), past which its misses get 429 with
//! `Retry-After` while its hits, which never consult the budget, are still
//! served. Other clients keep their own budgets.
//!
//! The cache does not know who is asking; the accept loop runs each
//! connection inside [`serving`], which sets the client for everything the
//! connection's requests do, and the cache asks the budget (its
//! [`Admission`] hook) only on a miss. Work outside a connection (warm-up,
//! background refreshes) has no client and is not counted.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rampart::cache::Admission;
use rampart::{Error, ErrorKind};

tokio::task_local! {
    static CLIENT: IpAddr;
}

/// Runs `connection` (one client's connection) with `client` as the
/// client its misses are charged to.
pub fn serving<F: Future>(client: IpAddr, connection: F) -> impl Future<Output = F::Output> {
    CLIENT.scope(client, connection)
}

/// Clients tracked per shard before idle ones are dropped; an address
/// dropped starts again with a full bucket (lenient, never wrong the other
/// way: a client is not refused for another's misses).
const CLIENTS_PER_SHARD: usize = 1_024;
const SHARDS: usize = 64;

/// Token buckets per client address.
pub struct MissBudget {
    per_sec: f64,
    burst: f64,
    shards: Box<[Mutex<HashMap<IpAddr, Bucket>>]>,
    hasher: RandomState,
    refused: AtomicU64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl MissBudget {
    /// `per_sec` misses a second per client, bursts of `burst`.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        MissBudget {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            refused: AtomicU64::new(0),
        }
    }

    /// Misses refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Charges `misses` to `client` at `now`.
    fn charge(&self, client: IpAddr, misses: u32, now: Instant) -> Result<(), Duration> {
        let shard = &self.shards[self.hasher.hash_one(client) as usize % SHARDS];
        let mut clients = lock(shard);
        if clients.len() >= CLIENTS_PER_SHARD && !clients.contains_key(&client) {
            // Forget clients whose bucket has refilled: they were idle.
            let full_after = Duration::from_secs_f64(self.burst / self.per_sec);
            clients.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
            if clients.len() >= CLIENTS_PER_SHARD {
                clients.clear();
            }
        }
        let bucket = clients.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.at = now;
        let wanted = f64::from(misses);
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            return Ok(());
        }
        let short = wanted.min(self.burst) - bucket.tokens;
        Err(Duration::from_secs_f64(short / self.per_sec))
    }
}

/// The shard's map even if a panic poisoned it: the map holds counters
/// only, always whole between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Admission for MissBudget {
    fn admit(&self, misses: u32) -> Result<(), Error> {
        let Ok(client) = CLIENT.try_with(|client| *client) else {
            return Ok(());
        };
        self.charge(client, misses, Instant::now()).map_err(|wait| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            // Whole seconds for `Retry-After`, at least one.
            let retry_after = Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64);
            ErrorKind::Throttled { retry_after }.into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_client_past_its_budget_is_refused_and_others_are_not() {
        let budget = MissBudget::new(10, 10);
        let now = Instant::now();
        for _ in 0..10 {
            budget.charge(ip(1), 1, now).unwrap();
        }
        let wait = budget.charge(ip(1), 1, now).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Another client is untouched by the first one's misses.
        budget.charge(ip(2), 1, now).unwrap();
        // The bucket refills at the rate: 100 ms is one miss.
        budget
            .charge(ip(1), 1, now + Duration::from_millis(100))
            .unwrap();
        budget
            .charge(ip(1), 1, now + Duration::from_millis(100))
            .unwrap_err();
    }

    #[test]
    fn a_batch_larger_than_the_burst_waits_for_a_full_bucket() {
        let budget = MissBudget::new(10, 5);
        let now = Instant::now();
        budget.charge(ip(1), 5, now).unwrap();
        let wait = budget.charge(ip(1), 50, now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
    }

    #[test]
    fn many_clients_stay_bounded() {
        let budget = MissBudget::new(1, 1);
        let now = Instant::now();
        for i in 0..200_000u32 {
            let _ = budget.charge(IpAddr::from(i.to_be_bytes()), 1, now);
        }
        let tracked: usize = budget.shards.iter().map(|s| lock(s).len()).sum();
        assert!(tracked <= SHARDS * CLIENTS_PER_SHARD);
    }

    #[tokio::test]
    async fn only_calls_inside_a_connection_are_charged() {
        let budget = MissBudget::new(1, 1);
        for _ in 0..5 {
            budget.admit(1).unwrap();
        }
        serving(ip(1), async {
            budget.admit(1).unwrap();
            let err = budget.admit(1).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::Throttled { retry_after } if retry_after.as_secs() == 1));
        })
        .await;
        assert_eq!(budget.refused(), 1);
    }
}
