//! Prometheus metrics, one registry per server (no process-wide globals, so
//! several servers in one test process do not mix their numbers).
//!
//! Counters and histograms are updated where things happen; gauges that
//! mirror live state (pool, breakers, warm-up) are refreshed at scrape time.
//! Names are listed in README.md.

mod children;
mod locks;
pub mod runtime;

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use children::Children;

/// Buckets for latencies from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// Answers per resource by where they came from (`x-cache`) or error code.
    pub requests: IntCounterVec,
    /// Source load latency per resource and outcome.
    pub load_duration: HistogramVec,
    /// Keys being loaded right now per resource.
    pub loads_in_flight: IntGaugeVec,
    pub loads_waiting: IntGaugeVec,
    /// Source pool: connections by state, and the configured size.
    pub pool_connections: IntGaugeVec,
    pub pool_size: IntGauge,
    /// How long loads waited for a source connection.
    pub pool_wait: HistogramVec,
    /// Breaker state per resource: 0 closed, 1 open, 2 half-open,
    /// 3 forced open, 4 disabled.
    pub breaker_state: IntGaugeVec,
    pub breaker_transitions: IntCounterVec,
    /// Requests refused by load shedding, requests timed out.
    pub shed: IntCounter,
    pub timeouts: IntCounter,
    /// Handler panics contained, by route template.
    pub panics: IntCounterVec,
    /// Connections open now.
    pub connections_open: IntGauge,
    /// Connections closed at once because `server.max_connections` were open.
    pub connections_refused: IntCounter,
    /// Connections closed by the server for taking too long, by phase:
    /// `header` (a request head not complete in time), `idle` (no request
    /// on a kept-alive connection), `stuck` (a request's exchange not done).
    pub connection_timeouts: IntCounterVec,
    /// Failed accepts (out of file descriptors, memory …), each followed by
    /// a pause.
    pub accept_errors: IntCounter,
    /// Lock cycles found by the deadlock detector (`ops/deadlock.rs`;
    /// always 0 without the `deadlock-detection` feature).
    pub deadlocks: IntCounter,
    /// Source-load bulkhead per resource: slots in use, callers queued,
    /// and its size.
    pub bulkhead: IntGaugeVec,
    /// Warm-up progress per resource.
    pub warm_keys: IntGaugeVec,
    pub warm_concurrency: IntGaugeVec,
    /// 1 once `/readyz` is ready.
    pub ready: IntGauge,
    /// 1 while the Redis notice subscription is up (absent without Redis).
    pub redis_subscribed: IntGauge,
    /// Times the notice subscription was lost and came back (each time
    /// every L1 was cleared, as notices may have been missed).
    pub redis_subscription_gaps: IntGauge,
    /// Existence filters per resource (refreshed at scrape): keys held,
    /// bytes, checks and rejections since start, the false-positive rate
    /// estimated from the fill, seconds since the last completed build,
    /// and 1 once the first build completed.
    pub filter_keys: IntGaugeVec,
    pub filter_bytes: IntGaugeVec,
    pub filter_checks: IntGaugeVec,
    pub filter_rejections: IntGaugeVec,
    pub filter_false_positive_rate: GaugeVec,
    pub filter_age_seconds: GaugeVec,
    pub filter_ready: IntGaugeVec,
    /// Keys streamed into the running build so far (0 when none runs).
    pub filter_build_keys: IntGaugeVec,
    /// Misses refused by the per-client miss budget (429).
    pub misses_refused: IntGauge,
    /// HTTP latency by route template and status.
    pub http_duration: HistogramVec,
    /// `http_duration`'s children by route, then status (request path).
    http_children: Children<Children<Histogram, MAX_STATUSES>, MAX_ROUTES>,
    /// `requests`' children by resource, then outcome (request path).
    answer_children: Children<Children<IntCounter, MAX_OUTCOMES>, MAX_RESOURCES>,
}

/// Bounds on the request path's label caches (see `metrics/children.rs`):
/// well above what the router and `Error::code` can produce, and past them
/// a label still counts, through `with_label_values`.
const MAX_ROUTES: usize = 64;
const MAX_STATUSES: usize = 16;
const MAX_RESOURCES: usize = 32;
const MAX_OUTCOMES: usize = 32;

/// A route template resolved once per request, before the request moves
/// on, to its place in the label cache (see [`Metrics::http_route`]).
pub enum HttpRoute {
    Cached(usize),
    /// Past the cache's bound: the template itself.
    Other(Box<str>),
}

