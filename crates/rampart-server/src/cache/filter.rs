//! Each resource's existence filter (`[resource.filter]`): built at start
//! from the `keys` query, streamed; rebuilt every `rebuild_interval` and on
//! demand (`POST /v1/filter/{resource}/rebuild`, admin token), so rows
//! created behind rampart's back are absorbed. Until the first build
//! completes the filter answers "maybe" and misses go to the source as
//! without it; `/readyz` waits for that build at most `ready_wait`.
//!
//! Keys reach the filter also between builds: every load or L2 read that
//! finds a row and every invalidation (the library does it), so a row
//! written through rampart, or invalidated after a direct write, is never
//! answered "not found".

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use futures_util::StreamExt;
use rampart::existence::{ExistenceFilter, FilterSize, Rebuild};
use tokio_util::sync::CancellationToken;

use crate::cache::source::warm_keys;
use crate::error::Error;
use crate::http::extract::Path;
use crate::state::{AppState, Resource};

/// How soon a failed build is tried again.
const FAILED_BUILD_RETRY: Duration = Duration::from_secs(30);

/// How often a running build logs its progress.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);

/// Builds every filtered resource's filter, then rebuilds each on its
/// interval, until `stop`.
pub async fn run(state: AppState, stop: CancellationToken) {
    let mut tasks = tokio::task::JoinSet::new();
    for resource in state.resources.values() {
        let (Some(config), Some(_)) = (&resource.config.filter, resource.cache.existence()) else {
            continue;
        };
        let interval = config.rebuild_interval;
        let (state, resource, stop) = (state.clone(), Arc::clone(resource), stop.clone());
        tasks.spawn(async move {
            loop {
                let built = match start(&resource) {
                    Ok(rebuild) => {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            built = build(&state, &resource, rebuild) => built,
                        }
                    }
                    // An on-demand rebuild is running: it does this one's work.
                    Err(err) => {
                        tracing::debug!(resource = %resource.config.name, error = %err, "filter rebuild skipped");
                        true
                    }
                };
                // A failed build (the source down at start, say) is retried
                // soon, not after a whole interval: until one completes the
                // resource has no penetration defence.
                let wait = match (built, interval.is_zero()) {
                    (false, _) => FAILED_BUILD_RETRY,
                    (true, true) => return,
                    (true, false) => interval,
                };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Begins a rebuild of `resource`'s filter, sized for its configured
/// capacity or, if it has grown past it, a quarter more than it holds.
pub fn start(resource: &Resource) -> Result<Rebuild, rampart::Error> {
    let (Some(config), Some(filter)) = (&resource.config.filter, resource.cache.existence()) else {
        return Err(rampart::Error::invalid_config(
            "this resource has no filter",
        ));
    };
    filter.begin_rebuild(size_for(config.size(), filter))
}

fn size_for(configured: FilterSize, filter: &ExistenceFilter) -> FilterSize {
    let held = filter.stats().keys;
    FilterSize {
        capacity: configured.capacity.max(held.saturating_add(held / 4)),
        ..configured
    }
}

/// Streams the resource's `keys` query into `rebuild` and puts the new
/// filter in use; on a source error the rebuild is abandoned (the filter in
/// use stays) and the error logged. Whether the new filter is in use.
pub async fn build(state: &AppState, resource: &Resource, rebuild: Rebuild) -> bool {
    let name = &resource.config.name;
    let Some(config) = &resource.config.filter else {
        return false;
    };
    let started = Instant::now();
    tracing::info!(resource = %name, "existence filter build starting");
    let mut keys = std::pin::pin!(warm_keys(
        &state.pool,
        &config.keys,
        resource.config.key_type
    ));
    let mut logged = Instant::now();
    while let Some(key) = keys.next().await {
        match key {
            Ok(key) => rebuild.insert(&key),
            Err(err) => {
                tracing::warn!(resource = %name, error = %err, keys = rebuild.keys(), "existence filter build failed; the filter in use stays");
                return false;
            }
        }
        if logged.elapsed() >= PROGRESS_LOG_EVERY {
            logged = Instant::now();
            tracing::info!(resource = %name, keys = rebuild.keys(), "existence filter build progress");
        }
    }
    let keys = rebuild.keys();
    rebuild.finish();
    tracing::info!(resource = %name, keys, secs = started.elapsed().as_secs_f64(), "existence filter built");
    true
}

/// `POST /v1/filter/{resource}/rebuild` (admin token): starts a rebuild of
/// the resource's existence filter from its `keys` query and answers 202 at
/// once; the build runs in the background (watch
/// `rampart_filter_age_seconds`). 409 while one is already running.
pub async fn rebuild(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), Error> {
    let resource = Arc::clone(state.resource(&name)?);
    let Some(filter) = resource.cache.existence() else {
        return Err(Error::NoFilter(name));
    };
    if filter.stats().rebuilding {
        return Err(Error::RebuildRunning(name));
    }
    let rebuild = start(&resource).map_err(|_| Error::RebuildRunning(name.clone()))?;
    let keys = filter.stats().keys;
    tokio::spawn(async move { build(&state, &resource, rebuild).await });
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "resource": name, "rebuilding": true, "keys": keys })),
    ))
}
