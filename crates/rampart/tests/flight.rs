//! Single-flight behaviour: sharing, cancellation hand-over, panics, errors,
//! forget, and a seeded stress test with random cancellation.
#![cfg(not(rampart_loom))]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rampart::flight::{Flight, Role};
use rampart::{Error, ErrorKind};
use tokio::sync::Notify;

/// Polls until `cond` holds; panics after 5 s so a hang fails the test.
async fn until(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Spawns a leader for `key` whose load waits at `gate`, then answers
/// `answer()` (which may panic).
fn gated_leader<V: Clone + Send + Sync + 'static>(
    flight: &Arc<Flight<u32, V>>,
    key: u32,
    gate: &Arc<Notify>,
    answer: impl FnOnce() -> Result<V, Error> + Send + 'static,
) -> tokio::task::JoinHandle<(Result<V, Error>, Role)> {
    let (flight, gate) = (flight.clone(), gate.clone());
    tokio::spawn(async move {
        flight
            .run(key, || async move {
                gate.notified().await;
                answer()
            })
            .await
    })
}

/// Spawns a caller for `key` whose own load (if it ever leads) answers `value`.
fn caller<V: Clone + Send + Sync + 'static>(
    flight: &Arc<Flight<u32, V>>,
    key: u32,
    value: V,
) -> tokio::task::JoinHandle<(Result<V, Error>, Role)> {
    let flight = flight.clone();
    tokio::spawn(async move { flight.run(key, || async move { Ok(value) }).await })
}

#[tokio::test]
async fn followers_share_the_leaders_result_and_know_it() {
    let flight = Arc::new(Flight::<&str, u64>::new());
    let loads = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (flight, loads, gate) = (flight.clone(), loads.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            flight
                .run("k", || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok(42)
                })
                .await
        }));
    }
    until(|| flight.followers(&"k") == 49).await;
    assert_eq!(
        flight.waiting(),
        49,
        "all keys together: the one key's followers"
    );
    gate.notify_one();
    let mut leaders = 0;
    for task in tasks {
        let (result, role) = task.await.expect("task");
        assert_eq!(result.expect("value"), 42);
        leaders += usize::from(role == Role::Leader);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(leaders, 1);
    assert_eq!(flight.in_flight(), 0);
    assert_eq!(flight.waiting(), 0);
}

