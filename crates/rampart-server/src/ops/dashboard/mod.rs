//! `/dashboard`: a live page served by rampart itself. A sampler reads the
//! service's own metrics once a second and keeps the last
//! [`HISTORY_SECONDS`] of per-second stats (see [`stats`]) in memory, so a
//! page opened late still shows the run-up. The page (one HTML file with
//! its script and style inline, embedded in the binary: no CDN, no build
//! step) loads that history from `/dashboard/stats` (JSON) and then follows
//! `/dashboard/events` (server-sent events, one per second).
//!
//! The sampler runs only while the router that serves these routes exists:
//! it holds the dashboard weakly and stops when the server is gone.

pub mod stats;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::watch;

use crate::state::AppState;
use stats::Reading;

/// Seconds of per-second stats kept for a page opened late.
pub const HISTORY_SECONDS: usize = 300;

/// The page: HTML, script and style in one file.
const PAGE: &str = include_str!("page.html");

/// The live state behind the routes.
pub struct Dashboard {
    state: AppState,
    history: Mutex<VecDeque<Arc<Value>>>,
    latest: watch::Sender<Option<Arc<Value>>>,
}

impl Dashboard {
    fn history(&self) -> Vec<Arc<Value>> {
        match self.history.lock() {
            Ok(history) => history.iter().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().iter().cloned().collect(),
        }
    }

    fn push(&self, entry: Arc<Value>) {
        let mut history = match self.history.lock() {
            Ok(history) => history,
            Err(poisoned) => poisoned.into_inner(),
        };
        if history.len() == HISTORY_SECONDS {
            history.pop_front();
        }
        history.push_back(Arc::clone(&entry));
        drop(history);
        self.latest.send_replace(Some(entry));
    }
}

/// The dashboard's routes, over `state`; starts the sampler.
pub fn routes<S>(state: &AppState) -> Router<S> {
    let (latest, _) = watch::channel(None);
    let dashboard = Arc::new(Dashboard {
        state: state.clone(),
        history: Mutex::new(VecDeque::with_capacity(HISTORY_SECONDS)),
        latest,
    });
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(sample(Arc::downgrade(&dashboard)));
    }
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/stats", get(history))
        .route("/dashboard/events", get(events))
        .with_state(dashboard)
}

/// Once a second: read the metrics, derive the second's stats, keep them.
async fn sample(dashboard: Weak<Dashboard>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut before: Option<(tokio::time::Instant, Reading)> = None;
    loop {
        ticks.tick().await;
        let Some(dashboard) = dashboard.upgrade() else {
            return;
        };
        let state = &dashboard.state;
        state.refresh_gauges();
        let now = Reading::from_families(&state.metrics.gather());
        let at = tokio::time::Instant::now();
        if let Some((then, previous)) = &before {
            let unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let seconds = at.duration_since(*then).as_secs_f64();
            let entry = stats::stats(previous, &now, seconds, unix_ms, state.is_ready());
            dashboard.push(Arc::new(entry));
        }
        before = Some((at, now));
    }
}

/// `GET /dashboard`: the page.
async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /dashboard/stats`: the kept history, oldest first.
async fn history(State(dashboard): State<Arc<Dashboard>>) -> Json<Value> {
    let history: Vec<Value> = dashboard
        .history()
        .iter()
        .map(|entry| Value::clone(entry))
        .collect();
    Json(serde_json::json!({
        "interval_seconds": 1,
        "history_seconds": HISTORY_SECONDS,
        "history": history,
    }))
}

/// `GET /dashboard/events`: each new second's stats as an SSE `stats`
/// event, for `server.request_timeout`; then the stream ends and the
/// browser's `EventSource` reconnects after [`RECONNECT`]. Ending keeps
/// every request within the connection watchdog's bound and lets a
/// graceful shutdown drain; the page refills any second it missed from
/// `/dashboard/stats`.
async fn events(
    State(dashboard): State<Arc<Dashboard>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let updates = dashboard.latest.subscribe();
    let until = tokio::time::Instant::now() + dashboard.state.config.server.request_timeout;
    drop(dashboard);
    let first = Event::default()
        .retry(RECONNECT)
        .comment("rampart dashboard");
    let first = futures_util::stream::once(async move { Ok(first) });
    let stream = futures_util::stream::unfold(updates, move |mut updates| async move {
        loop {
            // The sender lives as long as the dashboard; gone, or past
            // this stream's time, the stream ends.
            tokio::time::timeout_at(until, updates.changed())
                .await
                .ok()?
                .ok()?;
            let entry = updates.borrow_and_update().clone();
            if let Some(entry) = entry {
                let event = Event::default().event("stats").data(entry.to_string());
                return Some((Ok(event), updates));
            }
        }
    });
    Sse::new(futures_util::StreamExt::chain(first, stream)).keep_alive(KeepAlive::default())
}

/// How soon a browser reconnects when an events stream ends.
pub const RECONNECT: Duration = Duration::from_millis(250);
