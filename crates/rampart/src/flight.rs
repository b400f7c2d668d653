//! Per-key single-flight: one load, many waiters.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use rampart::flight::{Flight, Role};
//!
//! let flight: Flight<u64, String> = Flight::new();
//! // Two callers ask for key 7 at once: one query runs, both get its row.
//! let (first, second) = tokio::join!(
//!     flight.run(7, || async {
//!         tokio::task::yield_now().await; // the query, in flight
//!         Ok("row 7".to_owned())
//!     }),
//!     flight.run(7, || async { Ok("a second query: never runs".to_owned()) }),
//! );
//! assert_eq!((first.0.ok().as_deref(), first.1), (Some("row 7"), Role::Leader));
//! assert_eq!((second.0.ok().as_deref(), second.1), (Some("row 7"), Role::Follower));
//! # }
//! ```
//!
//! The first caller for a key becomes the *leader* and runs its load; callers
//! that arrive while it runs become *followers*, wait, and share the result
//! (and learn, through [`Role`], that they shared it). Once the load finishes
//! the key is free again: results are never cached here — that is the cache's
//! job — so an error reaches only the followers of that one flight.
//!
//! What the pitfalls of other implementations taught:
//!
//! * **Cancellation.** A leader whose future is dropped (a timeout, a client
//!   gone) must not strand its followers. The leader's clean-up lives in
//!   `Drop` of its `LeaderGuard`, never after an `.await`. It marks the call
//!   *vacant* and wakes every follower; the first to be polled claims the
//!   lead under the call's lock and runs **its own** load, so exactly one
//!   load runs at a time and nobody hangs.
//! * **Panics.** The load runs under `catch_unwind`; a panic becomes
//!   [`ErrorKind::LoadPanicked`](crate::ErrorKind::LoadPanicked) for the leader and every follower, the process
//!   goes on, and the key is free for the next call.
//! * **Registration and removal are RAII**: a follower dropped while waiting
//!   deregisters in `Drop`, and the last one to leave a vacant call removes
//!   it from the map.
//!
//! Locking: one mutex over the key → call map, one per call over its state.
//! The order is always map, then call, so the two never deadlock; neither is
//! held across an `.await` or while user code runs. Hits in a cache never
//! reach this module, so the map mutex is only taken on misses.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_util::FutureExt;
use slab::Slab;

use crate::sync::{Arc, Mutex};
use crate::Error;

/// Whether a caller ran the load itself or shared another caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This call ran the load.
    Leader,
    /// This call waited for, and shares, a load another call ran.
    Follower,
}

/// A per-key single-flight group. Cheap to share behind an `Arc`.
pub struct Flight<K, V> {
    calls: Mutex<HashMap<K, Arc<Call<V>>>>,
}

/// One flight of one key.
struct Call<V> {
    state: Mutex<CallState<V>>,
}

struct CallState<V> {
    phase: Phase<V>,
    /// One slot per registered follower; the waker is filled on first poll.
    followers: Slab<Option<Waker>>,
}

enum Phase<V> {
    /// A leader is running the load.
    Running,
    /// The leader went away without a result; the next follower polled takes
    /// over.
    Vacant,
    /// The load finished; followers take a clone of this.
    Done(Result<V, Error>),
}

