//! The synchronisation primitives the lock-holding guards are built on,
//! swapped for loom's model-checked versions under `--cfg rampart_loom` so
//! the same code is what the loom models explore.

#[cfg(not(rampart_loom))]
pub(crate) use std::sync::Arc;

#[cfg(rampart_loom)]
pub(crate) use loom::sync::Arc;

/// A mutex without poisoning. Guards never run user code while holding one,
/// so a poisoned lock can only mean a bug in the guard itself; recovering
/// the data is then no worse than the alternative of panicking every caller.
#[cfg(not(rampart_loom))]
pub(crate) use parking_lot::Mutex;

#[cfg(rampart_loom)]
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(rampart_loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Atomics: loom's under `--cfg rampart_loom`, so models see every
/// interleaving of the lock-free paths too (the breaker's state word).
pub(crate) mod atomic {
    #[cfg(rampart_loom)]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    #[cfg(not(rampart_loom))]
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
}

/// A shared `Arc` that readers load without a lock and a writer replaces
/// whole: `arc-swap` (a load is a few uncontended instructions, no shared
/// reference count touched), loom's mutex under `--cfg rampart_loom` so the
/// models see every order of loads and stores.
#[cfg(not(rampart_loom))]
pub(crate) struct ArcCell<T>(arc_swap::ArcSwap<T>);

#[cfg(not(rampart_loom))]
impl<T> ArcCell<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        ArcCell(arc_swap::ArcSwap::new(value))
    }

    #[inline]
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.0.load()
    }

    pub(crate) fn store(&self, value: Arc<T>) {
        self.0.store(value);
    }

    /// The `ArcSwap` itself, for `arc_swap::Cache` (a reader's own cached
    /// copy, revalidated by one pointer load).
    pub(crate) fn arc_swap(&self) -> &arc_swap::ArcSwap<T> {
        &self.0
    }
}

#[cfg(rampart_loom)]
pub(crate) struct ArcCell<T>(Mutex<Arc<T>>);

#[cfg(rampart_loom)]
impl<T> ArcCell<T> {
    pub(crate) fn new(value: Arc<T>) -> Self {
        ArcCell(Mutex::new(value))
    }

    pub(crate) fn load(&self) -> Arc<T> {
        Arc::clone(&self.0.lock())
    }

    pub(crate) fn store(&self, value: Arc<T>) {
        *self.0.lock() = value;
    }
}
