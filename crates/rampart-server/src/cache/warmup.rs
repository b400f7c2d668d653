//! Start-up warm-up of every resource that has a `warm` query, through the
//! library's bounded, batched, adaptive [`rampart::warm`]: keys stream from
//! the source, batches load through `load_many` (breaker and bulkhead
//! included) into the cache, one resource after another so the configured
//! bounds hold for the whole service. It gates `/readyz`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use futures_util::Stream;
use rampart::cache::TieredCache;
use rampart::warm::{warm_with_limits, WarmProgress, WarmReport};
use tokio_util::sync::CancellationToken;

use crate::cache::ceiling::{self, Ceiling};
use crate::cache::keys::Key;
use crate::cache::source::{count, warm_query_keys, warm_rows, warm_shape, WarmShape};
use crate::start_error::StartError;
use crate::state::{AppState, Resource};

/// Warms every resource in turn; returns each one's report. Marks the
/// service ready when done (the readiness gate may open earlier).
pub async fn run(
    state: &AppState,
    cancel: &CancellationToken,
) -> Vec<(String, Result<WarmReport, rampart::Error>)> {
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
        let shape = match warm_shape(&state.pool, &resource.config).await {
            Ok(shape) => shape,
            Err(e) => {
                tracing::warn!(resource = %name, error = %e, "warm query cannot be prepared");
                WarmShape::Keys
            }
        };
        // Whole rows fill L1 as read; with a shared tier they cannot (its
        // fills are fenced by generations read before the load), so the
        // rows' keys go through the read path like any key list.
        let rows = shape == WarmShape::Rows && !resource.cache.has_tier();
        if let WarmShape::KeysOfOtherColumns(why) = &shape {
            tracing::warn!(resource = %name, columns = %why,
                "warm query returns other columns than load: only its first column is used, as the key");
        }
        tracing::info!(resource = %name, expected = ?resource.warm.expected(), rows, "warm-up starting");
        let warming = async {
            if rows {
                // Taken before the query starts: an invalidation from here
                // on refuses its key's scanned row.
                let ticket = Arc::new(resource.cache.fill_ticket());
                let cache = resource.cache.clone();
                let fill_batch = move |rows: Vec<(Key, Bytes)>| {
                    let (cache, ticket) = (cache.clone(), Arc::clone(&ticket));
                    async move {
                        let scanned = rows.len();
                        let refused = cache.fill_loaded(rows, &ticket, Duration::ZERO)?;
                        if refused.is_empty() {
                            return Ok(scanned as u64);
                        }
                        // Invalidated during the scan: loaded afresh.
                        let loaded = load_keys(&cache, &refused).await.unwrap_or(0);
                        Ok((scanned - refused.len()) as u64 + loaded)
                    }
                };
                let config = &resource.config;
                let scanned = warm_rows(&state.pool, &sql, config.key_type, &config.key_column);
                warm_one(state, &resource, scanned, fill_batch, cancel).await
            } else {
                let cache = resource.cache.clone();
                let load_batch = move |keys: Vec<Key>| {
                    let cache = cache.clone();
                    async move { load_keys(&cache, &keys).await }
                };
                let keys = warm_query_keys(&state.pool, &sql, &resource.config, &shape);
                warm_one(state, &resource, keys, load_batch, cancel).await
            }
        };
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

/// Loads `keys` through the cache's read path; how many loaded, or the
/// error when none did (a failed batch to the warm-up).
async fn load_keys(cache: &TieredCache<Key, Bytes>, keys: &[Key]) -> Result<u64, rampart::Error> {
    let answers = cache.get_many(keys).await;
    let loaded = answers.iter().filter(|a| a.is_ok()).count() as u64;
    match answers.into_iter().find_map(Result::err) {
        // Nothing in the batch loaded: report the failure.
        Some(err) if loaded == 0 => Err(err),
        _ => Ok(loaded),
    }
}

/// One resource's warm-up from `items` (keys or rows) through `batch`: the
/// batch size from the config, the concurrency and rate from the limits
/// in force, which a reload may change while this runs.
async fn warm_one<K, S, F, Fut>(
    state: &AppState,
    resource: &Resource,
    items: S,
    batch: F,
    cancel: &CancellationToken,
) -> Result<WarmReport, rampart::Error>
where
    S: Stream<Item = Result<K, rampart::Error>>,
    F: Fn(Vec<K>) -> Fut,
    Fut: Future<Output = Result<u64, rampart::Error>>,
{
    let config = state.config.warmup.warm_config();
    warm_with_limits(
        items,
        batch,
        &config,
        &state.warm_limits,
        state.pressure.as_ref(),
        &resource.warm,
        cancel,
    )
    .await
}

/// A resource's source ceilings: batch reads of its warm keys
/// ([`ceiling::measure`]) and, for a warm query of whole rows, that query
/// read plainly ([`ceiling::measure_scan`]).
pub struct Ceilings {
    pub batch: Ceiling,
    pub scan: Option<Ceiling>,
}

/// Each warmed resource's source ceilings, in name order, for `rampart
/// warm --measure`.
pub async fn ceilings(state: &AppState) -> Result<Vec<(String, Ceilings)>, StartError> {
    let mut names: Vec<&String> = state.resources.keys().collect();
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let resource = &state.resources[name];
        let (pool, config) = (&state.pool, &resource.config);
        let shape = warm_shape(pool, config).await?;
        let batch_size = state.config.warmup.batch_size;
        if let Some(batch) = ceiling::measure(pool, config, &shape, batch_size).await? {
            let scan = ceiling::measure_scan(pool, config, &shape).await?;
            found.push((name.clone(), Ceilings { batch, scan }));
        }
    }
    Ok(found)
}

/// One line comparing a warm-up's rate with its source's ceilings.
pub fn compare(name: &str, ceilings: &Ceilings, report: &WarmReport) -> String {
    let rate = report.keys_done as f64 / report.elapsed.as_secs_f64().max(1e-9);
    let batch = &ceilings.batch;
    let mut line = format!(
        "{name}: source ceiling {:.0} rows/s ({} rows, plain client, one connection, \
         batch reads); warm-up {rate:.0} keys/s = {:.2} of the ceiling",
        batch.rows_per_sec(),
        batch.rows,
        rate / batch.rows_per_sec().max(1e-9),
    );
    if let Some(scan) = &ceilings.scan {
        line.push_str(&format!(
            "; the warm query read plainly {:.0} rows/s: {:.2} of that",
            scan.rows_per_sec(),
            rate / scan.rows_per_sec().max(1e-9),
        ));
    }
    line
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
