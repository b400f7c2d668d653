//! A lock-free front for a labelled metric's children on the request path.
//!
//! `with_label_values` hashes every label, takes the vector's read lock and
//! clones the child (an `Arc`): several atomic writes on cache lines every
//! core shares, per request. The labels the request path uses (route
//! templates, statuses, resources, `x-cache` values, error codes) are small
//! closed sets, so each is looked up once and kept here; after that a
//! lookup is a short scan of slots read with plain acquire loads, which
//! leave the shared lines in every core's cache.
//!
//! Children are created on first use, never ahead: a child is exported (at
//! zero) as soon as it exists, and series for answers never given would
//! only bloat `/metrics`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Up to `N` children of one metric (or nested sets of them), by label
/// value. Past `N` distinct labels, [`Children::get_or_insert`] answers
/// `None` and the caller takes the slow path; the bound is what keeps the
/// scan short.
pub struct Children<M, const N: usize> {
    slots: [OnceLock<(Box<str>, M)>; N],
    /// Slots claimed so far; a claimed slot may be set a moment later.
    used: AtomicUsize,
    /// Serialises inserts, so a label is stored once; lookups never take it.
    insert: Mutex<()>,
}

impl<M, const N: usize> Default for Children<M, N> {
    fn default() -> Self {
        Children {
            slots: std::array::from_fn(|_| OnceLock::new()),
            used: AtomicUsize::new(0),
            insert: Mutex::new(()),
        }
    }
}

impl<M, const N: usize> Children<M, N> {
    /// The entry for `label`, made by `make` the first time it is asked
    /// for; `None` once `N` labels are stored and `label` is not one.
    pub fn get_or_insert(&self, label: &str, make: impl FnOnce() -> M) -> Option<&M> {
        let index = self.index_of(label, make)?;
        self.at(index).map(|(_, entry)| entry)
    }

    /// Where `label`'s entry is (made by `make` the first time), for
    /// callers that must hold on to it across an `await` without a borrow;
    /// `None` once `N` labels are stored and `label` is not one.
    pub fn index_of(&self, label: &str, make: impl FnOnce() -> M) -> Option<usize> {
        if let Some(found) = self.find(label) {
            return Some(found);
        }
        // A poisoned lock only means another insert panicked (in `make`);
        // the slots themselves are always consistent.
        let _guard = self.insert.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = self.find(label) {
            return Some(found);
        }
        let index = self.used.load(Ordering::Relaxed);
        self.slots
            .get(index)?
            .get_or_init(|| (label.into(), make()));
        // Release: a reader that sees the count sees the slot set.
        self.used.store(index + 1, Ordering::Release);
        Some(index)
    }

    /// The label and entry at `index` (from [`Children::index_of`]).
    pub fn at(&self, index: usize) -> Option<(&str, &M)> {
        self.slots
            .get(index)
            .and_then(OnceLock::get)
            .map(|(label, entry)| (&**label, entry))
    }

    fn find(&self, label: &str) -> Option<usize> {
        let used = self.used.load(Ordering::Acquire).min(N);
        self.slots[..used]
            .iter()
            .position(|slot| slot.get().is_some_and(|(stored, _)| **stored == *label))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_label_is_made_once_and_the_bound_holds() {
        let children: Children<String, 2> = Children::default();
        let made = std::cell::Cell::new(0);
        let make = |v: &str| {
            made.set(made.get() + 1);
            v.to_owned()
        };
        assert_eq!(
            children
                .get_or_insert("a", || make("A"))
                .map(String::as_str),
            Some("A")
        );
        assert_eq!(
            children
                .get_or_insert("a", || make("A2"))
                .map(String::as_str),
            Some("A")
        );
        assert_eq!(
            children
                .get_or_insert("b", || make("B"))
                .map(String::as_str),
            Some("B")
        );
        assert_eq!(made.get(), 2);
        assert!(children.get_or_insert("c", || make("C")).is_none(), "full");
        assert_eq!(
            children
                .get_or_insert("b", || make("B2"))
                .map(String::as_str),
            Some("B")
        );
    }

    #[test]
    fn concurrent_first_uses_store_a_label_once() {
        let children: Children<usize, 8> = Children::default();
        std::thread::scope(|s| {
            for t in 0..4 {
                let children = &children;
                s.spawn(move || {
                    for label in ["x", "y", "z"] {
                        children.get_or_insert(label, || t);
                    }
                });
            }
        });
        assert_eq!(children.used.load(Ordering::Relaxed), 3);
    }
}
