//! The in-process session store: one `scc::HashMap` keyed by the token's
//! hash.
//!
//! Why `scc`: the lock lab (`crates/rampart/benches/locks.rs`, figures in
//! BENCHMARKS.md "Sessions") measured it against `dashmap`, `papaya` and the
//! source document's 64 shards of `Mutex<HashMap>` at 90 % reads; it is
//! among the fastest there, and its `update_async` runs a closure under
//! the entry's bucket lock without blocking a tokio worker on a contended
//! lock (it waits asynchronously), which is what a PATCH needs: the merge
//! happens inside that lock, so concurrent patches of one session each
//! see the previous one's result and none is lost.
//!
//! The maximum is a counter reserved before an insert (never exceeded,
//! even by racing creates); past it a create is refused, never a live
//! session evicted. A sweeper task drops expired sessions every
//! `sweep_interval`; between sweeps an expired session is already
//! answered as absent and removed when touched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use rampart::clock::WallClock;

use super::config::SessionsConfig;
use super::store::{self, Data, Session, SessionStore};
use super::token::SessionId;
use crate::error::Error;

/// Sessions in this process.
pub struct MemoryStore {
    map: scc::HashMap<SessionId, Session>,
    /// Live entries (reserved before an insert, released after a remove).
    len: AtomicUsize,
    config: SessionsConfig,
}

impl MemoryStore {
    /// An empty store with `config`'s bounds.
    pub fn new(config: SessionsConfig) -> MemoryStore {
        MemoryStore {
            map: scc::HashMap::new(),
            len: AtomicUsize::new(0),
            config,
        }
    }

    fn live(&self, session: &Session, now: u64) -> bool {
        store::is_live(
            session.created_ms,
            session.last_seen_ms,
            now,
            self.config.idle_ms(),
            self.config.absolute_ms(),
        )
    }

    /// Takes one of the `max_sessions` slots, or refuses.
    fn reserve(&self) -> Result<(), Error> {
        let max = self.config.max_sessions;
        self.len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map(drop)
            .map_err(|_| Error::SessionsFull { max })
    }

    fn release(&self, n: usize) {
        self.len.fetch_sub(n, Ordering::AcqRel);
    }

    /// Removes `id` if it has expired by `now`.
    async fn remove_expired(&self, id: &SessionId, now: u64) {
        if self
            .map
            .remove_if_async(id, |s| !self.live(s, now))
            .await
            .is_some()
        {
            self.release(1);
        }
    }

    /// Drops every session expired by `now`; how many.
    pub async fn sweep(&self, now: u64) -> usize {
        let mut removed = 0;
        self.map
            .retain_async(|_, s| {
                let keep = self.live(s, now);
                removed += usize::from(!keep);
                keep
            })
            .await;
        self.release(removed);
        removed
    }

