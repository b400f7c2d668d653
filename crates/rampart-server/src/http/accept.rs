//! The accept loop: a cap on open connections, a pause after failed
//! accepts, and a graceful drain on stop.
//!
//! Past `server.max_connections` a new connection is accepted and closed at
//! once: left in the kernel's backlog it would still hold a descriptor and
//! look, to the client, like a server that hangs. A failed accept (out of
//! file descriptors, memory) is followed by a pause that grows while it
//! keeps failing, logged once per interval: retrying at once would spin a
//! core and write a log line per retry while nothing can succeed.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::layers::App;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cache::miss_budget;
use crate::http::connection::{self, Limits};
use crate::ops::metrics::Metrics;

/// The accept loop's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_connections: usize,
    pub connection: Limits,
    /// Run each connection with its client address set, for the miss
    /// budget (`cache/miss_budget.rs`); off, nothing is added per poll.
    pub charge_misses: bool,
}

/// Accepts and serves connections until `stop`, then stops accepting
/// (the listener is closed: new connections are refused by the kernel),
/// lets every connection finish its in-flight requests and returns.
pub async fn serve(
    listener: TcpListener,
    app: App,
    settings: Settings,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> io::Result<()> {
    // Owned here, so that aborting this task (a drain past its grace)
    // aborts every connection with it.
    let mut connections = JoinSet::new();
    let mut backoff = Backoff::default();
    let max_open = i64::try_from(settings.max_connections).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    if metrics.connections_open.get() >= max_open {
                        metrics.connections_refused.inc();
                        drop(stream);
                        continue;
                    }
                    // Small answers go out at once rather than waiting for
                    // an ACK (Nagle); a failure only costs latency.
                    let _ = stream.set_nodelay(true);
                    let open = OpenConnection::new(Arc::clone(&metrics));
                    let (app, metrics, stop) = (app.clone(), Arc::clone(&metrics), stop.clone());
                    let serving = async move {
                        connection::serve(stream, app, settings.connection, metrics, stop).await;
                        drop(open);
                    };
                    if settings.charge_misses {
                        connections.spawn(miss_budget::serving(peer.ip(), serving));
                    } else {
                        connections.spawn(serving);
                    }
                }
                Err(err) if is_per_connection(&err) => {}
                Err(err) => {
                    metrics.accept_errors.inc();
                    let pause = backoff.failed(&err, Instant::now());
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Counts a connection in `rampart_connections_open` while it lives
/// (aborted connections included: the count is kept in `Drop`).
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> OpenConnection {
        metrics.connections_open.inc();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

/// Errors about one connection that went away before it was accepted: the
/// next accept may well succeed, so no pause.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// The pause after failed accepts: 10 ms, doubling to 1 s while accepts
/// keep failing, back to 10 ms after one succeeds. Logs at most one line
/// per [`Backoff::LOG_INTERVAL`], saying how many failures it did not log.
#[derive(Debug)]
pub struct Backoff {
    pause: Duration,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            pause: Self::FIRST,
            last_log: None,
            unlogged: 0,
        }
    }
}

impl Backoff {
    /// The first pause.
    pub const FIRST: Duration = Duration::from_millis(10);
    /// The longest pause.
    pub const MAX: Duration = Duration::from_secs(1);
    /// At most one log line per this.
    pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

    /// An accept succeeded: the next failure pauses briefly again.
    pub fn succeeded(&mut self) {
        self.pause = Self::FIRST;
    }

    /// An accept failed at `now` with `err`: how long to pause. Logs if the
    /// last line is older than the log interval.
    pub fn failed(&mut self, err: &io::Error, now: Instant) -> Duration {
        let pause = self.pause;
        self.pause = (self.pause * 2).min(Self::MAX);
        let due = self
            .last_log
            .is_none_or(|last| now.duration_since(last) >= Self::LOG_INTERVAL);
        if due {
            tracing::warn!(
                %err,
                ?pause,
                not_logged_since_last = self.unlogged,
                "accepting a connection failed; pausing (growing while it fails)"
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        pause
    }

    /// Failures not logged since the last line.
    pub fn unlogged(&self) -> u64 {
        self.unlogged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_a_bound_and_reset_after_a_success() {
        let mut backoff = Backoff::default();
        let err = io::Error::from_raw_os_error(24); // EMFILE
        let start = Instant::now();
        let pauses: Vec<Duration> = (0..10).map(|_| backoff.failed(&err, start)).collect();
        assert_eq!(pauses[0], Backoff::FIRST);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]), "{pauses:?}");
        assert_eq!(pauses[9], Backoff::MAX);
        assert!(pauses.iter().all(|p| *p <= Backoff::MAX));
        // Ten failures within the interval: one logged, nine not.
        assert_eq!(backoff.unlogged(), 9);
        backoff.succeeded();
        assert_eq!(backoff.failed(&err, start), Backoff::FIRST);
        // After the interval the next failure logs again.
        backoff.failed(&err, start + Backoff::LOG_INTERVAL);
        assert_eq!(backoff.unlogged(), 0);
    }

    #[test]
    fn vanished_connections_are_not_paused_for() {
        assert!(is_per_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(!is_per_connection(&io::Error::from_raw_os_error(24)));
    }
}
