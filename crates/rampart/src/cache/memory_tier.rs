//! An in-process [`Tier`]: the embedded default's L2 and the tests' stand-in
//! for a shared tier, with the same contract as the Redis tier (generations,
//! fences, expiry).

use std::hash::Hash;

use async_trait::async_trait;

use super::generation::Generations;
use super::tier::{FillOutcome, Stored, Tier, TierRead};
use crate::clock::{Clock, WallClock};
use crate::Error;

/// A bounded in-memory tier.
///
/// Entries are kept inline in the map's slots, not behind an `Arc` each:
/// a read clones the slot (the value is a reference-counted `Bytes` on the
/// server, so no copy of the row), and a million entries save a million
/// allocations (measured: BENCHMARKS.md, memory per cached key).
pub struct MemoryTier<K, V> {
    entries: quick_cache::sync::Cache<K, Slot<V>>,
    generations: Generations,
    wall: WallClock,
}

#[derive(Clone)]
struct Slot<V> {
    stored: Stored<V>,
    fence: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> MemoryTier<K, V> {
    /// A tier holding about `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self::with_clock(capacity, Clock::new())
    }

    /// Same, on a given clock (entries expire by it).
    pub fn with_clock(capacity: usize, clock: Clock) -> Self {
        MemoryTier {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            generations: Generations::default(),
            wall: WallClock::new(clock),
        }
    }

    /// Entries held now (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> MemoryTier<K, V> {
    /// One key's read at wall-clock `now_ms`.
    fn read(&self, key: &K, now_ms: u64) -> TierRead<V> {
        let generation = self.generations.current(key);
        let entry = self
            .entries
            .get(key)
            .filter(|slot| now_ms < slot.stored.error_until_ms)
            .map(|slot| slot.stored.clone());
        TierRead { entry, generation }
    }

    /// One fill, as [`Tier::fill`].
    fn store(&self, key: &K, entry: Stored<V>, generation: u64, fence: u64) -> FillOutcome {
        let stored = self.generations.fill_if_current(key, generation, || {
            // As the Redis tier's FILL: fence 0 is an unfenced batch fill
            // (no lease), judged by the generation alone; it keeps the
            // stored fence so an older lease's late fill is still refused.
            let held = self.entries.get(key).map_or(0, |slot| slot.fence);
            if fence > 0 && held > fence {
                return false;
            }
            self.entries.insert(
                key.clone(),
                Slot {
                    stored: entry,
                    fence: fence.max(held),
                },
            );
            true
        });
        match stored {
            Some(true) => FillOutcome::Stored,
            _ => FillOutcome::Refused,
        }
    }
}

#[async_trait]
impl<K, V> Tier<K, V> for MemoryTier<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    async fn get(&self, key: &K) -> Result<TierRead<V>, Error> {
        Ok(self.read(key, self.wall.unix_ms()))
    }

    /// One pass, no future per key: the warm-up reads 500 keys a batch,
    /// where the trait's default builds one boxed `get` future each.
    async fn get_many(&self, keys: &[K]) -> Result<Vec<TierRead<V>>, Error> {
        let now = self.wall.unix_ms();
        Ok(keys.iter().map(|key| self.read(key, now)).collect())
    }

    async fn fill(
        &self,
        key: &K,
        entry: Stored<V>,
        generation: u64,
        fence: u64,
    ) -> Result<FillOutcome, Error> {
        Ok(self.store(key, entry, generation, fence))
    }

    /// As `get_many`: one pass, no future per fill.
    async fn fill_many(
        &self,
        fills: Vec<(K, Stored<V>, u64, u64)>,
    ) -> Result<Vec<FillOutcome>, Error> {
        Ok(fills
            .into_iter()
            .map(|(key, entry, generation, fence)| self.store(&key, entry, generation, fence))
            .collect())
    }

    async fn invalidate(&self, key: &K) -> Result<(), Error> {
        self.generations
            .invalidate(key, || self.entries.remove(key));
        Ok(())
    }
}
