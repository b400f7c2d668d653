//! A TCP fault proxy: put it between rampart and PostgreSQL (or Redis) and
//! switch faults on and off while load runs, by hand ([`FaultProxy::set`])
//! or from a scenario's timeline ([`FaultProxy::play`]).
//!
//! The proxy listens on `127.0.0.1:0` and forwards each accepted connection
//! to one upstream address, byte for byte. The current [`Fault`] is one
//! `watch` value every connection task reads before it moves a chunk, and
//! is woken by when it changes, so a fault applies to connections already
//! open (a pool's idle connections included), not just to new ones:
//!
//! | fault | new connections | open connections |
//! |---|---|---|
//! | `pass` | forwarded | forwarded |
//! | `latency` | forwarded | each chunk towards the upstream waits `delay` ± `jitter` (uniform) |
//! | `stall` | accepted, nothing forwarded | nothing read or forwarded either way until the fault lifts: a black hole while it lasts (bytes stay in the kernel's buffers, nothing is lost) |
//! | `refuse` | reset as soon as accepted | forwarded |
//! | `reset` | reset as soon as accepted | reset (RST, `SO_LINGER` 0) at once |
//! | `bandwidth` | forwarded | each direction paced to `bytes_per_sec` |
//!
//! A stall is what a dead host behind a live network looks like (a query
//! waits for its timeout); refuse and reset are a dead process (errors at
//! once). Everything stays on loopback: the listener binds 127.0.0.1 only.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::keys::SplitMix64;

/// Bytes moved per read; the unit latency and bandwidth apply to.
const CHUNK: usize = 16 * 1024;
/// How long a new connection may take to reach the upstream.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(5);

/// What the proxy does to traffic right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Forward untouched.
    Pass,
    /// Delay each chunk sent towards the upstream by `delay`, plus a
    /// uniform extra of up to `jitter`.
    Latency {
        /// Fixed part of the delay.
        delay: Duration,
        /// Largest random extra.
        jitter: Duration,
    },
    /// Move nothing, either way, until the fault lifts.
    Stall,
    /// Reset new connections as soon as they are accepted.
    Refuse,
    /// Reset every connection, open and new.
    Reset,
    /// Pace each direction of each connection to this rate.
    Bandwidth {
        /// Bytes per second, per direction, per connection (>= 1).
        bytes_per_sec: u64,
    },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pass => write!(f, "pass"),
            Self::Latency { delay, jitter } => write!(f, "latency {delay:?} ± {jitter:?}"),
            Self::Stall => write!(f, "stall"),
            Self::Refuse => write!(f, "refuse"),
            Self::Reset => write!(f, "reset"),
            Self::Bandwidth { bytes_per_sec } => write!(f, "bandwidth {bytes_per_sec} B/s"),
        }
    }
}

/// What the proxy has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProxyStats {
    /// Connections accepted and forwarded.
    pub forwarded: u64,
    /// New connections reset at accept (`refuse`, `reset`).
    pub refused: u64,
    /// Open connections reset (`reset`).
    pub reset: u64,
    /// Bytes forwarded towards the upstream.
    pub bytes_up: u64,
    /// Bytes forwarded back to the clients.
    pub bytes_down: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// A running proxy; stops (closing every connection) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    fault: Arc<watch::Sender<Fault>>,
    counters: Arc<Counters>,
    stop: CancellationToken,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream` (which must
    /// be loopback), passing traffic untouched until told otherwise.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        if !upstream.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the fault proxy only fronts loopback addresses, not {upstream}"),
            ));
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (fault, _) = watch::channel(Fault::Pass);
        let fault = Arc::new(fault);
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            Arc::clone(&fault),
            Arc::clone(&counters),
            stop.clone(),
        ));
        Ok(Self {
            addr,
            upstream,
            fault,
            counters,
            stop,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where traffic goes.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Switches to `fault` now, for open connections too.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Counts so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            reset: c.reset.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
        }
    }

    /// Plays `timeline` from now: each fault is set at its offset. The
    /// returned task ends after the last one (or with the proxy); abort
    /// it to stop early.
    pub fn play(&self, timeline: &[(Duration, Fault)]) -> JoinHandle<()> {
        let start = Instant::now();
        let mut steps = timeline.to_vec();
        steps.sort_by_key(|(at, _)| *at);
        let fault = Arc::clone(&self.fault);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            for (at, next) in steps {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = sleep_until(start + at) => {}
                }
                fault.send_replace(next);
            }
        })
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    fault: Arc<watch::Sender<Fault>>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let mut seed = 0x5EED_u64;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            // Out of file descriptors or similar: do not spin.
            sleep(Duration::from_millis(10)).await;
            continue;
        };
        if matches!(*fault.borrow(), Fault::Refuse | Fault::Reset) {
            let _ = client.set_zero_linger();
            counters.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        counters.forwarded.fetch_add(1, Ordering::Relaxed);
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        tokio::spawn(forward(
            client,
            upstream,
            fault.subscribe(),
            Arc::clone(&counters),
            stop.clone(),
            SplitMix64(seed),
        ));
    }
}

/// Resets both ends (RST rather than FIN), as a crashed peer would.
fn reset(a: &TcpStream, b: Option<&TcpStream>) {
    let _ = a.set_zero_linger();
    if let Some(b) = b {
        let _ = b.set_zero_linger();
    }
}

/// How long `bytes` take at `bytes_per_sec`.
fn pace(bytes: usize, bytes_per_sec: u64) -> Duration {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    Duration::from_nanos(
        u64::try_from(u128::from(bytes) * 1_000_000_000 / u128::from(bytes_per_sec.max(1)))
            .unwrap_or(u64::MAX),
    )
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut fault: watch::Receiver<Fault>,
    counters: Arc<Counters>,
    stop: CancellationToken,
    mut rng: SplitMix64,
) {
    let mut server =
        match tokio::time::timeout(UPSTREAM_CONNECT, TcpStream::connect(upstream)).await {
            Ok(Ok(server)) => server,
            _ => {
                reset(&client, None);
                return;
            }
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut up = vec![0u8; CHUNK];
    let mut down = vec![0u8; CHUNK];
    loop {
        let now = *fault.borrow_and_update();
        match now {
            Fault::Reset => {
                counters.reset.fetch_add(1, Ordering::Relaxed);
                reset(&client, Some(&server));
                return;
            }
            Fault::Stall => {
                // Read nothing: the peers' writes fill the kernel buffers
                // and then block, as with a host that stopped answering.
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = fault.changed() => if changed.is_err() { return },
                }
                continue;
            }
            _ => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = fault.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = client.read(&mut up) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                match now {
                    Fault::Latency { delay, jitter } => {
                        let extra = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
                        let extra = if extra == 0 { 0 } else { rng.below(extra.saturating_add(1)) };
                        sleep(delay + Duration::from_nanos(extra)).await;
                    }
                    Fault::Bandwidth { bytes_per_sec } => sleep(pace(n, bytes_per_sec)).await,
                    _ => {}
                }
                if server.write_all(&up[..n]).await.is_err() {
                    return;
                }
                counters.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
            }
            read = server.read(&mut down) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if let Fault::Bandwidth { bytes_per_sec } = now {
                    sleep(pace(n, bytes_per_sec)).await;
                }
                if client.write_all(&down[..n]).await.is_err() {
                    return;
                }
                counters.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
}
