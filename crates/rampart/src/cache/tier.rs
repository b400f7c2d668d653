//! The shared second tier (L2): in process now, Redis in `rampart-redis`.

use async_trait::async_trait;

use crate::Error;

/// An entry as a shared tier stores it. Times are wall-clock Unix
/// milliseconds because several processes read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored<V> {
    /// The value, or `None` for "the key does not exist".
    pub value: Option<V>,
    /// When the value was read from the source.
    pub loaded_at_ms: u64,
    /// Served as fresh until then.
    pub fresh_until_ms: u64,
    /// Served stale (with a background refresh) until then.
    pub grace_until_ms: u64,
    /// Served only when the source fails, until then; the tier may drop the
    /// entry after it.
    pub error_until_ms: u64,
    /// How long the load took, in microseconds (for early refresh).
    pub load_micros: u64,
}

/// What a read of one key found.
#[derive(Debug, Clone)]
pub struct TierRead<V> {
    /// The stored entry, if any.
    pub entry: Option<Stored<V>>,
    /// The key's generation when read. A fill must present it; an
    /// invalidation in between moves it and the fill is refused.
    pub generation: u64,
}

/// Whether a fill was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillOutcome {
    /// Stored.
    Stored,
    /// Refused: the key was invalidated since the generation was read, or a
    /// fill with a newer fence is already stored.
    Refused,
}

/// A cache tier shared by every process of a deployment.
#[async_trait]
pub trait Tier<K, V>: Send + Sync + 'static
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Reads one key and its generation.
    async fn get(&self, key: &K) -> Result<TierRead<V>, Error>;

    /// Reads many keys; the answer is in the order of `keys`. The default
    /// reads them one by one; real tiers pipeline.
    async fn get_many(&self, keys: &[K]) -> Result<Vec<TierRead<V>>, Error> {
        let mut reads = Vec::with_capacity(keys.len());
        for key in keys {
            reads.push(self.get(key).await?);
        }
        Ok(reads)
    }

    /// Stores `entry` unless the key's generation is no longer `generation`
    /// or an entry with a higher `fence` is stored.
    async fn fill(
        &self,
        key: &K,
        entry: Stored<V>,
        generation: u64,
        fence: u64,
    ) -> Result<FillOutcome, Error>;

    /// Many fills of `(key, entry, generation, fence)`, each as
    /// [`fill`](Self::fill); the outcomes are in the same order. The
    /// default fills one by one; real tiers pipeline.
    async fn fill_many(
        &self,
        fills: Vec<(K, Stored<V>, u64, u64)>,
    ) -> Result<Vec<FillOutcome>, Error> {
        let mut outcomes = Vec::with_capacity(fills.len());
        for (key, entry, generation, fence) in fills {
            outcomes.push(self.fill(&key, entry, generation, fence).await?);
        }
        Ok(outcomes)
    }

    /// Bumps the key's generation, then deletes its entry.
    async fn invalidate(&self, key: &K) -> Result<(), Error>;
}
