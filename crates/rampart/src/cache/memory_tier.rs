//! An in-process [`Tier`]: the embedded default's L2 and the tests' stand-in
//! for a shared tier, with the same contract as the Redis tier (generations,
//! fences, expiry).

use std::hash::Hash;
use std::sync::Arc;

use async_trait::async_trait;

use super::generation::Generations;
use super::tier::{FillOutcome, Stored, Tier, TierRead};
use crate::clock::{Clock, WallClock};
use crate::Error;

/// A bounded in-memory tier.
pub struct MemoryTier<K, V> {
    entries: quick_cache::sync::Cache<K, Arc<Slot<V>>>,
    generations: Generations,
    wall: WallClock,
}

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

#[async_trait]
impl<K, V> Tier<K, V> for MemoryTier<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    async fn get(&self, key: &K) -> Result<TierRead<V>, Error> {
        let generation = self.generations.current(key);
        let now = self.wall.unix_ms();
        let entry = self
            .entries
            .get(key)
            .filter(|slot| now < slot.stored.error_until_ms)
            .map(|slot| slot.stored.clone());
        Ok(TierRead { entry, generation })
    }

    async fn fill(
        &self,
        key: &K,
        entry: Stored<V>,
        generation: u64,
        fence: u64,
    ) -> Result<FillOutcome, Error> {
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
                Arc::new(Slot {
                    stored: entry,
                    fence: fence.max(held),
                }),
            );
            true
        });
        Ok(match stored {
            Some(true) => FillOutcome::Stored,
            _ => FillOutcome::Refused,
        })
    }

    async fn invalidate(&self, key: &K) -> Result<(), Error> {
        self.generations
            .invalidate(key, || self.entries.remove(key));
        Ok(())
    }
}
