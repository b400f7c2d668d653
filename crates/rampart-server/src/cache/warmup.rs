//! Start-up warm-up of every resource that has a `warm` query, through the
//! library's bounded, batched, adaptive [`rampart::warm`]: keys stream from
//! the source, batches load through `load_many` (breaker and bulkhead
//! included) into the cache, one resource after another so the configured
//! bounds hold for the whole service. It gates `/readyz`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rampart::warm::{warm_with_limits, WarmProgress, WarmReport};
use tokio_util::sync::CancellationToken;

use crate::cache::ceiling::{self, Ceiling};
use crate::cache::keys::Key;
use crate::cache::source::{count, warm_keys};
use crate::start_error::StartError;
use crate::state::AppState;

/// Warms every resource in turn; returns each one's report. Marks the
/// service ready when done (the readiness gate may open earlier).
pub async fn run(
    state: &AppState,
    cancel: &CancellationToken,
) -> Vec<(String, Result<WarmReport, rampart::Error>)> {
    let config = state.config.warmup.warm_config();
    let mut reports = Vec::new();
    let mut names: Vec<&String> = state.resources.keys().collect();
    names.sort();
    for name in names {
        let resource = Arc::clone(&state.resources[name]);
        let Some(sql) = resource.config.warm.clone() else {
            continue;
        };
        if cancel.is_cancelled() {
            break;
        }
        if let Some(sql) = &resource.config.warm_count {
            // No total is no progress fraction, not a failed warm-up.
            if let Ok(total) = count(&state.pool, sql).await {
                resource.warm.set_expected(total);
            }
        }
        tracing::info!(resource = %name, expected = ?resource.warm.expected(), "warm-up starting");
        let cache = resource.cache.clone();
        let load_batch = move |keys: Vec<Key>| {
            let cache = cache.clone();
            async move {
                let answers = cache.get_many(&keys).await;
                let loaded = answers.iter().filter(|a| a.is_ok()).count() as u64;
                match answers.into_iter().find_map(Result::err) {
                    // Nothing in the batch loaded: report the failure.
                    Some(err) if loaded == 0 => Err(err),
                    _ => Ok(loaded),
                }
            }
        };
        let keys = warm_keys(&state.pool, &sql, resource.config.key_type);
        // The limits in force, not `config`'s: a reload may change them
        // while this runs.
        let warming = warm_with_limits(
            keys,
            load_batch,
            &config,
            &state.warm_limits,
            state.pressure.as_ref(),
            &resource.warm,
            cancel,
        );
        let report = log_progress_while(name, &resource.warm, warming).await;
        match &report {
            Ok(r) => tracing::info!(
                resource = %name,
                keys = r.keys_done,
                failed = r.keys_failed,
                secs = r.elapsed.as_secs_f64(),
                cancelled = r.cancelled,
                "warm-up finished"
            ),
            Err(e) => tracing::warn!(resource = %name, error = %e, "warm-up stopped"),
        }
        reports.push((name.clone(), report));
    }
    state.readiness.warmed();
    reports
}

/// Each warmed resource's source ceiling ([`ceiling::measure`]), in name
/// order, for `rampart warm --measure`.
pub async fn ceilings(state: &AppState) -> Result<Vec<(String, Ceiling)>, StartError> {
    let mut names: Vec<&String> = state.resources.keys().collect();
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let resource = &state.resources[name];
        let batch = state.config.warmup.batch_size;
        if let Some(c) = ceiling::measure(&state.pool, &resource.config, batch).await? {
            found.push((name.clone(), c));
        }
    }
    Ok(found)
}

/// One line comparing a warm-up's rate with its source's ceiling.
pub fn compare(name: &str, ceiling: &Ceiling, report: &WarmReport) -> String {
    let rate = report.keys_done as f64 / report.elapsed.as_secs_f64().max(1e-9);
    format!(
        "{name}: source ceiling {:.0} rows/s ({} rows, plain client, one connection); \
         warm-up {rate:.0} keys/s = {:.2} of the ceiling",
        ceiling.rows_per_sec(),
        ceiling.rows,
        rate / ceiling.rows_per_sec().max(1e-9),
    )
}

/// How often a running warm-up logs its progress.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);

/// Runs `warming`, logging its progress every few seconds meanwhile.
async fn log_progress_while<T>(
    name: &str,
    progress: &WarmProgress,
    warming: impl Future<Output = T>,
) -> T {
    let mut warming = std::pin::pin!(warming);
    let mut ticks = tokio::time::interval(PROGRESS_LOG_EVERY);
    ticks.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            result = &mut warming => return result,
            _ = ticks.tick() => tracing::info!(
                resource = %name,
                done = progress.keys_done(),
                failed = progress.keys_failed(),
                expected = ?progress.expected(),
                concurrency = progress.concurrency(),
                "warm-up progress"
            ),
        }
    }
}
