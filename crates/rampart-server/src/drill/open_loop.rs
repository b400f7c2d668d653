//! The open loop: requests at a constant arrival rate (`--rate N/s`),
//! whatever the server does, with latency measured from each request's
//! **intended** send time — no coordinated omission.
//!
//! Request `i` is due at `start + i / rate`. A scheduler wakes at each due
//! time (catching up in a batch when the timer wakes late, without moving
//! the due times) and spawns the request. A request takes an idle
//! keep-alive connection from its target's pool, or opens one while fewer
//! than `connections` are in use; otherwise it waits for one. Every wait —
//! for the scheduler, a connection, the server — counts in its latency,
//! because it starts at the due time: a server that stalls for a second
//! shows a second of latency for every request due in that second, as a
//! real client population would see it, not one slow sample per
//! connection as a closed loop would.
//!
//! A request gets `timeout` from its due time; past it, it is an error
//! (`timeout`). The run sends nothing due after `duration`, then waits for
//! the ones in flight (at most `timeout`).
//!
//! **Client retries** ([`ClientRetry`]): a failed answer (no response, 5xx,
//! 429) may be retried by the client, at once and up to a count (the naive
//! client of a retry storm), or only while a [`RetryBudget`] allows, after a
//! full-jitter [`Backoff`] (the guarded one). One original request is one
//! sample whatever its retries; `sent` counts HTTP requests, retries
//! included, so `sent / requests` is the amplification at the client.
//!
//! **Writes** ([`Post`]): instead of the `GET`, request `i` may be a `POST`
//! of one body, with `Idempotency-Key: {prefix}{i}` (kept on its retries).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, Uri};
use rampart::limit::{Backoff, RetryBudget, RetryBudgetConfig};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use super::config::{DrillConfig, DrillError, Post};
use super::keys::KeySampler;
use super::report::DrillReport;
use super::run::{check_reachable, connect, exchange, seed, Conn, ConnStats, USER_AGENT_VALUE};
use super::series::{Recorder, Sample};
use super::targets::Target;

/// Highest `--rate` accepted.
pub const MAX_RATE: f64 = 200_000.0;

/// What a client does after a failed answer (open loop only).
#[derive(Clone, Debug, Default)]
pub enum ClientRetry {
    /// Never retries.
    #[default]
    Never,
    /// Retries at once, up to `max` times: the naive client.
    Immediate {
        /// Retries per request at most.
        max: u32,
    },
    /// Retries up to `max` times, each only if the shared budget allows,
    /// after a full-jitter back-off: the guarded client.
    Budgeted {
        /// Retries per request at most.
        max: u32,
        /// The budget, shared by every request of the run.
        budget: RetryBudgetConfig,
        /// Delay before retry `n`.
        backoff: Backoff,
    },
}

/// One target's idle connections and its cap on connections in use.
struct Pool {
    target: Arc<Target>,
    idle: std::sync::Mutex<Vec<Conn>>,
    in_use: Semaphore,
}

impl Pool {
    fn take_idle(&self) -> Option<Conn> {
        self.idle.lock().ok()?.pop()
    }

    fn give_back(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}

/// What a request task needs.
struct Shared {
    request_timeout: Duration,
    start: Instant,
    record_from: Instant,
    retry: ClientRetry,
    budget: Option<RetryBudget>,
    post: Option<Post>,
    samples: mpsc::UnboundedSender<(Sample, Outcome)>,
}

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Request `i` of the run for `key`: the `GET`, or the configured `POST`.
fn build(
    target: &Target,
    key: &str,
    i: u64,
    post: Option<&Post>,
) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    let uri = Uri::try_from(target.path_for(key))?;
    let builder = Request::builder()
        .uri(uri)
        .header(HOST, target.host.clone())
        .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    let Some(post) = post else {
        return builder.method(Method::GET).body(Full::new(Bytes::new()));
    };
    let mut builder = builder
        .method(Method::POST)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(prefix) = &post.idempotency_prefix {
        builder = builder.header(IDEMPOTENCY_KEY, format!("{prefix}{i}"));
    }
    builder.body(Full::new(post.body.clone()))
}

