//! The closed loop: `connections` keep-alive connections, each sending its
//! next request when the previous answer has arrived.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, timeout_at, Instant};

use super::config::{DrillConfig, DrillError};
use super::histogram::Histogram;
use super::keys::KeySampler;
use super::report::{DrillReport, CACHE_HEADER};
use super::targets::Target;

/// Pause after a failed connect, so a dead target is not hammered in a tight
/// loop.
pub(crate) const CONNECT_BACKOFF: Duration = Duration::from_millis(10);
pub(crate) const USER_AGENT_VALUE: &str = "rampart-drill";

/// Per-connection tallies (the open loop: the measured window's); merged
/// once, at the end.
#[derive(Default)]
pub(crate) struct ConnStats {
    pub(crate) latency: Histogram,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) by_status: BTreeMap<u16, u64>,
    pub(crate) by_header: BTreeMap<String, u64>,
    pub(crate) by_error: BTreeMap<&'static str, u64>,
}

impl ConnStats {
    pub(crate) fn failure(&mut self, kind: &'static str) {
        self.requests += 1;
        self.errors += 1;
        *self.by_error.entry(kind).or_insert(0) += 1;
    }

    pub(crate) fn response(&mut self, status: u16, cache: Option<&HeaderValue>, latency: Duration) {
        self.requests += 1;
        if status >= 500 || status == 429 {
            self.errors += 1;
        }
        *self.by_status.entry(status).or_insert(0) += 1;
        if let Some(value) = cache {
            let value = value.to_str().unwrap_or("<non-utf8>");
            match self.by_header.get_mut(value) {
                Some(n) => *n += 1,
                None => {
                    self.by_header.insert(value.to_owned(), 1);
                }
            }
        }
        self.latency
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    fn merge(&mut self, other: ConnStats) {
        self.latency.merge(&other.latency);
        self.requests += other.requests;
        self.errors += other.errors;
        for (k, v) in other.by_status {
            *self.by_status.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.by_header {
            *self.by_header.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.by_error {
            *self.by_error.entry(k).or_insert(0) += v;
        }
    }
}

/// What every connection task reads; written only through `claimed`.
struct Shared {
    deadline: Instant,
    record_from: Instant,
    request_timeout: Duration,
    max_requests: Option<u64>,
    claimed: AtomicU64,
}

impl Shared {
    /// Claims one measured request from the `max_requests` budget.
    fn claim(&self) -> bool {
        match self.max_requests {
            None => true,
            Some(max) => self.claimed.fetch_add(1, Ordering::Relaxed) < max,
        }
    }
}

/// One client connection; its driver task dies with it.
pub(crate) struct Conn {
    // `Full`, not `Empty`: the open loop may send a body (`DrillConfig::post`).
    pub(crate) sender: http1::SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

pub(crate) async fn connect(
    addr: SocketAddr,
) -> Result<Conn, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        // Errors surface to the sender; nothing to do with them here.
        let _ = connection.await;
    });
    Ok(Conn { sender, driver })
}

/// Sends one request and reads the whole response body.
pub(crate) async fn exchange(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(u16, Option<HeaderValue>), hyper::Error> {
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let cache = response.headers().get(CACHE_HEADER).cloned();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok((status, cache))
}

/// One connection's closed loop, until the deadline or the request budget.
async fn connection_loop(
    target: Arc<Target>,
    mut keys: KeySampler,
    shared: Arc<Shared>,
) -> ConnStats {
    let mut stats = ConnStats::default();
    let mut conn: Option<Conn> = None;
    // A budget ticket is held from its claim until a request is recorded, so
    // attempts that record nothing (an idle connection found closed) do not
    // use up `max_requests`.
    let mut holding_ticket = false;
    loop {
        let now = Instant::now();
        if now >= shared.deadline {
            break;
        }
        let measured = now >= shared.record_from;
        if measured && !holding_ticket {
            if !shared.claim() {
                break;
            }
            holding_ticket = true;
        }

        let fresh = conn.as_ref().is_none_or(|c| c.sender.is_closed());
        if fresh {
            conn = None;
            let request_deadline = now + shared.request_timeout;
            match timeout_at(request_deadline.min(shared.deadline), connect(target.addr)).await {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(_)) => {
                    if measured {
                        stats.failure("connect");
                        holding_ticket = false;
                    }
                    sleep_until((Instant::now() + CONNECT_BACKOFF).min(shared.deadline)).await;
                    continue;
                }
                Err(_) if request_deadline <= shared.deadline => {
                    if measured {
                        stats.failure("timeout");
                        holding_ticket = false;
                    }
                    continue;
                }
                Err(_) => break,
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match timeout_at(shared.deadline, c.sender.ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                // Closed while idle (e.g. the server's keep-alive timeout):
                // reconnect. A brand-new connection failing is an error.
                conn = None;
                if fresh {
                    if measured {
                        stats.failure("io");
                        holding_ticket = false;
                    }
                    sleep_until((Instant::now() + CONNECT_BACKOFF).min(shared.deadline)).await;
                }
                continue;
            }
            Err(_) => break,
        }

        let key = keys.next_key();
        let request = Uri::try_from(target.path_for(&key))
            .map_err(hyper::http::Error::from)
            .and_then(|uri| {
                Request::get(uri)
                    .header(HOST, target.host.clone())
                    .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
                    .body(Full::new(Bytes::new()))
            });
        let Ok(request) = request else {
            // Cannot happen for validated targets and keys; stop rather
            // than spin.
            stats.failure("request");
            break;
        };

        let start = Instant::now();
        let request_deadline = start + shared.request_timeout;
        match timeout_at(
            request_deadline.min(shared.deadline),
            exchange(&mut c.sender, request),
        )
        .await
        {
            Ok(Ok((status, cache))) => {
                let latency = start.elapsed();
                if measured {
                    stats.response(status, cache.as_ref(), latency);
                    holding_ticket = false;
                }
            }
            Ok(Err(_)) => {
                conn = None;
                if measured {
                    stats.failure("io");
                    holding_ticket = false;
                }
            }
            Err(_) if request_deadline <= shared.deadline => {
                // The connection still owes us that response: discard it.
                conn = None;
                if measured {
                    stats.failure("timeout");
                    holding_ticket = false;
                }
            }
            // The run ended mid-request: abandoned, not counted.
            Err(_) => break,
        }
    }
    stats
}

pub(crate) fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// Runs the load described by `config` and reports on it.
///
/// Validates everything first (nothing is sent if any target is not
/// loopback), checks each target accepts a TCP connection, then drives
/// `connections` closed loops until `duration` has passed or `max_requests`
/// have been measured.
pub(crate) async fn closed(config: &DrillConfig) -> Result<DrillReport, DrillError> {
    let targets = config.targets()?;
    check_reachable(&targets, config.request_timeout).await?;

    let start = Instant::now();
    let shared = Arc::new(Shared {
        deadline: start + config.duration,
        record_from: start + config.warmup,
        request_timeout: config.request_timeout,
        max_requests: config.max_requests,
        claimed: AtomicU64::new(0),
    });
    let seed = config.seed.unwrap_or_else(seed);
    let mut tasks = JoinSet::new();
    for i in 0..config.connections {
        let target = Arc::clone(&targets[i % targets.len()]);
        let keys = KeySampler::new(
            &config.keys,
            seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
        )?;
        tasks.spawn(connection_loop(target, keys, Arc::clone(&shared)));
    }
    let mut total = ConnStats::default();
    while let Some(joined) = tasks.join_next().await {
        // Dropping `tasks` on error aborts the other connections.
        let stats = joined.map_err(|e| DrillError::Internal(format!("connection task: {e}")))?;
        total.merge(stats);
    }
    let end = Instant::now().min(shared.deadline);
    let elapsed = end
        .saturating_duration_since(shared.record_from)
        .as_secs_f64();

    Ok(DrillReport {
        targets: config.targets.clone(),
        connections: config.connections,
        mode: "closed".to_owned(),
        rate: None,
        sent: total.requests,
        series: Vec::new(),
        requests: total.requests,
        errors: total.errors,
        elapsed_secs: elapsed,
        throughput_rps: if elapsed > 0.0 {
            total.requests as f64 / elapsed
        } else {
            0.0
        },
        latency_us: total.latency.percentiles(),
        by_status: total.by_status,
        by_header: total.by_header,
        by_error: total
            .by_error
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    })
}

/// Fails unless every target accepts a TCP connection within `timeout`.
pub(crate) async fn check_reachable(
    targets: &[Arc<Target>],
    timeout: Duration,
) -> Result<(), DrillError> {
    for target in targets {
        match tokio::time::timeout(timeout, TcpStream::connect(target.addr)).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(DrillError::Connect {
                    url: target.url.clone(),
                    source,
                })
            }
            Err(_) => {
                return Err(DrillError::Connect {
                    url: target.url.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
                })
            }
        }
    }
    Ok(())
}