/// Registers a metric built from a static definition. A failure is a
/// programming error (a bad name, a duplicate) that every test starting a
/// server would catch, never a runtime input.
fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("static metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

fn histogram_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    register(r, HistogramVec::new(opts, labels))
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help))
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help))
}

impl Default for Metrics {
    fn default() -> Self {
        let r = Registry::new();
        Metrics {
            requests: counter_vec(
                &r,
                "rampart_requests_total",
                "Answers per resource by x-cache value, or by error code.",
                &["resource", "x_cache"],
            ),
            load_duration: histogram_vec(
                &r,
                "rampart_load_duration_seconds",
                "Source loads per resource and outcome (ok, error).",
                &["resource", "outcome"],
            ),
            loads_in_flight: gauge_vec(
                &r,
                "rampart_loads_in_flight",
                "Keys being loaded from the source right now.",
                &["resource"],
            ),
            loads_waiting: gauge_vec(
                &r,
                "rampart_loads_waiting",
                "Callers waiting on a running load (coalesced onto it) right now.",
                &["resource"],
            ),
            pool_connections: gauge_vec(
                &r,
                "rampart_source_pool_connections",
                "Source pool connections by state (idle, in_use).",
                &["state"],
            ),
            pool_size: gauge(
                &r,
                "rampart_source_pool_size",
                "Configured source pool size.",
            ),
            pool_wait: histogram_vec(
                &r,
                "rampart_source_pool_wait_seconds",
                "Time loads waited for a source connection.",
                &["resource"],
            ),
            breaker_state: gauge_vec(
                &r,
                "rampart_breaker_state",
                "Breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled.",
                &["dependency"],
            ),
            breaker_transitions: counter_vec(
                &r,
                "rampart_breaker_transitions_total",
                "Breaker state changes.",
                &["dependency", "from", "to"],
            ),
            shed: counter(
                &r,
                "rampart_shed_total",
                "Requests refused by load shedding.",
            ),
            panics: counter_vec(
                &r,
                "rampart_panics_total",
                "Handler panics contained, by route template.",
                &["route"],
            ),
            connections_open: gauge(&r, "rampart_connections_open", "Connections open now."),
            connections_refused: counter(
                &r,
                "rampart_connections_refused_total",
                "Connections closed at once: server.max_connections were open.",
            ),
            connection_timeouts: counter_vec(
                &r,
                "rampart_connection_timeouts_total",
                "Connections closed by the server, by phase (header, idle, stuck).",
                &["phase"],
            ),
            accept_errors: counter(
                &r,
                "rampart_accept_errors_total",
                "Failed accepts (file descriptors, memory), each followed by a pause.",
            ),
            timeouts: counter(
                &r,
                "rampart_timeouts_total",
                "Requests past the request timeout.",
            ),
            deadlocks: counter(
                &r,
                "rampart_deadlocks_total",
                "Lock cycles found by the deadlock detector (builds with the deadlock-detection feature).",
            ),
            bulkhead: gauge_vec(
                &r,
                "rampart_bulkhead",
                "Source-load bulkhead per resource by state (in_flight, queued, max).",
                &["resource", "state"],
            ),
            warm_keys: gauge_vec(
                &r,
                "rampart_warmup_keys",
                "Warm-up keys per resource by state (done, failed, expected).",
                &["resource", "state"],
            ),
            warm_concurrency: gauge_vec(
                &r,
                "rampart_warmup_concurrency",
                "Warm-up batches allowed at once right now (adaptive).",
                &["resource"],
            ),
            ready: gauge(&r, "rampart_ready", "1 when /readyz answers ready."),
            redis_subscribed: gauge(
                &r,
                "rampart_redis_subscribed",
                "1 while the Redis notice subscription (invalidations, lease releases) is up.",
            ),
            redis_subscription_gaps: gauge(
                &r,
                "rampart_redis_subscription_gaps_total",
                "Notice subscription losses and recoveries (each clears L1).",
            ),
            filter_keys: gauge_vec(
                &r,
                "rampart_filter_keys",
                "Keys in the resource's existence filter.",
                &["resource"],
            ),
            filter_bytes: gauge_vec(
                &r,
                "rampart_filter_bytes",
                "Memory of the resource's existence filter.",
                &["resource"],
            ),
            filter_checks: gauge_vec(
                &r,
                "rampart_filter_checks_total",
                "Misses checked against the existence filter.",
                &["resource"],
            ),
            filter_rejections: gauge_vec(
                &r,
                "rampart_filter_rejections_total",
                "Misses the existence filter answered certainly absent (no load).",
                &["resource"],
            ),
            filter_false_positive_rate: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "rampart_filter_false_positive_rate",
                        "The existence filter's false-positive rate, estimated from its fill.",
                    ),
                    &["resource"],
                ),
            ),
            filter_age_seconds: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "rampart_filter_age_seconds",
                        "Seconds since the existence filter in use was built.",
                    ),
                    &["resource"],
                ),
            ),
            filter_ready: gauge_vec(
                &r,
                "rampart_filter_ready",
                "1 once the resource's first existence filter build completed.",
                &["resource"],
            ),
            filter_build_keys: gauge_vec(
                &r,
                "rampart_filter_build_keys",
                "Keys streamed into the existence filter build running now (0 when none runs).",
                &["resource"],
            ),
            misses_refused: gauge(
                &r,
                "rampart_miss_budget_refused_total",
                "Misses refused with 429 by the per-client miss budget.",
            ),
            http_duration: histogram_vec(
                &r,
                "rampart_http_request_duration_seconds",
                "HTTP requests by route template and status.",
                &["route", "status"],
            ),
            http_children: Children::default(),
            answer_children: Children::default(),
            registry: {
                register_process_panics(&r);
                // Outside a runtime (a unit test) there is none to read.
                if let Some(runtime) = runtime::RuntimeCollector::for_current() {
                    register(&r, Ok(runtime));
                }
                register(&r, locks::LockWaitCollector::new());
                r
            },
        }
    }
}

