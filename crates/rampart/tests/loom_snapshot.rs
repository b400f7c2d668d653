//! Loom model of `Snapshot::store`'s version check.
//!
//! Run with:
//! `RUSTFLAGS="--cfg rampart_loom" cargo test --release -p rampart --test loom_snapshot`
//!
//! Two writers publish versions 1 and 2 concurrently while a reader loads
//! twice. Whatever the interleaving, the reader never sees a version go
//! backwards and version 2 is current at the end. Without the check (a
//! plain swap, checked by replacing `store`'s comparison with `false`),
//! the interleaving "2 stored, then 1 stored" leaves version 1 current and
//! the model fails.
#![cfg(rampart_loom)]

use loom::sync::Arc;
use loom::thread;
use rampart::snapshot::Snapshot;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn racing_writers_never_leave_an_older_version_current() {
    model(|| {
        let snapshot = Arc::new(Snapshot::new(0, "v0"));
        let one = {
            let snapshot = Arc::clone(&snapshot);
            thread::spawn(move || {
                let _ = snapshot.store(1, "v1");
            })
        };
        let two = {
            let snapshot = Arc::clone(&snapshot);
            thread::spawn(move || {
                snapshot.store(2, "v2").expect("2 is the newest version");
            })
        };
        let first = snapshot.load();
        let second = snapshot.load();
        assert!(second.version() >= first.version(), "a read went backwards");
        // Value and version are one publication: never torn.
        assert_eq!(*first.value(), ["v0", "v1", "v2"][first.version() as usize]);
        one.join().expect("writer 1");
        two.join().expect("writer 2");
        assert_eq!(snapshot.version(), 2, "an older store landed last");
        assert_eq!(*snapshot.load().value(), "v2");
    });
}
