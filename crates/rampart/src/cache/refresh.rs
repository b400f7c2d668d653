//! Batched background refreshes: stale hits queue their key, and one drain
//! task per cache refreshes what has queued with one L2 read and one
//! `load_many`, instead of one task and one source query per key.
//!
//! Why: when a warm set expires together under load (it was warmed
//! together, and jitter only spreads the expiries over a fraction of the
//! TTL), every stale hit started its own refresh; the source then answered
//! thousands of single-key queries a second, and serving lost a third of
//! its throughput to them (issue 15, measured before this: BENCHMARKS.md).
//! The warm-up had already shown that one query for 500 keys costs a small
//! fraction of 500 queries. So refreshes batch the same way.
//!
//! How keys get together: the drain waits [`WINDOW`] before its first take,
//! and takes at most [`MAX_BATCH`] at a time; keys that queue while a batch
//! is loading make the next, larger batch. So a trickle of expiries costs
//! one 2 ms wait per refresh (invisible: the callers were answered stale),
//! and a flood turns into a few big queries, the batch growing with the
//! backlog.
//!
//! The queue is bounded without a bound of its own: a key is queued only by
//! the stale hit that won its entry's refresh claim
//! (`Entry::claim_refresh`), so there is at most one queued refresh per L1
//! entry, and L1 is bounded.

use std::sync::Arc;
use std::time::Duration;

// parking_lot's, as the generation stripes': the cache's own locks are
// outside the loom models (the cache is not built on `crate::sync`).
use parking_lot::Mutex;

use super::entry::Entry;

/// How long a drain waits for more keys before its first batch.
pub(crate) const WINDOW: Duration = Duration::from_millis(2);

/// The most keys refreshed by one `load_many` (the warm-up's batch size).
pub(crate) const MAX_BATCH: usize = 500;

/// The keys waiting for a refresh, and whether a drain task is running.
pub(crate) struct RefreshQueue<K, V> {
    pending: Mutex<Pending<K, V>>,
}

struct Pending<K, V> {
    keys: Vec<(K, Arc<Entry<V>>)>,
    /// True from the push that starts a drain until that drain finds the
    /// queue empty, both under the lock: so a push either sees a drain that
    /// will still take its key, or starts one (no key is left queued with
    /// nobody to take it).
    draining: bool,
    /// Keys of the batch the drain took last and is refreshing (a drain
    /// takes its next batch only after the last one finished).
    loading: usize,
}

impl<K, V> Default for RefreshQueue<K, V> {
    fn default() -> Self {
        RefreshQueue {
            pending: Mutex::new(Pending {
                keys: Vec::new(),
                draining: false,
                loading: 0,
            }),
        }
    }
}

impl<K, V> RefreshQueue<K, V> {
    /// Queues `key`; true when the caller must start a drain.
    pub(crate) fn push(&self, key: K, entry: Arc<Entry<V>>) -> bool {
        let mut pending = self.pending.lock();
        pending.keys.push((key, entry));
        !std::mem::replace(&mut pending.draining, true)
    }

    /// Up to [`MAX_BATCH`] queued keys, oldest first; empty when none are
    /// left, and then the drain that asked is over.
    pub(crate) fn take(&self) -> Vec<(K, Arc<Entry<V>>)> {
        let mut pending = self.pending.lock();
        let n = pending.keys.len().min(MAX_BATCH);
        pending.loading = n;
        if n == 0 {
            pending.draining = false;
            return Vec::new();
        }
        let rest = pending.keys.split_off(n);
        std::mem::replace(&mut pending.keys, rest)
    }

    /// Keys queued or being refreshed right now.
    pub(crate) fn outstanding(&self) -> usize {
        let pending = self.pending.lock();
        pending.keys.len() + pending.loading
    }
}
