//! The deadlock detector (feature `deadlock-detection`): two threads that
//! take two `parking_lot` locks in opposite orders deadlock, and the running
//! server counts the cycle in `rampart_deadlocks_total` within seconds.
//! Without the feature the counter exists and stays 0.
//!
//!     cargo test -p rampart-server --features deadlock-detection --test deadlock

mod common;

use common::start;

#[cfg(feature = "deadlock-detection")]
#[tokio::test]
async fn a_lock_cycle_is_found_logged_and_counted() {
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    let t = start(|_| {}).await;
    assert_eq!(t.metric("rampart_deadlocks_total").await, 0.0);
    let a = Arc::new(parking_lot::Mutex::new(()));
    let b = Arc::new(parking_lot::Mutex::new(()));
    let both_hold_one = Arc::new(Barrier::new(2));
    for (first, second) in [(a.clone(), b.clone()), (b, a)] {
        let both_hold_one = Arc::clone(&both_hold_one);
        // Detached on purpose: these threads never finish.
        std::thread::spawn(move || {
            let _held = first.lock();
            both_hold_one.wait();
            let _never = second.lock();
        });
    }
    let mut found = 0.0;
    for _ in 0..50 {
        found = t.metric("rampart_deadlocks_total").await;
        if found >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found >= 1.0, "the cycle was counted");
}

#[cfg(not(feature = "deadlock-detection"))]
#[tokio::test]
async fn without_the_feature_the_counter_is_exported_and_zero() {
    let t = start(|_| {}).await;
    let text = t.get("/metrics").await.text().await.expect("metrics");
    assert!(text.contains("\nrampart_deadlocks_total 0\n"), "{text}");
}
