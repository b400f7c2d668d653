//! The in-process lease's hand-over: a holder whose lease expired is
//! replaced, and its late release (compare-and-delete by fence) must not
//! free its successor's lease. A seeded random schedule of acquires,
//! releases and clock moves checks that at no time two holders hold one
//! key's lease before its expiry; `RAMPART_STRESS_SEED=N` replays one.
#![cfg(not(rampart_loom))]

mod support;

use std::time::Duration;

use futures_util::FutureExt;
use rampart::cache::{Acquired, LeaseGuard, LocalLease};
use rampart::clock::{Clock, Instant};
use rampart::Lease;

const TTL: Duration = Duration::from_millis(10);

fn try_lease(lease: &LocalLease<u8>, key: u8) -> Option<LeaseGuard> {
    // The local lease answers without waiting.
    match lease.acquire(&key).now_or_never() {
        Some(Ok(Acquired::Won(guard))) => Some(guard),
        Some(Ok(Acquired::Lost(_))) => None,
        other => panic!(
            "acquire did not answer at once: {:?}",
            other.map(|r| r.is_ok())
        ),
    }
}

#[test]
fn a_late_release_does_not_free_the_successors_lease() {
    let (clock, mock) = Clock::mock();
    let lease = LocalLease::with_clock(TTL, clock);
    let first = try_lease(&lease, 1).expect("free");
    assert!(try_lease(&lease, 1).is_none(), "held");
    mock.increment(TTL);
    let second = try_lease(&lease, 1).expect("the first expired");
    assert!(second.fence() > first.fence());
    drop(first); // the first holder wakes up late and lets go
    assert!(
        try_lease(&lease, 1).is_none(),
        "the late release freed the successor's lease"
    );
    drop(second);
    assert!(try_lease(&lease, 1).is_some(), "released");
}

#[test]
fn stress_seeded_schedule_never_has_two_live_holders() {
    let seed = support::stress_seed(fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let (clock, mock) = Clock::mock();
    let lease = LocalLease::with_clock(TTL, clock.clone());
    // Held guards with the time their lease ends.
    let mut held: Vec<(u8, Instant, LeaseGuard)> = Vec::new();
    let mut grants = 0u32;
    for step in 0..20_000 {
        match rng.u8(..10) {
            0..=4 => {
                let key = rng.u8(..3);
                if let Some(guard) = try_lease(&lease, key) {
                    let now = clock.now();
                    let live: Vec<u64> = held
                        .iter()
                        .filter(|(k, until, _)| *k == key && now < *until)
                        .map(|(_, _, g)| g.fence())
                        .collect();
                    assert!(
                        live.is_empty(),
                        "seed {seed} step {step}: key {key} granted (fence {}) while fences {live:?} hold it",
                        guard.fence()
                    );
                    grants += 1;
                    held.push((key, now + TTL, guard));
                }
            }
            5..=7 if !held.is_empty() => {
                let i = rng.usize(..held.len());
                drop(held.swap_remove(i));
            }
            _ => mock.increment(Duration::from_millis(rng.u64(..4))),
        }
    }
    assert!(
        grants > 1_000,
        "seed {seed}: the schedule exercised too little"
    );
}