/// One attempt's result.
#[derive(Clone, Debug)]
enum Outcome {
    Response {
        status: u16,
        cache: Option<HeaderValue>,
    },
    Failure(&'static str),
}

impl Outcome {
    fn is_error(&self) -> bool {
        match self {
            Self::Response { status, .. } => *status >= 500 || *status == 429,
            Self::Failure(_) => true,
        }
    }
}

/// One attempt of request `i` on `pool`, bounded by `deadline`.
async fn attempt(
    pool: &Pool,
    key: &str,
    i: u64,
    post: Option<&Post>,
    deadline: Instant,
) -> Outcome {
    let Ok(Ok(_permit)) = timeout_at(deadline, pool.in_use.acquire()).await else {
        return Outcome::Failure("timeout");
    };
    let mut conn = pool.take_idle();
    // An idle connection the server closed meanwhile: one fresh try.
    for _ in 0..2 {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match timeout_at(deadline, connect(pool.target.addr)).await {
                Ok(Ok(c)) => c,
                Ok(Err(_)) => return Outcome::Failure("connect"),
                Err(_) => return Outcome::Failure("timeout"),
            },
        };
        match timeout_at(deadline, c.sender.ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => continue,
            Err(_) => return Outcome::Failure("timeout"),
        }
        let Ok(request) = build(&pool.target, key, i, post) else {
            return Outcome::Failure("request");
        };
        return match timeout_at(deadline, exchange(&mut c.sender, request)).await {
            Ok(Ok((status, cache))) => {
                pool.give_back(c);
                Outcome::Response { status, cache }
            }
            Ok(Err(_)) => Outcome::Failure("io"),
            Err(_) => Outcome::Failure("timeout"),
        };
    }
    Outcome::Failure("io")
}

/// One original request, retries included; reports one sample.
async fn request(pool: Arc<Pool>, key: String, i: u64, due: Instant, shared: Arc<Shared>) {
    let deadline = due + shared.request_timeout;
    if let Some(budget) = &shared.budget {
        budget.deposit();
    }
    let mut sent = 0u32;
    let mut retries = 0u32;
    let outcome = loop {
        sent += 1;
        let outcome = attempt(&pool, &key, i, shared.post.as_ref(), deadline).await;
        if !outcome.is_error() || Instant::now() >= deadline {
            break outcome;
        }
        match &shared.retry {
            ClientRetry::Never => break outcome,
            ClientRetry::Immediate { max } => {
                if retries >= *max {
                    break outcome;
                }
            }
            ClientRetry::Budgeted { max, backoff, .. } => {
                let allowed = shared
                    .budget
                    .as_ref()
                    .is_some_and(|budget| budget.withdraw().is_ok());
                if retries >= *max || !allowed {
                    break outcome;
                }
                let pause = backoff.delay(retries + 1);
                if Instant::now() + pause >= deadline {
                    break outcome;
                }
                sleep(pause).await;
            }
        }
        retries += 1;
    };
    let latency_us = match &outcome {
        Outcome::Response { .. } => Some(
            u64::try_from(Instant::now().saturating_duration_since(due).as_micros())
                .unwrap_or(u64::MAX),
        ),
        Outcome::Failure(_) => None,
    };
    let stale = matches!(&outcome, Outcome::Response { cache: Some(v), .. }
        if v.as_bytes().starts_with(b"stale"));
    let second =
        u32::try_from(due.saturating_duration_since(shared.start).as_secs()).unwrap_or(u32::MAX);
    let sample = Sample {
        second,
        measured: due >= shared.record_from,
        latency_us,
        error: outcome.is_error(),
        stale,
        sent,
    };
    let _ = shared.samples.send((sample, outcome));
}

