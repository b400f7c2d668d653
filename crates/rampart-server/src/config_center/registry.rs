//! The namespaces as this instance serves them: one `rampart::snapshot::
//! Snapshot` each, so a read is a lock-free load and no instance ever
//! serves an older revision than it served before (the snapshot refuses
//! it). Watchers park on a snapshot's subscription (one waker each, no
//! task, no polling) and read what they answer from memory, never from
//! the database: a change wakes every watcher without a query each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use rampart::snapshot::Snapshot;
use tokio::sync::watch;

use super::model::NsState;
use crate::error::Error;

/// Every namespace served, by name.
pub struct Registry {
    /// Written only when a namespace appears (rare); read per request for
    /// the lookup, then the namespace's own snapshot is loaded lock-free.
    namespaces: RwLock<HashMap<String, Snapshot<NsState>>>,
    /// Bumped when a namespace appears, for watchers of names not yet created.
    created: watch::Sender<u64>,
    watchers: AtomicUsize,
    max_watchers: usize,
    /// Watch requests waiting for a change now (`rampart_config_watchers_parked`).
    parked: AtomicUsize,
}

/// One request on a watch route, counted until dropped.
pub struct WatchSlot<'a>(&'a Registry);

impl Drop for WatchSlot<'_> {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One watch request waiting for a change, counted until dropped.
pub struct Parked<'a>(&'a Registry);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Registry {
    /// An empty registry allowing `max_watchers` watch requests at once.
    pub fn new(max_watchers: usize) -> Registry {
        Registry {
            namespaces: RwLock::new(HashMap::new()),
            created: watch::Sender::new(0),
            watchers: AtomicUsize::new(0),
            max_watchers,
            parked: AtomicUsize::new(0),
        }
    }

    /// The namespace `name`, if served.
    pub fn get(&self, name: &str) -> Option<Snapshot<NsState>> {
        self.namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every namespace served, sorted by name.
    pub fn all(&self) -> Vec<Snapshot<NsState>> {
        let map = self
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = map.values().cloned().collect();
        drop(map);
        all.sort_by(|a, b| a.load().name.cmp(&b.load().name));
        all
    }

    /// The revision served for `name` (0 if not served).
    pub fn revision(&self, name: &str) -> u64 {
        self.get(name).map_or(0, |s| s.version())
    }

    /// Serves `state` if it is newer than what is served (its revision
    /// above the served one); an older one is dropped. Whether it was taken.
    pub fn publish(&self, state: NsState) -> bool {
        if let Some(snapshot) = self.get(&state.name) {
            return snapshot.store(state.revision, state).is_ok();
        }
        let mut map = self
            .namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get(&state.name) {
            // Created by a racing publish between the read and the write lock.
            Some(snapshot) => snapshot.store(state.revision, state).is_ok(),
            None => {
                map.insert(state.name.clone(), Snapshot::new(state.revision, state));
                drop(map);
                self.created.send_modify(|n| *n += 1);
                true
            }
        }
    }

    /// Told when a namespace appears.
    pub fn created(&self) -> watch::Receiver<u64> {
        self.created.subscribe()
    }

    /// A slot for one watch request, or 503 `overloaded` past `max_watchers`.
    pub fn enter_watch(&self) -> Result<WatchSlot<'_>, Error> {
        let before = self.watchers.fetch_add(1, Ordering::Relaxed);
        if before >= self.max_watchers {
            self.watchers.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::Overloaded);
        }
        Ok(WatchSlot(self))
    }

    /// Watch requests being served or held now.
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Counts a watch request as parked until the guard is dropped (held
    /// across the wait only, so a request being parsed or answered is not
    /// counted).
    pub fn park(&self) -> Parked<'_> {
        self.parked.fetch_add(1, Ordering::Relaxed);
        Parked(self)
    }

    /// Watch requests waiting for a change now.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }
}
