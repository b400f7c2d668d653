//! Per-key generations in bounded memory, for refusing stale sets.
//!
//! A generation per key would grow without bound, so keys share one of a
//! fixed number of striped counters. Two keys on one stripe only means an
//! invalidation of one also refuses an in-flight fill of the other: a wasted
//! fill, never a stale one.
//!
//! Why a mutex per stripe rather than an atomic: "check the generation, then
//! insert" must be one step with respect to "bump, then delete", or a fill
//! could check, lose the CPU to an invalidation, and insert stale data after
//! the delete. Holding the stripe's lock across the insert closes that gap;
//! it is only taken on fills and invalidations, never on hits.

use std::hash::{BuildHasher, Hash, RandomState};

use parking_lot::Mutex;

const STRIPES: usize = 1024;

pub(crate) struct Generations {
    stripes: Box<[Mutex<u64>]>,
    hasher: RandomState,
}

impl Default for Generations {
    fn default() -> Self {
        Generations {
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Generations {
    fn index<K: Hash>(&self, key: &K) -> usize {
        // The modulo keeps the index in range whatever the hash.
        (self.hasher.hash_one(key) % STRIPES as u64) as usize
    }

    fn stripe<K: Hash>(&self, key: &K) -> &Mutex<u64> {
        &self.stripes[self.index(key)]
    }

    /// The key's generation now; read before loading.
    pub(crate) fn current<K: Hash>(&self, key: &K) -> u64 {
        *crate::contention::lock_timed(self.stripe(key), &crate::contention::GENERATIONS)
    }

    /// Runs `fill` only if the key's generation is still `expected`, with the
    /// stripe held so no invalidation can slip in between.
    pub(crate) fn fill_if_current<K: Hash, R>(
        &self,
        key: &K,
        expected: u64,
        fill: impl FnOnce() -> R,
    ) -> Option<R> {
        self.fill_at(self.index(key), expected, fill)
    }

    /// Runs `fill` with stripe `index` held, if its generation is `expected`.
    fn fill_at<R>(&self, index: usize, expected: u64, fill: impl FnOnce() -> R) -> Option<R> {
        let generation =
            crate::contention::lock_timed(&self.stripes[index], &crate::contention::GENERATIONS);
        (*generation == expected).then(fill)
    }

    /// Every stripe's generation now, for fills of rows read after this
    /// moment by a path that did not read each key's generation first (a
    /// warm-up scan that learns its keys from the rows themselves).
    pub(crate) fn snapshot(&self) -> Box<[u64]> {
        self.stripes
            .iter()
            .map(|stripe| *crate::contention::lock_timed(stripe, &crate::contention::GENERATIONS))
            .collect()
    }

    /// [`Self::fill_if_current`] against a [`Self::snapshot`]: runs `fill`
    /// only if the key's stripe has not moved since the snapshot.
    pub(crate) fn fill_if_unchanged_since<K: Hash, R>(
        &self,
        key: &K,
        snapshot: &[u64],
        fill: impl FnOnce() -> R,
    ) -> Option<R> {
        let index = self.index(key);
        self.fill_at(index, *snapshot.get(index)?, fill)
    }

    /// Moves every generation on, then runs `delete_all`, with every stripe
    /// held (taken in index order, so two of these cannot deadlock; fills
    /// and invalidations hold one stripe at a time).
    pub(crate) fn invalidate_all<R>(&self, delete_all: impl FnOnce() -> R) -> R {
        let mut held: Vec<_> = self.stripes.iter().map(|s| s.lock()).collect();
        for generation in &mut held {
            **generation = generation.wrapping_add(1);
        }
        delete_all()
    }

    /// Moves the key's generation on, then runs `delete`, with the stripe
    /// held.
    pub(crate) fn invalidate<K: Hash, R>(&self, key: &K, delete: impl FnOnce() -> R) -> R {
        let mut generation =
            crate::contention::lock_timed(self.stripe(key), &crate::contention::GENERATIONS);
        *generation = generation.wrapping_add(1);
        delete()
    }
}
