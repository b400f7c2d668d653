//! Loom models of single-flight's hand-over and completion paths.
//!
//! Run with:
//! `RUSTFLAGS="--cfg rampart_loom" cargo test --release -p rampart --test loom_flight`
//! (`scripts/test.sh` does, into its own target directory). loom explores every
//! interleaving of the flight's locks and wake-ups within the bound and
//! fails on a deadlock (a waiter nobody wakes), a lost result, or a broken
//! assertion below.
#![cfg(rampart_loom)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};

use loom::future::block_on;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use rampart::flight::{Flight, Role};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// Two callers race on one key; each load counts itself. Whatever the
/// interleaving: both get a value, a follower gets the leader's value, one
/// load runs per flight, and the key is free afterwards.
#[test]
fn completion_races_with_a_joining_caller() {
    model(|| {
        let flight = Arc::new(Flight::<u8, u8>::new());
        let loads = Arc::new(AtomicUsize::new(0));
        let other = {
            let (flight, loads) = (flight.clone(), loads.clone());
            thread::spawn(move || {
                block_on(flight.run(1, || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok(2)
                }))
            })
        };
        let (mine, my_role) = block_on(flight.run(1, || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(1)
        }));
        let (theirs, their_role) = other.join().expect("thread");
        let (mine, theirs) = (mine.expect("value"), theirs.expect("value"));
        match (my_role, their_role) {
            (Role::Leader, Role::Follower) => {
                assert_eq!((mine, theirs), (1, 1));
                assert_eq!(loads.load(Ordering::SeqCst), 1);
            }
            (Role::Follower, Role::Leader) => {
                assert_eq!((mine, theirs), (2, 2));
                assert_eq!(loads.load(Ordering::SeqCst), 1);
            }
            (Role::Leader, Role::Leader) => {
                // One finished before the other joined: two flights.
                assert_eq!((mine, theirs), (1, 2));
                assert_eq!(loads.load(Ordering::SeqCst), 2);
            }
            (Role::Follower, Role::Follower) => panic!("a flight with no leader"),
        }
        assert_eq!(flight.in_flight(), 0);
    });
}

/// Polls a future once with a waker that does nothing, then drops it: a
/// caller cancelled mid-load or mid-wait. (It may also have finished in that
/// one poll, as a follower of a flight that completed meanwhile.)
fn poll_once_then_cancel<F: Future>(future: F) {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    let _ = future.as_mut().poll(&mut cx);
}

/// A caller whose load never finishes is cancelled while another caller
/// joins. The other caller must never hang: it either leads from the start
/// or takes over from the cancelled leader, and runs its own load.
#[test]
fn a_cancelled_leader_hands_over_and_nobody_hangs() {
    model(|| {
        let flight = Arc::new(Flight::<u8, u8>::new());
        let cancelled = {
            let flight = flight.clone();
            thread::spawn(move || {
                poll_once_then_cancel(flight.run(1, || std::future::pending()));
            })
        };
        let (result, role) = block_on(flight.run(1, || async { Ok(7) }));
        assert_eq!(result.expect("value"), 7);
        assert_eq!(role, Role::Leader);
        cancelled.join().expect("thread");
        assert_eq!(flight.in_flight(), 0);
    });
}

/// A cancelled leader with two followers: exactly one follower runs a load,
/// the other shares it (or, if it arrived after completion, leads a second
/// flight after the first one finished — never concurrently).
#[test]
fn two_followers_one_takes_over() {
    model(|| {
        let flight = Arc::new(Flight::<u8, u8>::new());
        let running = Arc::new(AtomicUsize::new(0));
        let loads = Arc::new(AtomicUsize::new(0));
        let leader = {
            let flight = flight.clone();
            thread::spawn(move || poll_once_then_cancel(flight.run(1, || std::future::pending())))
        };
        let follower = |value: u8| {
            let (flight, running, loads) = (flight.clone(), running.clone(), loads.clone());
            move || {
                block_on(flight.run(1, || async move {
                    assert_eq!(
                        running.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two loads at once"
                    );
                    loads.fetch_add(1, Ordering::SeqCst);
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(value)
                }))
            }
        };
        let other = thread::spawn(follower(2));
        let (mine, _) = follower(1)();
        let (theirs, _) = other.join().expect("thread");
        leader.join().expect("thread");
        let (mine, theirs) = (mine.expect("value"), theirs.expect("value"));
        match loads.load(Ordering::SeqCst) {
            1 => assert_eq!(mine, theirs, "one load, one shared value"),
            2 => assert_ne!(mine, theirs, "two sequential flights, each its own value"),
            n => panic!("{n} loads"),
        }
        assert_eq!(flight.in_flight(), 0);
    });
}
