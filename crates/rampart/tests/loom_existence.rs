//! Loom model of the existence filter's rebuild hand-over.
//!
//! Run with:
//! `RUSTFLAGS="--cfg rampart_loom" cargo test --release -p rampart --test loom_existence`
//!
//! One thread creates a row and then inserts its key (a write through the
//! cache); the other rebuilds the filter from the rows it can see. Whatever
//! the interleaving, the key is in the filter once the insert returned, and
//! still after the rebuild finished. The naive hand-over (build a new
//! filter from the rows, swap it in; inserts go only to the filter in use)
//! fails this model: the rows are read before the row exists, the insert
//! lands in the old filter, and the swap drops it (checked: with the
//! insert into the filter being built removed, the first model fails).
//! What loom explores is the hand-over (the state cell, the order of the
//! insert against the rebuild's steps); the filters' bits are `fastbloom`'s
//! own atomics, outside the model.
#![cfg(rampart_loom)]

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;
use rampart::existence::{ExistenceFilter, FilterSize};

const SIZE: FilterSize = FilterSize {
    capacity: 4,
    false_positive_rate: 0.01,
};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn an_insert_during_a_rebuild_survives_the_hand_over() {
    model(|| {
        let filter = ExistenceFilter::from_keys(SIZE, [1u64]).expect("valid size");
        let row_exists = Arc::new(AtomicBool::new(false));
        let writer = {
            let (filter, row_exists) = (filter.clone(), row_exists.clone());
            thread::spawn(move || {
                row_exists.store(true, Ordering::SeqCst);
                filter.insert(&2u64);
                assert!(filter.may_contain(&2u64), "rejected right after its insert");
            })
        };
        let rebuild = filter.begin_rebuild(SIZE).expect("no other rebuild");
        // The key list, read after the rebuild began.
        rebuild.insert(&1u64);
        if row_exists.load(Ordering::SeqCst) {
            rebuild.insert(&2u64);
        }
        rebuild.finish();
        writer.join().expect("writer");
        assert!(filter.may_contain(&1u64));
        assert!(
            filter.may_contain(&2u64),
            "the rebuild lost a key inserted during it"
        );
    });
}

#[test]
fn an_insert_racing_an_abandoned_rebuild_is_kept() {
    model(|| {
        let filter = ExistenceFilter::from_keys(SIZE, [1u64]).expect("valid size");
        let writer = {
            let filter = filter.clone();
            thread::spawn(move || filter.insert(&2u64))
        };
        let rebuild = filter.begin_rebuild(SIZE).expect("no other rebuild");
        drop(rebuild);
        writer.join().expect("writer");
        assert!(filter.may_contain(&1u64) && filter.may_contain(&2u64));
        assert!(!filter.stats().rebuilding);
    });
}
