//! `Snapshot<T>`: a versioned, immutable value that readers load without a
//! lock and writers replace whole, never with an older version.
//!
//! What it is for: configuration that many request threads read on every
//! call and a rare writer swaps (a config center's namespaces, a service's
//! own settings). A read is one `arc-swap` load (a few uncontended
//! instructions, no shared reference count touched, no lock); a store
//! takes a writers-only mutex, compares versions and swaps the pointer, so
//! two writers racing with versions 7 and 8 always leave 8, whatever the
//! order they arrive in (a plain swap would let the late 7 win: the loom
//! model in `tests/loom_snapshot.rs` fails without the check).
//!
//! A reader on the hottest path keeps its own [`Snapshot::reader`]: it
//! holds the version it last saw and only checks that the pointer has not
//! moved, so a read writes nothing shared at all (measured 10× a bare
//! `RwLock<HashMap>` read with two readers side by side, BENCHMARKS.md).
//!
//! Subscribers ([`Snapshot::subscribe`]) are told of each new version
//! through a `tokio::sync::watch` channel: a parked subscriber is a waker
//! in the channel's list, no task spins, and a burst of stores wakes it
//! once, to the newest (versions in between are skipped, never reordered).
//!
//! ```
//! use rampart::snapshot::Snapshot;
//!
//! let settings = Snapshot::new(1, "ttl=5s".to_owned());
//! assert!(settings.store(2, "ttl=10s".to_owned()).is_ok());
//! // An older (or equal) version is refused; the current one stays.
//! let refused = settings.store(1, "ttl=1s".to_owned()).unwrap_err();
//! assert_eq!(refused.current, 2);
//! assert_eq!(settings.load().version(), 2);
//! assert_eq!(settings.load().value(), "ttl=10s");
//! ```

use std::fmt;
use std::ops::Deref;

use crate::sync::{Arc, ArcCell, Mutex};

/// One version of a [`Snapshot`]'s value: immutable once published.
#[derive(Debug)]
pub struct Versioned<T> {
    version: u64,
    value: T,
}

impl<T> Versioned<T> {
    /// The version this value was stored with.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The value.
    pub fn value(&self) -> &T {
        &self.value
    }
}

impl<T> Deref for Versioned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// A store refused because its version was not newer than the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("version {refused} is not newer than the current version {current}")]
pub struct Stale {
    /// The version that was offered.
    pub refused: u64,
    /// The version that stays current.
    pub current: u64,
}

/// A versioned value swapped atomically; clones share it.
pub struct Snapshot<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    current: ArcCell<Versioned<T>>,
    /// Serialises writers only: the version check and the swap must be one
    /// step, or a slower writer with an older version could land last.
    /// Readers never take it.
    write: Mutex<()>,
    /// The newest published version, for subscribers.
    #[cfg(not(rampart_loom))]
    notify: tokio::sync::watch::Sender<u64>,
}

impl<T> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Snapshot {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("current", &*self.load())
            .finish()
    }
}

/// What [`Snapshot::load`] returns: the current version, kept alive while
/// held (a later store does not free it).
#[cfg(not(rampart_loom))]
pub type Loaded<T> = arc_swap::Guard<std::sync::Arc<Versioned<T>>>;
/// What [`Snapshot::load`] returns under loom.
#[cfg(rampart_loom)]
pub type Loaded<T> = Arc<Versioned<T>>;

impl<T> Snapshot<T> {
    /// A snapshot holding `value` at `version`.
    pub fn new(version: u64, value: T) -> Self {
        Snapshot {
            inner: Arc::new(Inner {
                current: ArcCell::new(Arc::new(Versioned { version, value })),
                write: Mutex::new(()),
                #[cfg(not(rampart_loom))]
                notify: tokio::sync::watch::Sender::new(version),
            }),
        }
    }

    /// The current version and value: one load, no lock. Hold it only for
    /// the read (it pins that version's memory); [`Snapshot::load_full`]
    /// is the owned form to keep.
    #[inline]
    pub fn load(&self) -> Loaded<T> {
        self.inner.current.load()
    }

    /// The current version.
    #[inline]
    pub fn version(&self) -> u64 {
        self.load().version
    }

    /// Publishes `value` as `version` if it is newer than the current one;
    /// otherwise nothing changes and the current version is returned in
    /// the error. Subscribers are told of a published version.
    pub fn store(&self, version: u64, value: T) -> Result<(), Stale> {
        self.store_with(version, |_| value)
    }

