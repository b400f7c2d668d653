//! The drill's TCP fault proxy in front of a real TCP echo server: each
//! fault does to open and new connections what its table says.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rampart_server::drill::{Fault, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Echoes every byte back, per connection.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn proxy() -> FaultProxy {
    FaultProxy::start(echo_server().await).await.unwrap()
}

/// Sends `data` and reads as many bytes back.
async fn round_trip(s: &mut TcpStream, data: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(data).await?;
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).await?;
    Ok(back)
}

/// True when the peer reset or closed the connection.
async fn is_cut(s: &mut TcpStream) -> bool {
    let mut one = [0u8; 1];
    let _ = s.write_all(b"?").await;
    matches!(
        timeout(Duration::from_secs(2), s.read(&mut one)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn pass_forwards_both_ways_and_counts() {
    let p = proxy().await;
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    assert_eq!(round_trip(&mut s, b"hello").await.unwrap(), b"hello");
    let stats = p.stats();
    assert_eq!(stats.forwarded, 1);
    assert_eq!((stats.bytes_up, stats.bytes_down), (5, 5));
    assert_eq!(p.fault(), Fault::Pass);
}

#[tokio::test]
async fn latency_delays_an_open_connection_and_lifts() {
    let p = proxy().await;
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    round_trip(&mut s, b"warm").await.unwrap();
    p.set(Fault::Latency {
        delay: Duration::from_millis(150),
        jitter: Duration::from_millis(50),
    });
    let start = Instant::now();
    round_trip(&mut s, b"slow").await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    p.set(Fault::Pass);
    assert_eq!(round_trip(&mut s, b"fast").await.unwrap(), b"fast");
}

#[tokio::test]
async fn stall_holds_every_byte_until_it_lifts() {
    let p = proxy().await;
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    round_trip(&mut s, b"a").await.unwrap();
    p.set(Fault::Stall);
    s.write_all(b"held").await.unwrap();
    let mut back = [0u8; 4];
    assert!(
        timeout(Duration::from_millis(400), s.read_exact(&mut back))
            .await
            .is_err(),
        "a stalled connection answered"
    );
    // A new connection is accepted but gets nothing either.
    let mut fresh = TcpStream::connect(p.addr()).await.unwrap();
    fresh.write_all(b"new").await.unwrap();
    let mut three = [0u8; 3];
    assert!(
        timeout(Duration::from_millis(200), fresh.read_exact(&mut three))
            .await
            .is_err()
    );
    p.set(Fault::Pass);
    timeout(Duration::from_secs(2), s.read_exact(&mut back))
        .await
        .expect("delivered once the stall lifts")
        .unwrap();
    assert_eq!(&back, b"held", "nothing lost in the stall");
    timeout(Duration::from_secs(2), fresh.read_exact(&mut three))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&three, b"new");
}

#[tokio::test]
async fn refuse_cuts_new_connections_only() {
    let p = proxy().await;
    let mut open = TcpStream::connect(p.addr()).await.unwrap();
    round_trip(&mut open, b"x").await.unwrap();
    p.set(Fault::Refuse);
    let mut refused = TcpStream::connect(p.addr()).await.unwrap();
    assert!(is_cut(&mut refused).await, "a new connection got through");
    assert_eq!(round_trip(&mut open, b"still").await.unwrap(), b"still");
    assert!(p.stats().refused >= 1);
    p.set(Fault::Pass);
    let mut after = TcpStream::connect(p.addr()).await.unwrap();
    assert_eq!(round_trip(&mut after, b"ok").await.unwrap(), b"ok");
}

#[tokio::test]
async fn reset_cuts_open_connections_at_once() {
    let p = proxy().await;
    let mut open = TcpStream::connect(p.addr()).await.unwrap();
    round_trip(&mut open, b"x").await.unwrap();
    p.set(Fault::Reset);
    assert!(
        is_cut(&mut open).await,
        "an open connection survived a reset"
    );
    let mut new = TcpStream::connect(p.addr()).await.unwrap();
    assert!(is_cut(&mut new).await, "a new connection survived a reset");
    assert_eq!(p.stats().reset, 1);
}

#[tokio::test]
async fn bandwidth_paces_each_direction() {
    let p = proxy().await;
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    p.set(Fault::Bandwidth {
        bytes_per_sec: 40_000,
    });
    let data = vec![7u8; 12_000];
    let start = Instant::now();
    assert_eq!(round_trip(&mut s, &data).await.unwrap(), data);
    // 12 kB up and 12 kB down at 40 kB/s each: 0.6 s at the very least.
    assert!(
        start.elapsed() >= Duration::from_millis(550),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_timeline_plays_in_order() {
    let p = proxy().await;
    let mut s = TcpStream::connect(p.addr()).await.unwrap();
    round_trip(&mut s, b"x").await.unwrap();
    let start = Instant::now();
    let played = p.play(&[
        (Duration::from_millis(300), Fault::Pass),
        (Duration::ZERO, Fault::Stall),
    ]);
    while p.fault() != Fault::Stall {
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "the stall was not set"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(round_trip(&mut s, b"late").await.unwrap(), b"late");
    assert!(
        start.elapsed() >= Duration::from_millis(280),
        "{:?}",
        start.elapsed()
    );
    played.await.unwrap();
    assert_eq!(p.fault(), Fault::Pass);
}

#[tokio::test]
async fn only_loopback_upstreams() {
    let err = FaultProxy::start("10.1.2.3:5432".parse().unwrap())
        .await
        .err()
        .expect("a non-loopback upstream was accepted");
    assert!(err.to_string().contains("loopback"), "{err}");
}
