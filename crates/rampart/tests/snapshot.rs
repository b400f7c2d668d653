//! `Snapshot`: versions never go backwards, values never tear, subscribers
//! see each new version in order.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use rampart::snapshot::{Snapshot, Stale, Versioned};

/// A value whose two halves must always agree: a torn read (half of one
/// version, half of another) would show them apart.
#[derive(Debug)]
struct Pair {
    version: u64,
    left: Vec<u64>,
    right: Vec<u64>,
}

fn pair(version: u64) -> Pair {
    Pair {
        version,
        left: vec![version; 16],
        right: vec![version; 16],
    }
}

#[test]
fn an_older_or_equal_version_is_refused_and_the_current_stays() {
    let snapshot = Snapshot::new(5, "five");
    assert_eq!(
        snapshot.store(5, "again"),
        Err(Stale {
            refused: 5,
            current: 5
        })
    );
    assert_eq!(
        snapshot.store(3, "three"),
        Err(Stale {
            refused: 3,
            current: 5
        })
    );
    assert_eq!(*snapshot.load().value(), "five");
    let mut reader = snapshot.reader();
    assert_eq!(reader.load().version(), 5);
    snapshot.store(9, "nine").expect("newer");
    assert_eq!(
        *reader.load().value(),
        "nine",
        "a reader sees the new version"
    );
    assert_eq!(snapshot.version(), 9);
    assert_eq!(*snapshot.load_full().value(), "nine");
}

/// One million reads on two threads (one through `load`, one through a
/// cached `reader`) while 1,000 writes land from two
/// writers racing with shuffled versions (seeded): no read ever sees an
/// older version than the one before it, none sees a torn value, and the
/// last version stands at the end. Replacing the version check with a
/// plain swap fails the final assertion (a late older store wins) and, on
/// most seeds, the monotonic one.
#[test]
fn a_million_reads_during_a_thousand_racing_writes_never_go_backwards_or_tear() {
    let seed = support::stress_seed(0x05ee_d5a9);
    let snapshot = Snapshot::new(0, pair(0));
    let mut versions: Vec<u64> = (1..=1_000).collect();
    // Two writers, each given every other version in a locally shuffled
    // order, so older versions regularly arrive after newer ones.
    let mut rng = fastrand::Rng::with_seed(seed);
    for chunk in versions.chunks_mut(8) {
        rng.shuffle(chunk);
    }
    let (a, b): (Vec<u64>, Vec<u64>) = versions.iter().partition(|v| *v % 2 == 0);
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|i| {
            let (snapshot, done) = (snapshot.clone(), Arc::clone(&done));
            thread::spawn(move || {
                // One reader through `load()`, the other through its own
                // cached `reader()`: both held to the same checks.
                let mut cached = snapshot.reader();
                let mut last = 0;
                let mut reads = 0u64;
                while reads < 500_000 || !done.load(Ordering::Acquire) {
                    let guard;
                    let seen: &Versioned<Pair> = if i == 0 {
                        guard = snapshot.load();
                        &guard
                    } else {
                        cached.load()
                    };
                    assert!(
                        seen.version() >= last,
                        "went back from {last} to {}",
                        seen.version()
                    );
                    assert_eq!(seen.value().version, seen.version(), "torn");
                    assert!(
                        seen.left
                            .iter()
                            .chain(&seen.right)
                            .all(|v| *v == seen.version()),
                        "torn"
                    );
                    last = seen.version();
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = [a, b]
        .into_iter()
        .map(|mine| {
            let snapshot = snapshot.clone();
            thread::spawn(move || {
                let mut refused = 0;
                for v in mine {
                    if snapshot.store(v, pair(v)).is_err() {
                        refused += 1;
                    }
                    thread::yield_now();
                }
                refused
            })
        })
        .collect();
    let refused: u32 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    done.store(true, Ordering::Release);
    let reads: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(reads >= 1_000_000, "{reads} reads");
    assert_eq!(snapshot.version(), 1_000, "an older store landed last");
    assert_eq!(snapshot.load().value().version, 1_000);
    assert_eq!(snapshot.reader().load().version(), 1_000);
    println!("{reads} reads, {refused} of 1000 stores refused as older");
}

#[tokio::test]
async fn a_subscriber_sees_new_versions_in_order_and_a_burst_once() {
    let snapshot = Snapshot::new(1, 10u32);
    let mut subscriber = snapshot.subscribe();
    assert_eq!(snapshot.subscribers(), 1);
    let waiting = tokio::spawn(async move {
        let first = subscriber.changed().await;
        (first.version(), *first.value(), subscriber)
    });
    tokio::task::yield_now().await;
    snapshot.store(2, 20).expect("newer");
    let (version, value, mut subscriber) = waiting.await.expect("subscriber");
    assert_eq!((version, value), (2, 20));
    // A burst: seen once, as its newest.
    for v in 3..=7 {
        snapshot.store(v, v as u32 * 10).expect("newer");
    }
    let seen = subscriber.changed().await;
    assert_eq!((seen.version(), *seen.value()), (7, 70));
    // A refused store wakes nobody.
    let _ = snapshot.store(4, 0);
    let quiet =
        tokio::time::timeout(std::time::Duration::from_millis(50), subscriber.changed()).await;
    assert!(quiet.is_err(), "woken by a refused store");
}