    /// Like [`Snapshot::store`], with the new value made from the current
    /// one under the writers' lock (called only if `version` is newer).
    pub fn store_with(&self, version: u64, make: impl FnOnce(&T) -> T) -> Result<(), Stale> {
        let _writer = self.inner.write.lock();
        let current = self.inner.current.load();
        if version <= current.version {
            return Err(Stale {
                refused: version,
                current: current.version,
            });
        }
        let value = make(&current.value);
        drop(current);
        self.inner
            .current
            .store(Arc::new(Versioned { version, value }));
        // Still under the writers' lock: subscribers see versions in the
        // order they were published.
        #[cfg(not(rampart_loom))]
        self.inner.notify.send_replace(version);
        Ok(())
    }

    /// A subscriber told of every version published after this call.
    #[cfg(not(rampart_loom))]
    pub fn subscribe(&self) -> Subscriber<T> {
        Subscriber {
            snapshot: self.clone(),
            changes: self.inner.notify.subscribe(),
        }
    }

    /// How many subscribers are alive.
    #[cfg(not(rampart_loom))]
    pub fn subscribers(&self) -> usize {
        self.inner.notify.receiver_count()
    }
}

#[cfg(not(rampart_loom))]
impl<T> Snapshot<T> {
    /// The current version, owned (one reference count increment).
    pub fn load_full(&self) -> std::sync::Arc<Versioned<T>> {
        arc_swap::Guard::into_inner(self.load())
    }
}

#[cfg(not(rampart_loom))]
impl<T> Snapshot<T> {
    /// A reader's own handle for the hottest read paths (see
    /// [`SnapshotReader`]).
    pub fn reader(&self) -> SnapshotReader<T> {
        SnapshotReader {
            cache: arc_swap::Cache::new(Current(Arc::clone(&self.inner))),
        }
    }
}

/// One reader's handle on a [`Snapshot`]: it keeps the version it last
/// read, and each [`load`](Self::load) only checks that the snapshot has
/// not moved on — one atomic load of a word all readers share read-only —
/// reloading when it has.
///
/// Why beside [`Snapshot::load`]: that load is lock-free but still writes
/// (arc-swap's per-thread debt slot, a fence) to protect the guard it
/// returns; this handle owns its `Arc`, so a read writes nothing shared and
/// costs about a pointer compare. The price: one handle per thread or task
/// (`load` takes `&mut self`), and the version it holds stays alive until
/// its next `load` sees a newer one — fine for configuration, wrong for
/// large values swapped often and read rarely.
#[cfg(not(rampart_loom))]
pub struct SnapshotReader<T> {
    cache: arc_swap::Cache<Current<T>, std::sync::Arc<Versioned<T>>>,
}

#[cfg(not(rampart_loom))]
impl<T> SnapshotReader<T> {
    /// The current version and value.
    #[inline]
    pub fn load(&mut self) -> &std::sync::Arc<Versioned<T>> {
        self.cache.load()
    }
}

/// The snapshot's `ArcSwap`, owned through the snapshot's `Arc` (what
/// `arc_swap::Cache` needs: something that derefs to it).
#[cfg(not(rampart_loom))]
struct Current<T>(Arc<Inner<T>>);

#[cfg(not(rampart_loom))]
impl<T> Deref for Current<T> {
    type Target = arc_swap::ArcSwap<Versioned<T>>;

    fn deref(&self) -> &Self::Target {
        self.0.current.arc_swap()
    }
}

/// Waits for a [`Snapshot`]'s new versions. Parked, it is one waker in the
/// snapshot's channel: no task, no polling.
#[cfg(not(rampart_loom))]
pub struct Subscriber<T> {
    snapshot: Snapshot<T>,
    changes: tokio::sync::watch::Receiver<u64>,
}

#[cfg(not(rampart_loom))]
impl<T> Subscriber<T> {
    /// Waits until a version newer than the last one this subscriber saw
    /// is published, and returns the current one (a burst of stores is
    /// seen once, as its newest version).
    pub async fn changed(&mut self) -> std::sync::Arc<Versioned<T>> {
        // The sender lives in the snapshot this subscriber holds, so the
        // channel cannot close while we wait.
        let _ = self.changes.changed().await;
        self.snapshot.load_full()
    }

    /// The snapshot this subscriber follows.
    pub fn snapshot(&self) -> &Snapshot<T> {
        &self.snapshot
    }
}