impl<K, V> Default for Flight<K, V> {
    fn default() -> Self {
        Flight {
            calls: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, V> Flight<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    /// An empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `load` for `key` unless a load for `key` is already running, in
    /// which case this waits for that one and shares its result.
    ///
    /// `load` is only called if this caller becomes the leader — at once, or
    /// later, when the leader it waited on was cancelled.
    pub async fn run<F, Fut>(&self, key: K, load: F) -> (Result<V, Error>, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, Error>>,
    {
        match self.join(&key) {
            Joined::Leader(call) => (self.lead(key, call, load).await, Role::Leader),
            Joined::Follower(call, slot) => {
                let wait = FollowerWait {
                    flight: self,
                    key: &key,
                    call: Arc::clone(&call),
                    slot: Some(slot),
                };
                match wait.await {
                    Woken::Done(result) => (result, Role::Follower),
                    Woken::TakeOver => (self.lead(key, call, load).await, Role::Leader),
                }
            }
        }
    }

    /// Lets the next caller for `key` start a fresh load. Followers of the
    /// flight already running still get its result.
    pub fn forget(&self, key: &K) {
        crate::contention::lock(&self.calls, &crate::contention::FLIGHT).remove(key);
    }

    /// Number of keys with a load running (or being handed over).
    pub fn in_flight(&self) -> usize {
        crate::contention::lock(&self.calls, &crate::contention::FLIGHT).len()
    }

    /// Callers waiting on a running load, all keys together (the
    /// coalesced callers right now). Walks every call: for stats, not for
    /// a hot path.
    pub fn waiting(&self) -> usize {
        let calls = crate::contention::lock(&self.calls, &crate::contention::FLIGHT);
        calls
            .values()
            .map(|call| call.state.lock().followers.len())
            .sum()
    }

    /// Number of callers waiting on `key`'s running load.
    pub fn followers(&self, key: &K) -> usize {
        let calls = crate::contention::lock(&self.calls, &crate::contention::FLIGHT);
        calls
            .get(key)
            .map_or(0, |call| call.state.lock().followers.len())
    }

    /// Finds or creates the key's call and registers this caller in it.
    fn join(&self, key: &K) -> Joined<V> {
        let mut calls = crate::contention::lock(&self.calls, &crate::contention::FLIGHT);
        if let Some(call) = calls.get(key) {
            let call = Arc::clone(call);
            let slot = {
                let mut state = call.state.lock();
                match state.phase {
                    // A vacant call with nobody polled yet: whoever comes
                    // first leads, late arrivals included.
                    Phase::Vacant => {
                        state.phase = Phase::Running;
                        None
                    }
                    _ => Some(state.followers.insert(None)),
                }
            };
            return match slot {
                None => Joined::Leader(call),
                Some(slot) => Joined::Follower(call, slot),
            };
        }
        let call = Arc::new(Call {
            state: Mutex::new(CallState {
                phase: Phase::Running,
                followers: Slab::new(),
            }),
        });
        calls.insert(key.clone(), Arc::clone(&call));
        Joined::Leader(call)
    }

    async fn lead<F, Fut>(&self, key: K, call: Arc<Call<V>>, load: F) -> Result<V, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, Error>>,
    {
        let mut guard = LeaderGuard {
            flight: self,
            key,
            call,
            finished: false,
        };
        // The closure is called inside the caught future, so a panic while
        // building the load future is contained as well as one while polling it.
        let result = AssertUnwindSafe(async move { load().await })
            .catch_unwind()
            .await
            .unwrap_or_else(|payload| Err(Error::from_panic(&*payload)));
        guard.finish(&result);
        result
    }

    /// Removes `call` from the map if it is still the key's current call (a
    /// `forget` may have replaced it).
    fn remove_if_current(calls: &mut HashMap<K, Arc<Call<V>>>, key: &K, call: &Arc<Call<V>>) {
        if calls
            .get(key)
            .is_some_and(|current| Arc::ptr_eq(current, call))
        {
            calls.remove(key);
        }
    }
}

enum Joined<V> {
    Leader(Arc<Call<V>>),
    Follower(Arc<Call<V>>, usize),
}

/// Hands the result to followers when the load finishes, or the lead to a
/// follower when the leader is dropped first.
struct LeaderGuard<'a, K: Hash + Eq + Clone, V: Clone> {
    flight: &'a Flight<K, V>,
    key: K,
    call: Arc<Call<V>>,
    finished: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> LeaderGuard<'_, K, V> {
    fn finish(&mut self, result: &Result<V, Error>) {
        self.finished = true;
        let wakers = {
            // Remove from the map before publishing, under the map lock, so
            // that no caller can join a call that is already done: a caller
            // arriving now starts a fresh load and sees fresh data.
            let mut calls = crate::contention::lock(&self.flight.calls, &crate::contention::FLIGHT);
            Flight::remove_if_current(&mut calls, &self.key, &self.call);
            let mut state = self.call.state.lock();
            if state.followers.is_empty() {
                return;
            }
            state.phase = Phase::Done(result.clone());
            take_wakers(&mut state.followers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for LeaderGuard<'_, K, V> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let wakers = {
            let mut calls = crate::contention::lock(&self.flight.calls, &crate::contention::FLIGHT);
            let mut state = self.call.state.lock();
            if state.followers.is_empty() {
                Flight::remove_if_current(&mut calls, &self.key, &self.call);
                return;
            }
            // Wake them all rather than one: the one picked might itself be
            // cancelled before it is polled. The first polled claims the lead
            // under the call lock; the rest see `Running` and sleep again.
            state.phase = Phase::Vacant;
            take_wakers(&mut state.followers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

fn take_wakers(followers: &mut Slab<Option<Waker>>) -> Vec<Waker> {
    followers.iter_mut().filter_map(|(_, w)| w.take()).collect()
}

enum Woken<V> {
    Done(Result<V, Error>),
    TakeOver,
}

/// A follower's wait. Deregisters itself when dropped before it finished.
struct FollowerWait<'a, K: Hash + Eq + Clone, V: Clone> {
    flight: &'a Flight<K, V>,
    key: &'a K,
    call: Arc<Call<V>>,
    /// `None` once this follower has left the call.
    slot: Option<usize>,
}

impl<K: Hash + Eq + Clone, V: Clone> Future for FollowerWait<'_, K, V> {
    type Output = Woken<V>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(slot) = this.slot else {
            // Polled again after completion: a contract violation by the
            // caller; behave like a fused future would not be able to.
            return Poll::Pending;
        };
        let mut state = this.call.state.lock();
        let outcome = match &state.phase {
            Phase::Done(result) => Woken::Done(result.clone()),
            Phase::Vacant => {
                state.phase = Phase::Running;
                Woken::TakeOver
            }
            Phase::Running => {
                if let Some(waker) = state.followers.get_mut(slot) {
                    match waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => *waker = Some(cx.waker().clone()),
                    }
                }
                return Poll::Pending;
            }
        };
        state.followers.try_remove(slot);
        drop(state);
        this.slot = None;
        Poll::Ready(outcome)
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Drop for FollowerWait<'_, K, V> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut calls = crate::contention::lock(&self.flight.calls, &crate::contention::FLIGHT);
        let mut state = self.call.state.lock();
        state.followers.try_remove(slot);
        // The last follower of a vacant call removes it, so an abandoned key
        // does not linger in the map.
        if matches!(state.phase, Phase::Vacant) && state.followers.is_empty() {
            Flight::remove_if_current(&mut calls, self.key, &self.call);
        }
    }
}

#[cfg(all(test, not(rampart_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn leader_result_is_shared_with_followers() {
        let flight = Flight::<u32, u32>::new();
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(7)
        };
        let (a, b, c) = tokio::join!(
            flight.run(1, load),
            flight.run(1, load),
            flight.run(1, load)
        );
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        let roles = [a.1, b.1, c.1];
        assert_eq!(roles.iter().filter(|r| **r == Role::Leader).count(), 1);
        for (r, _) in [a, b, c] {
            assert_eq!(r.ok(), Some(7));
        }
        assert_eq!(flight.in_flight(), 0);
    }
}