    /// Sweeps `store` every `sweep_interval` until it is dropped.
    pub fn spawn_sweeper(store: &Arc<MemoryStore>, clock: WallClock) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let every = store.config.sweep_interval;
        let weak: Weak<MemoryStore> = Arc::downgrade(store);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(store) = weak.upgrade() else { return };
                store.sweep(clock.unix_ms()).await;
            }
        });
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, id: SessionId, data: Data, now: u64) -> Result<Session, Error> {
        store::fits(&data, self.config.max_data_bytes)?;
        self.reserve()?;
        let session = Session {
            data,
            created_ms: now,
            last_seen_ms: now,
        };
        match self.map.insert_async(id, session.clone()).await {
            Ok(()) => Ok(session),
            Err(_) => {
                // Two tokens with one SHA-256: not in this universe.
                self.release(1);
                Err(Error::Entropy("session id collision".into()))
            }
        }
    }

    async fn get(&self, id: &SessionId, now: u64) -> Result<Option<Session>, Error> {
        let found = self
            .map
            .update_async(id, |_, s| {
                self.live(s, now).then(|| {
                    s.last_seen_ms = now;
                    s.clone()
                })
            })
            .await;
        match found {
            Some(Some(session)) => Ok(Some(session)),
            Some(None) => {
                self.remove_expired(id, now).await;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn patch(&self, id: &SessionId, patch: Data, now: u64) -> Result<Option<Session>, Error> {
        let max = self.config.max_data_bytes;
        let found = self
            .map
            .update_async(id, |_, s| {
                if !self.live(s, now) {
                    return None;
                }
                // The merge runs under the entry's lock: read, merge and
                // write are one step for every other patch of this session.
                Some(store::merge(&mut s.data, patch, max).map(|()| {
                    s.last_seen_ms = now;
                    s.clone()
                }))
            })
            .await;
        match found {
            Some(Some(merged)) => merged.map(Some),
            Some(None) => {
                self.remove_expired(id, now).await;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn delete(&self, id: &SessionId, now: u64) -> Result<bool, Error> {
        match self.map.remove_async(id).await {
            Some((_, session)) => {
                self.release(1);
                Ok(self.live(&session, now))
            }
            None => Ok(false),
        }
    }

    async fn rotate(
        &self,
        old: &SessionId,
        new: SessionId,
        now: u64,
    ) -> Result<Option<Session>, Error> {
        // Taken out only if live: a racing rotate or delete of the same
        // token finds nothing, so one token never becomes two sessions.
        let Some((_, mut session)) = self.map.remove_if_async(old, |s| self.live(s, now)).await
        else {
            self.remove_expired(old, now).await;
            return Ok(None);
        };
        session.last_seen_ms = now;
        // The slot of the old entry passes to the new one.
        match self.map.insert_async(new, session.clone()).await {
            Ok(()) => Ok(Some(session)),
            Err(_) => {
                self.release(1);
                Err(Error::Entropy("session id collision".into()))
            }
        }
    }

    fn live_sessions(&self) -> Option<usize> {
        Some(self.len.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn config() -> SessionsConfig {
        SessionsConfig {
            idle_timeout: Duration::from_secs(60),
            absolute_timeout: Duration::from_secs(300),
            max_sessions: 3,
            ..SessionsConfig::default()
        }
    }

    fn id(n: u8) -> SessionId {
        SessionId::of(&[n])
    }

    #[tokio::test]
    async fn the_maximum_refuses_new_sessions_and_frees_on_delete_and_sweep() {
        let store = MemoryStore::new(config());
        for n in 0..3 {
            store.create(id(n), Data::new(), 0).await.expect("room");
        }
        let refused = store.create(id(3), Data::new(), 0).await.expect_err("full");
        assert!(matches!(refused, Error::SessionsFull { max: 3 }));
        assert!(store.delete(&id(0), 1).await.expect("delete"));
        store
            .create(id(3), Data::new(), 1)
            .await
            .expect("a slot was freed");
        // All idle past 60 s: the sweep frees every slot.
        assert_eq!(store.sweep(61_001).await, 3);
        assert_eq!(store.live_sessions(), Some(0));
        store
            .create(id(4), Data::new(), 61_001)
            .await
            .expect("room again");
    }

    #[tokio::test]
    async fn rotation_keeps_data_and_creation_and_kills_the_old_id() {
        let store = MemoryStore::new(config());
        let data = json!({ "user": 7 }).as_object().cloned().expect("object");
        store
            .create(id(1), data.clone(), 1_000)
            .await
            .expect("create");
        let moved = store
            .rotate(&id(1), id(2), 2_000)
            .await
            .expect("rotate")
            .expect("live");
        assert_eq!(moved.data, data);
        assert_eq!(moved.created_ms, 1_000);
        assert_eq!(store.get(&id(1), 2_001).await.expect("get"), None);
        assert_eq!(
            store.rotate(&id(1), id(3), 2_002).await.expect("rotate"),
            None
        );
        assert!(store.get(&id(2), 2_003).await.expect("get").is_some());
        assert_eq!(store.live_sessions(), Some(1));
    }
}
