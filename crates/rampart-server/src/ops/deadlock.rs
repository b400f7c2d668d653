//! Deadlocks among the process's `parking_lot` locks (the library's guards
//! and tokio's), found by parking_lot's own detector: a background thread
//! asks it every [`CHECK_EVERY`] for cycles of threads each waiting on a
//! lock another holds, logs each cycle (thread ids and backtraces) at error
//! and counts it in `rampart_deadlocks_total`.
//!
//! Only in builds with the `deadlock-detection` feature: the detector makes
//! every `parking_lot` lock and unlock in the process keep a wait graph,
//! which the hot path should not pay for in production. Without it,
//! [`spawn`] does nothing and the counter stays 0.

use std::sync::Weak;
use std::time::Duration;

use crate::ops::metrics::Metrics;

/// How often the detector looks for cycles.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Starts the detector thread for a server whose metrics are `metrics`; it
/// ends when the server (its metrics) is gone. A no-op without the
/// `deadlock-detection` feature.
pub fn spawn(metrics: Weak<Metrics>) {
    #[cfg(feature = "deadlock-detection")]
    {
        let spawned = std::thread::Builder::new()
            .name("rampart-deadlock-detector".into())
            .spawn(move || detect(metrics));
        if let Err(err) = spawned {
            tracing::error!("the deadlock detector could not start: {err}");
        }
    }
    #[cfg(not(feature = "deadlock-detection"))]
    drop(metrics);
}

#[cfg(feature = "deadlock-detection")]
fn detect(metrics: Weak<Metrics>) {
    loop {
        std::thread::sleep(CHECK_EVERY);
        let Some(metrics) = metrics.upgrade() else {
            return;
        };
        let cycles = parking_lot::deadlock::check_deadlock();
        for (i, cycle) in cycles.iter().enumerate() {
            let threads: Vec<String> = cycle
                .iter()
                .map(|t| format!("thread {:?}:\n{:?}", t.thread_id(), t.backtrace()))
                .collect();
            tracing::error!(
                cycle = i,
                threads = cycle.len(),
                "deadlock: {} threads wait on each other's locks\n{}",
                cycle.len(),
                threads.join("\n")
            );
        }
        metrics
            .deadlocks
            .inc_by(u64::try_from(cycles.len()).unwrap_or(u64::MAX));
    }
}