/// Runs the open loop described by `config` (`config.rate` is set).
pub(crate) async fn run(config: &DrillConfig) -> Result<DrillReport, DrillError> {
    let targets = config.targets()?;
    let rate = config
        .rate
        .ok_or_else(|| DrillError::Internal("open loop without a rate".to_owned()))?;
    check_reachable(&targets, config.request_timeout).await?;

    // Connections are shared out between the targets, at least one each.
    let per_target = (config.connections / targets.len()).max(1);
    let pools: Vec<Arc<Pool>> = targets
        .iter()
        .map(|target| {
            Arc::new(Pool {
                target: Arc::clone(target),
                idle: std::sync::Mutex::new(Vec::new()),
                in_use: Semaphore::new(per_target),
            })
        })
        .collect();
    let (samples, mut received) = mpsc::unbounded_channel();
    let start = Instant::now();
    let budget = match &config.retry {
        ClientRetry::Budgeted { budget, .. } => Some(RetryBudget::new(budget.clone())),
        _ => None,
    };
    let shared = Arc::new(Shared {
        request_timeout: config.request_timeout,
        start,
        record_from: start + config.warmup,
        retry: config.retry.clone(),
        budget,
        post: config.post.clone(),
        samples,
    });
    let collector = tokio::spawn(async move {
        let mut recorder = Recorder::new()?;
        let mut measured = ConnStats::default();
        let mut sent = 0u64;
        while let Some((sample, outcome)) = received.recv().await {
            recorder.record(&sample);
            if !sample.measured {
                continue;
            }
            sent += u64::from(sample.sent);
            match outcome {
                Outcome::Response { status, cache } => measured.response(
                    status,
                    cache.as_ref(),
                    Duration::from_micros(sample.latency_us.unwrap_or(0)),
                ),
                Outcome::Failure(kind) => measured.failure(kind),
            }
        }
        Ok::<_, DrillError>((recorder, measured, sent))
    });

    let interval = Duration::from_secs_f64(1.0 / rate);
    let end = start + config.duration;
    let mut keys = KeySampler::new(&config.keys, config.seed.unwrap_or_else(seed))?;
    let mut tasks = JoinSet::new();
    let mut i: u64 = 0;
    'schedule: loop {
        let due = start + interval.mul_f64(i as f64);
        if due >= end || config.max_requests.is_some_and(|max| i >= max) {
            break;
        }
        sleep_until(due).await;
        // Everything due by now goes out, at its own due time.
        let now = Instant::now();
        loop {
            let due = start + interval.mul_f64(i as f64);
            if due > now || due >= end || config.max_requests.is_some_and(|max| i >= max) {
                break;
            }
            let pool = Arc::clone(&pools[(i as usize) % pools.len()]);
            tasks.spawn(request(pool, keys.next_key(), i, due, Arc::clone(&shared)));
            i += 1;
            if i == u64::MAX {
                break 'schedule;
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    let scheduled_until = Instant::now();
    // Each request ends by its own deadline; this bound is a backstop.
    let drain = scheduled_until + config.request_timeout + Duration::from_secs(1);
    while let Ok(Some(_)) = timeout_at(drain, tasks.join_next()).await {}
    tasks.abort_all();
    drop(shared);
    let (recorder, measured, sent) = collector
        .await
        .map_err(|e| DrillError::Internal(format!("collector: {e}")))??;

    let window_end = end.min(scheduled_until.max(start + config.warmup));
    let elapsed = window_end
        .saturating_duration_since(start + config.warmup)
        .as_secs_f64();
    let latency_us = recorder.percentiles();
    Ok(DrillReport {
        targets: config.targets.clone(),
        connections: config.connections,
        mode: "open".to_owned(),
        rate: Some(rate),
        requests: measured.requests,
        sent,
        errors: measured.errors,
        elapsed_secs: elapsed,
        throughput_rps: if elapsed > 0.0 {
            measured.requests as f64 / elapsed
        } else {
            0.0
        },
        latency_us,
        by_status: measured.by_status,
        by_header: measured.by_header,
        by_error: measured
            .by_error
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        series: recorder.series(),
    })
}
