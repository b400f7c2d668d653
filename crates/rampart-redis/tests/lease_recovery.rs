//! Leases survive what a real network does to them: an ACQUIRE whose
//! answer never came is released by its token (not left to block every
//! process until it expires), and a watchdog rides out a Redis stall
//! shorter than the lease. Each test stalls its own private Redis with
//! SIGSTOP.

mod support;

use std::time::{Duration, Instant};

use rampart::cache::Acquired;
use rampart::Lease;
use rampart_redis::keys::KeySet;
use rampart_redis::{Notices, RedisLease};
use support::{guarded, PrivateRedis};

/// Long enough never to matter in these tests.
const LIFE: Duration = Duration::from_secs(600);

/// A connection whose breaker never opens here: these tests are about
/// the lease, not the breaker.
async fn exists(server: &PrivateRedis, key: &str) -> bool {
    let mut conn = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("probe connection");
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut conn)
        .await
        .expect("EXISTS")
        == 1
}

/// Waits (≤ `within`) until `key` is gone; false if it never went.
async fn gone_within(server: &PrivateRedis, key: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !exists(server, key).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_whose_answer_never_came_is_released_by_its_token() {
    let server = PrivateRedis::start();
    // A lease far longer than the test: an orphan would still be held at
    // the end of it.
    let ttl = Duration::from_secs(60);
    let lease = RedisLease::<u64>::new(
        guarded(&server, Duration::from_millis(300)).await,
        "orphan",
        ttl,
        LIFE,
        Notices::default(),
    );
    // Connected, scripts loaded.
    let Acquired::Won(warm) = lease.acquire(&0).await.expect("acquire") else {
        panic!("free");
    };
    drop(warm);

    // The client gives up; Redis runs the ACQUIRE when it resumes.
    let keys = KeySet::new("orphan", "1");
    tokio::task::block_in_place(|| server.stop());
    let timed_out = lease.acquire(&1).await;
    assert!(
        timed_out.is_err(),
        "Redis is stopped: the call must time out"
    );
    tokio::task::block_in_place(|| server.cont());
    let resumed = Instant::now();
    assert!(
        gone_within(&server, &keys.lease, Duration::from_secs(5)).await,
        "the lease taken by the unanswered ACQUIRE is still held ({ttl:?} lease)"
    );
    assert!(
        exists(&server, &keys.fence).await,
        "the ACQUIRE did run (it counted a fence), so there was a lease to release"
    );
    let other = RedisLease::<u64>::new(
        guarded(&server, Duration::from_secs(2)).await,
        "orphan",
        ttl,
        LIFE,
        Notices::default(),
    );
    assert!(
        matches!(other.acquire(&1).await.expect("acquire"), Acquired::Won(_)),
        "another process wins at once"
    );
    assert!(resumed.elapsed() < Duration::from_secs(10), "not by expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_dropped_by_its_caller_is_released_by_its_token() {
    let server = PrivateRedis::start();
    let lease = RedisLease::<u64>::new(
        guarded(&server, Duration::from_secs(5)).await,
        "dropped",
        Duration::from_secs(60),
        LIFE,
        Notices::default(),
    );
    let Acquired::Won(warm) = lease.acquire(&0).await.expect("acquire") else {
        panic!("free");
    };
    drop(warm);

    let keys = KeySet::new("dropped", "2");
    tokio::task::block_in_place(|| server.stop());
    // The caller stops waiting long before the per-call timeout: the
    // `acquire` future is dropped with the ACQUIRE on the wire.
    let abandoned = tokio::time::timeout(Duration::from_millis(200), lease.acquire(&2)).await;
    assert!(abandoned.is_err(), "Redis is stopped: no answer yet");
    tokio::task::block_in_place(|| server.cont());
    assert!(
        gone_within(&server, &keys.lease, Duration::from_secs(5)).await,
        "the lease taken by the dropped ACQUIRE is still held"
    );
    assert!(exists(&server, &keys.fence).await, "the ACQUIRE did run");
    assert!(matches!(
        lease.acquire(&2).await.expect("acquire"),
        Acquired::Won(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_rides_out_a_stall_shorter_than_the_lease() {
    let server = PrivateRedis::start();
    let ttl = Duration::from_secs(2);
    let redis = guarded(&server, Duration::from_millis(200)).await;
    let lease = RedisLease::<u64>::new(redis, "stall", ttl, LIFE, Notices::default());
    let started = Instant::now();
    let Acquired::Won(held) = lease.acquire(&1).await.expect("acquire") else {
        panic!("free");
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Stalled across the first renewal (at a third of the lease), and
    // resumed well before the lease runs out.
    tokio::task::block_in_place(|| server.pause(Duration::from_millis(1_000)));
    tokio::time::sleep_until((started + 3 * ttl).into()).await;
    let keys = KeySet::new("stall", "1");
    assert!(
        exists(&server, &keys.lease).await,
        "the lease was lost {:?} after a {ttl:?} lease was taken",
        started.elapsed()
    );
    assert!(
        matches!(lease.acquire(&1).await.expect("acquire"), Acquired::Lost(_)),
        "still held by the first holder"
    );
    drop(held);
    assert!(
        gone_within(&server, &keys.lease, Duration::from_secs(5)).await,
        "released on drop"
    );
}