/// `rampart_process_panics_total`: every panic in the process (handlers,
/// background tasks, any thread), as counted by the panic hook. Read from
/// the hook's one atomic at scrape time, so panicking costs no metric work.
#[derive(Clone)]
struct ProcessPanics {
    desc: prometheus::core::Desc,
}

impl Collector for ProcessPanics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        match IntCounter::new(PROCESS_PANICS.0, PROCESS_PANICS.1) {
            Ok(counter) => {
                counter.inc_by(crate::ops::panic_hook::total());
                counter.collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

const PROCESS_PANICS: (&str, &str) = (
    "rampart_process_panics_total",
    "Every panic in the process (any thread), counted by rampart's panic hook.",
);

fn register_process_panics(registry: &Registry) {
    let desc = prometheus::core::Desc::new(
        PROCESS_PANICS.0.to_owned(),
        PROCESS_PANICS.1.to_owned(),
        Vec::new(),
        std::collections::HashMap::new(),
    );
    register(registry, desc.map(|desc| ProcessPanics { desc }));
}

impl Metrics {
    /// Counts one answer for `resource` in `rampart_requests_total`:
    /// `outcome` is the `x-cache` value or the error code.
    pub fn count_answer(&self, resource: &str, outcome: &str) {
        let make = || self.requests.with_label_values(&[resource, outcome]);
        let cached = self
            .answer_children
            .get_or_insert(resource, Children::default)
            .and_then(|outcomes| outcomes.get_or_insert(outcome, make));
        match cached {
            Some(counter) => counter.inc(),
            None => make().inc(),
        }
    }

    /// `route` (a matched template, or `unmatched`) for
    /// [`Metrics::observe_http`] and [`Metrics::count_panic`].
    pub fn http_route(&self, route: &str) -> HttpRoute {
        match self.http_children.index_of(route, Children::default) {
            Some(index) => HttpRoute::Cached(index),
            None => HttpRoute::Other(route.into()),
        }
    }

    /// Records one HTTP answer's latency by route and status.
    pub fn observe_http(&self, route: &HttpRoute, status: &str, seconds: f64) {
        let (name, statuses) = match route {
            HttpRoute::Cached(index) => match self.http_children.at(*index) {
                Some((name, statuses)) => (name, Some(statuses)),
                None => return,
            },
            HttpRoute::Other(name) => (&**name, None),
        };
        let make = || self.http_duration.with_label_values(&[name, status]);
        match statuses.and_then(|s| s.get_or_insert(status, make)) {
            Some(histogram) => histogram.observe(seconds),
            None => make().observe(seconds),
        }
    }

    /// Counts a contained panic on `route` (rare: no cache).
    pub fn count_panic(&self, route: &HttpRoute) {
        let name = match route {
            HttpRoute::Cached(index) => self.http_children.at(*index).map(|(name, _)| name),
            HttpRoute::Other(name) => Some(&**name),
        };
        if let Some(name) = name {
            self.panics.with_label_values(&[name]).inc();
        }
    }

    /// The registry, for a capability that registers its own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric's current value (for the dashboard's sampler).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