#[tokio::test]
async fn a_cancelled_leader_hands_over_to_exactly_one_follower() {
    let flight = Arc::new(Flight::<u32, u32>::new());
    let running = Arc::new(AtomicUsize::new(0));
    let max_running = Arc::new(AtomicUsize::new(0));
    let loads = Arc::new(AtomicUsize::new(0));
    let load = {
        let (running, max_running, loads) = (running.clone(), max_running.clone(), loads.clone());
        move |n: u32| {
            let (running, max_running, loads) =
                (running.clone(), max_running.clone(), loads.clone());
            move || async move {
                struct Running(Arc<AtomicUsize>);
                impl Drop for Running {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                let _running = Running(running);
                max_running.fetch_max(now, Ordering::SeqCst);
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(n)
            }
        }
    };
    let leader = {
        let (flight, load) = (flight.clone(), load.clone());
        tokio::spawn(async move { flight.run(1, load(100)).await })
    };
    until(|| loads.load(Ordering::SeqCst) == 1).await;
    let mut followers = Vec::new();
    for n in 0..10 {
        let (flight, load) = (flight.clone(), load.clone());
        followers.push(tokio::spawn(async move { flight.run(1, load(n)).await }));
    }
    until(|| flight.followers(&1) == 10).await;
    leader.abort();
    assert!(leader.await.expect_err("aborted").is_cancelled());

    let mut values = Vec::new();
    let mut leaders = 0;
    for task in followers {
        let (result, role) = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a follower hung after the leader was cancelled")
            .expect("task");
        values.push(result.expect("value"));
        leaders += usize::from(role == Role::Leader);
    }
    assert_eq!(leaders, 1, "exactly one follower takes over");
    assert_eq!(
        loads.load(Ordering::SeqCst),
        2,
        "the cancelled load and one more"
    );
    assert_eq!(
        max_running.load(Ordering::SeqCst),
        1,
        "never two loads at once"
    );
    assert!(
        values.windows(2).all(|w| w[0] == w[1]),
        "all share one result: {values:?}"
    );
    assert_eq!(flight.in_flight(), 0);
}

#[tokio::test]
async fn a_leader_cancelled_with_no_followers_frees_the_key() {
    let flight = Flight::<u32, u32>::new();
    let cancelled = tokio::time::timeout(
        Duration::from_millis(10),
        flight.run(7, || async {
            std::future::pending::<()>().await;
            Ok(0)
        }),
    )
    .await;
    assert!(cancelled.is_err());
    assert_eq!(flight.in_flight(), 0);
    let (result, role) = flight.run(7, || async { Ok(8) }).await;
    assert_eq!((result.expect("value"), role), (8, Role::Leader));
}

#[tokio::test]
async fn a_follower_cancelled_while_waiting_leaves_cleanly() {
    let flight = Arc::new(Flight::<u32, u32>::new());
    let gate = Arc::new(Notify::new());
    let leader = gated_leader(&flight, 1, &gate, || Ok(5));
    until(|| flight.in_flight() == 1).await;
    let follower =
        tokio::time::timeout(Duration::from_millis(10), flight.run(1, || async { Ok(0) })).await;
    assert!(follower.is_err());
    assert_eq!(
        flight.followers(&1),
        0,
        "the cancelled follower deregistered"
    );
    gate.notify_one();
    assert_eq!(leader.await.expect("task").0.expect("value"), 5);
    assert_eq!(flight.in_flight(), 0);
}

#[tokio::test]
async fn a_panicking_leader_fails_every_follower_and_frees_the_key() {
    let flight = Arc::new(Flight::<u32, u32>::new());
    let gate = Arc::new(Notify::new());
    let leader = gated_leader(&flight, 1, &gate, || panic!("loader exploded"));
    until(|| flight.in_flight() == 1).await;
    let mut followers = Vec::new();
    for _ in 0..5 {
        let flight = flight.clone();
        followers.push(tokio::spawn(async move {
            flight.run(1, || async { Ok(0) }).await
        }));
    }
    until(|| flight.followers(&1) == 5).await;
    gate.notify_one();
    let (leader_result, _) = leader
        .await
        .expect("the panic is contained, the task ends normally");
    assert!(
        matches!(leader_result.map_err(Error::into_kind), Err(ErrorKind::LoadPanicked(ref m)) if m.contains("loader exploded"))
    );
    for task in followers {
        let (result, role) = task.await.expect("task");
        assert_eq!(role, Role::Follower);
        match result.map_err(Error::into_kind) {
            Err(ErrorKind::LoadPanicked(message)) => assert!(message.contains("loader exploded")),
            other => panic!("expected LoadPanicked, got {other:?}"),
        }
    }
    assert_eq!(flight.in_flight(), 0);
    let (result, role) = flight.run(1, || async { Ok(9) }).await;
    assert_eq!((result.expect("value"), role), (9, Role::Leader));
}

#[tokio::test]
async fn an_error_reaches_that_flights_followers_only_and_is_not_kept() {
    let flight = Arc::new(Flight::<u32, u32>::new());
    let gate = Arc::new(Notify::new());
    let leader = gated_leader(&flight, 1, &gate, || Err(Error::source("db down")));
    until(|| flight.in_flight() == 1).await;
    let follower = caller(&flight, 1, 0);
    until(|| flight.followers(&1) == 1).await;
    gate.notify_one();
    assert!(matches!(
        leader.await.expect("task").0.map_err(Error::into_kind),
        Err(ErrorKind::Source(_))
    ));
    let (follower_result, role) = follower.await.expect("task");
    assert_eq!(role, Role::Follower);
    assert!(matches!(
        follower_result.map_err(Error::into_kind),
        Err(ErrorKind::Source(_))
    ));
    // The next call runs its own load and succeeds: the error was not kept.
    let (result, role) = flight.run(1, || async { Ok(3) }).await;
    assert_eq!((result.expect("value"), role), (3, Role::Leader));
}

#[tokio::test]
async fn forget_lets_the_next_caller_start_a_fresh_load() {
    let flight = Arc::new(Flight::<u32, &'static str>::new());
    let gate = Arc::new(Notify::new());
    let old = gated_leader(&flight, 1, &gate, || Ok("old"));
    until(|| flight.in_flight() == 1).await;
    let old_follower = caller(&flight, 1, "unused");
    until(|| flight.followers(&1) == 1).await;
    flight.forget(&1);
    let (fresh, role) = flight.run(1, || async { Ok("new") }).await;
    assert_eq!((fresh.expect("value"), role), ("new", Role::Leader));
    gate.notify_one();
    assert_eq!(old.await.expect("task").0.expect("value"), "old");
    let (shared, role) = old_follower.await.expect("task");
    assert_eq!((shared.expect("value"), role), ("old", Role::Follower));
    assert_eq!(flight.in_flight(), 0);
}

/// Thousands of tasks over a few keys per round, with random aborts (the
/// leader included) while loads run. Each round: no two loads of a key ever
/// run at once, exactly one load per key completes, every task not aborted
/// gets that load's value, and nothing hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_random_cancellation_one_completed_load_per_key_per_round() {
    const ROUNDS: u64 = 20;
    const KEYS: u64 = 8;
    const TASKS_PER_KEY: usize = 64;
    let seed = support::stress_seed(0x5eed_f11e_u64);
    let mut rng = fastrand::Rng::with_seed(seed);
    let flight = Arc::new(Flight::<u64, u64>::new());

    for round in 0..ROUNDS {
        let running: Arc<Vec<AtomicUsize>> =
            Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
        let completed: Arc<Vec<AtomicUsize>> =
            Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
        let overlap = Arc::new(AtomicUsize::new(0));
        // Loads wait at the gate until every task has joined, so that no
        // late task can start a second flight legitimately.
        let (open_gate, gate) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for key in 0..KEYS {
            for t in 0..TASKS_PER_KEY {
                let hold = Duration::from_micros(rng.u64(200..3_000));
                let (flight, running, completed, overlap, mut gate) = (
                    flight.clone(),
                    running.clone(),
                    completed.clone(),
                    overlap.clone(),
                    gate.clone(),
                );
                let value = round * 1_000 + key * 100 + t as u64;
                let handle = tokio::spawn(async move {
                    flight
                        .run(key, || async move {
                            let k = key as usize;
                            if running[k].fetch_add(1, Ordering::SeqCst) != 0 {
                                overlap.fetch_add(1, Ordering::SeqCst);
                            }
                            struct Leave<'a>(&'a AtomicUsize);
                            impl Drop for Leave<'_> {
                                fn drop(&mut self) {
                                    self.0.fetch_sub(1, Ordering::SeqCst);
                                }
                            }
                            let _leave = Leave(&running[k]);
                            gate.wait_for(|open| *open).await.map_err(Error::source)?;
                            tokio::time::sleep(hold).await;
                            completed[k].fetch_add(1, Ordering::SeqCst);
                            Ok(value)
                        })
                        .await
                });
                // Task 0 of each key is never aborted, so every key's round
                // has someone to finish it.
                let abortable = t != 0 && rng.u8(0..4) == 0;
                tasks.push((key, abortable, handle));
            }
        }
        // Wait until every task has joined (one leader + followers per key).
        until(|| (0..KEYS).all(|k| flight.followers(&k) == TASKS_PER_KEY - 1)).await;
        // Abort a random quarter at random moments, before and after the
        // loads are let go.
        let mut results = Vec::new();
        let mut to_abort: Vec<_> = Vec::new();
        for (key, abortable, handle) in tasks {
            if abortable {
                to_abort.push(handle.abort_handle());
            }
            results.push((key, abortable, handle));
        }
        let open_at = rng.usize(0..=to_abort.len());
        for (n, abort) in to_abort.into_iter().enumerate() {
            if n == open_at {
                let _ = open_gate.send(true);
            }
            if rng.bool() {
                tokio::time::sleep(Duration::from_micros(rng.u64(0..500))).await;
            }
            abort.abort();
        }
        let _ = open_gate.send(true);
        let mut values: Vec<Option<u64>> = vec![None; KEYS as usize];
        for (key, abortable, handle) in results {
            match tokio::time::timeout(Duration::from_secs(10), handle).await {
                Err(_) => panic!("round {round}: a task hung (seed {seed})"),
                Ok(Err(join)) => assert!(abortable && join.is_cancelled(), "seed {seed}: {join}"),
                Ok(Ok((result, _role))) => {
                    let v = result.expect("value");
                    let slot = &mut values[key as usize];
                    assert!(
                        slot.is_none_or(|seen| seen == v),
                        "round {round} key {key}: two values (seed {seed})"
                    );
                    *slot = Some(v);
                }
            }
        }
        assert_eq!(
            overlap.load(Ordering::SeqCst),
            0,
            "round {round}: overlapping loads (seed {seed})"
        );
        for k in 0..KEYS as usize {
            assert_eq!(
                completed[k].load(Ordering::SeqCst),
                1,
                "round {round} key {k}: completed loads (seed {seed})"
            );
        }
        assert_eq!(
            flight.in_flight(),
            0,
            "round {round}: keys left in flight (seed {seed})"
        );
    }
}
