//! Slow and idle clients cannot hold the server: a swarm of connections
//! that send half a header and stall, and kept-alive connections that go
//! quiet, are closed by the server on their deadlines while other clients
//! are served as usual; past `server.max_connections` new connections are
//! closed at once and counted.

mod common;

use std::time::{Duration, Instant};

use common::start;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Slack for a loaded two-core machine, on top of a deadline.
const SLACK: Duration = Duration::from_secs(3);

/// Reads until the server closes the connection (EOF or reset); returns
/// when, or None if it is still open at `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.ok()
}

/// One complete request on `stream`, its answer read (kept alive).
async fn request(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // /healthz answers a small body with content-length: read until it is in.
    while !answer.ends_with(b"}") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_closed_on_time_while_others_are_served() {
    let t = start(|c| {
        c.server.header_read_timeout = HEADER_TIMEOUT;
        c.server.idle_timeout = IDLE_TIMEOUT;
    })
    .await;
    let addr = t.server.addr;

    // 200 clients that send half a head and stall.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /v1/r/users/1 HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .expect("write");
        slow.push((stream, Instant::now()));
    }
    // 20 kept-alive clients that go quiet after one request.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        request(&mut stream).await;
        idle.push((stream, Instant::now()));
    }
    // One kept-alive client that starts a second head after a quiet spell:
    // the header deadline applies from its first byte, not the idle one.
    let mut late_head = TcpStream::connect(addr).await.expect("connect");
    request(&mut late_head).await;

    // Meanwhile a normal client is served throughout.
    let healthy = {
        let (client, url) = (t.client.clone(), t.url("/v1/r/users/1"));
        tokio::spawn(async move {
            let until = Instant::now() + HEADER_TIMEOUT + IDLE_TIMEOUT;
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let started = Instant::now();
                let status = client.get(&url).send().await.expect("served").status();
                assert_eq!(status, 200);
                latencies.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            latencies
        })
    };

    tokio::time::sleep(HEADER_TIMEOUT / 2).await;
    late_head
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let late_started = Instant::now();

    let closings = slow.iter_mut().map(|(stream, opened)| async move {
        let closed = closed_within(stream, HEADER_TIMEOUT + SLACK).await;
        closed.map(|at| at.duration_since(*opened))
    });
    let slow_closed = futures_util::future::join_all(closings).await;
    for (i, after) in slow_closed.iter().enumerate() {
        let after = after.unwrap_or_else(|| panic!("slow client {i} still open"));
        // The server counts from its accept (a little before `opened`), in ms.
        assert!(
            after >= HEADER_TIMEOUT - Duration::from_millis(50),
            "slow client {i} closed after {after:?}, before the header timeout"
        );
    }

    let late_closed = closed_within(&mut late_head, HEADER_TIMEOUT + SLACK)
        .await
        .expect("a late partial head is closed on the header deadline")
        .duration_since(late_started);
    assert!(
        late_closed >= HEADER_TIMEOUT - Duration::from_millis(50) && late_closed < IDLE_TIMEOUT,
        "closed {late_closed:?} after its head began"
    );

    let closings = idle.iter_mut().map(|(stream, answered)| async move {
        let closed = closed_within(stream, IDLE_TIMEOUT + SLACK).await;
        closed.map(|at| at.duration_since(*answered))
    });
    for (i, after) in futures_util::future::join_all(closings)
        .await
        .into_iter()
        .enumerate()
    {
        let after = after.unwrap_or_else(|| panic!("idle client {i} still open"));
        // Idle is not held to the (shorter) header timeout.
        assert!(
            after >= IDLE_TIMEOUT - Duration::from_millis(200),
            "idle client {i} closed after {after:?}"
        );
    }

    let mut latencies = healthy.await.expect("healthy client");
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let worst = latencies[latencies.len() - 1];
    println!(
        "healthy client beside 200 slow + 20 idle: {} requests, median {median:?}, worst {worst:?}",
        latencies.len()
    );
    assert!(latencies.len() > 50, "{} requests", latencies.len());
    assert!(median < Duration::from_millis(100), "median {median:?}");
    assert!(worst < Duration::from_secs(2), "worst {worst:?}");

    assert!(
        t.metric("rampart_connection_timeouts_total{phase=\"header\"}")
            .await
            >= 201.0
    );
    assert!(
        t.metric("rampart_connection_timeouts_total{phase=\"idle\"}")
            .await
            >= 20.0
    );
}

#[tokio::test]
async fn past_max_connections_new_ones_are_closed_at_once_and_counted() {
    let t = start(|c| c.server.max_connections = 5).await;
    let addr = t.server.addr;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // A served request proves the connection was accepted and counted.
        request(&mut stream).await;
        held.push(stream);
    }
    for _ in 0..3 {
        let mut refused = TcpStream::connect(addr).await.expect("the kernel accepts");
        let _ = refused
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut answer))
            .await
            .expect("closed at once, not left hanging");
        assert!(
            answer.is_empty(),
            "refused, not served: {read:?} {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    // The held ones are still served.
    request(&mut held[0]).await;
    // Free a slot, then read the counters over a fresh connection.
    drop(held.pop());
    let mut refused_total = 0.0;
    for _ in 0..50 {
        // The slot frees once the server notices the close.
        let client = reqwest::Client::new();
        if let Ok(response) = client.get(t.url("/metrics")).send().await {
            let text = response.text().await.unwrap_or_default();
            refused_total = text
                .lines()
                .find_map(|l| l.strip_prefix("rampart_connections_refused_total "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0);
            let open: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("rampart_connections_open "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0);
            assert!(open <= 5.0, "{open} open");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused_total >= 3.0, "refused {refused_total}");
}
