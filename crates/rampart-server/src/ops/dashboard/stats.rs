//! One second of the service, from two readings of its metrics a second
//! apart: rates, ratios and latency quantiles, as the dashboard shows them.
//! Pure functions over the readings, so they are tested without a server.

use std::collections::BTreeMap;

use prometheus::proto::{MetricFamily, MetricType};
use serde_json::{json, Value};

/// One series of one reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// A counter's or gauge's value; a histogram's count.
    pub value: f64,
    /// A histogram's sum.
    pub sum: f64,
    /// A histogram's buckets: (upper bound, cumulative count), `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
}

impl Series {
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Every `rampart_` series at one moment.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub series: Vec<Series>,
}

impl Reading {
    pub fn from_families(families: &[MetricFamily]) -> Reading {
        let mut series = Vec::new();
        for family in families {
            let name = family.name();
            if !name.starts_with("rampart_") {
                continue;
            }
            for metric in family.get_metric() {
                let labels = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_owned(), l.value().to_owned()))
                    .collect();
                let (value, sum, buckets) = match family.get_field_type() {
                    MetricType::COUNTER => (metric.get_counter().get_value(), 0.0, Vec::new()),
                    MetricType::GAUGE => (metric.get_gauge().get_value(), 0.0, Vec::new()),
                    MetricType::HISTOGRAM => {
                        let h = metric.get_histogram();
                        let count = h.get_sample_count() as f64;
                        let mut buckets: Vec<(f64, f64)> = h
                            .get_bucket()
                            .iter()
                            .map(|b| (b.upper_bound(), b.cumulative_count() as f64))
                            .collect();
                        buckets.push((f64::INFINITY, count));
                        (count, h.get_sample_sum(), buckets)
                    }
                    _ => continue,
                };
                series.push(Series {
                    name: name.to_owned(),
                    labels,
                    value,
                    sum,
                    buckets,
                });
            }
        }
        Reading { series }
    }

    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Series> + 'a {
        self.series.iter().filter(move |s| s.name == name)
    }

    fn previous_of(&self, series: &Series) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.name == series.name && s.labels == series.labels)
    }
}

/// A histogram's increase between two readings, summed over the series
/// `keep` selects: (count, sum, buckets).
fn histogram_increase(
    before: &Reading,
    now: &Reading,
    name: &str,
    keep: impl Fn(&Series) -> bool,
) -> (f64, f64, Vec<(f64, f64)>) {
    let mut count = 0.0;
    let mut sum = 0.0;
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for series in now.named(name).filter(|s| keep(s)) {
        let previous = before.previous_of(series);
        count += (series.value - previous.map_or(0.0, |p| p.value)).max(0.0);
        sum += (series.sum - previous.map_or(0.0, |p| p.sum)).max(0.0);
        for (i, (le, cumulative)) in series.buckets.iter().enumerate() {
            let was = previous
                .and_then(|p| p.buckets.get(i))
                .map_or(0.0, |(_, c)| *c);
            match buckets.get_mut(i) {
                Some((_, total)) => *total += (cumulative - was).max(0.0),
                None => buckets.push((*le, (cumulative - was).max(0.0))),
            }
        }
    }
    (count, sum, buckets)
}

/// The `q` quantile of cumulative `buckets`, interpolated inside its bucket
/// as Prometheus' `histogram_quantile` does; `None` without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, cumulative) in buckets {
        if cumulative >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let inside = cumulative - lower.1;
            let fraction = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * fraction);
        }
        lower = (le, cumulative);
    }
    Some(lower.0)
}

/// A counter's increase per second between two readings, summed over the
/// series `keep` selects.
fn rate(
    before: &Reading,
    now: &Reading,
    seconds: f64,
    name: &str,
    keep: impl Fn(&Series) -> bool,
) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    now.named(name)
        .filter(|s| keep(s))
        .map(|s| (s.value - before.previous_of(s).map_or(0.0, |p| p.value)).max(0.0))
        .sum::<f64>()
        / seconds
}

fn gauge(now: &Reading, name: &str, keep: impl Fn(&Series) -> bool) -> f64 {
    now.named(name).filter(|s| keep(s)).map(|s| s.value).sum()
}

/// The answers that came from a cache (as the alert rules count them).
pub const FROM_CACHE: &[&str] = &["hit", "stale", "l2", "negative"];

fn breaker_state(value: f64) -> &'static str {
    match value as i64 {
        0 => "closed",
        1 => "open",
        2 => "half_open",
        3 => "forced_open",
        _ => "disabled",
    }
}

fn ms(seconds: Option<f64>) -> Value {
    seconds.map_or(Value::Null, |s| json!((s * 1e5).round() / 100.0))
}

fn round(x: f64) -> Value {
    json!((x * 100.0).round() / 100.0)
}

/// The dashboard's view of the second between `before` and `now`
/// (`seconds` apart), stamped `unix_ms`.
pub fn stats(before: &Reading, now: &Reading, seconds: f64, unix_ms: u64, ready: bool) -> Value {
    let mut resources: BTreeMap<&str, Value> = BTreeMap::new();
    for series in now.named("rampart_warmup_keys") {
        resources
            .entry(series.label("resource"))
            .or_insert(Value::Null);
    }
    for series in now.named("rampart_requests_total") {
        resources
            .entry(series.label("resource"))
            .or_insert(Value::Null);
    }
    for (name, entry) in resources.iter_mut() {
        let of = |s: &Series| s.label("resource") == *name;
        let mut by_x_cache: BTreeMap<&str, Value> = BTreeMap::new();
        let mut total = 0.0;
        let mut cached = 0.0;
        for series in now.named("rampart_requests_total").filter(|s| of(s)) {
            let outcome = series.label("x_cache");
            let r = rate(before, now, seconds, "rampart_requests_total", |s| {
                of(s) && s.label("x_cache") == outcome
            });
            total += r;
            if FROM_CACHE.contains(&outcome) {
                cached += r;
            }
            by_x_cache.insert(outcome, round(r));
        }
        let (loads, load_sum, load_buckets) =
            histogram_increase(before, now, "rampart_load_duration_seconds", of);
        let breaker = now
            .named("rampart_breaker_state")
            .find(|s| s.label("dependency") == *name)
            .map(|s| breaker_state(s.value));
        let warm = |state: &str| {
            gauge(now, "rampart_warmup_keys", |s| {
                of(s) && s.label("state") == state
            })
        };
        *entry = json!({
            "rps": round(total),
            "by_x_cache": by_x_cache,
            "hit_ratio": if total > 0.0 { round(cached / total) } else { Value::Null },
            "loads_per_s": round(if seconds > 0.0 { loads / seconds } else { 0.0 }),
            "load_mean_ms": ms((loads > 0.0).then(|| load_sum / loads)),
            "load_p50_ms": ms(quantile(0.5, &load_buckets)),
            "load_p99_ms": ms(quantile(0.99, &load_buckets)),
            "loads_in_flight": gauge(now, "rampart_loads_in_flight", of),
            "loads_waiting": gauge(now, "rampart_loads_waiting", of),
            "coalesced_per_s": round(rate(before, now, seconds, "rampart_requests_total", |s| {
                of(s) && s.label("x_cache") == "coalesced"
            })),
            "breaker": breaker,
            "bulkhead": {
                "in_flight": gauge(now, "rampart_bulkhead", |s| of(s) && s.label("state") == "in_flight"),
                "queued": gauge(now, "rampart_bulkhead", |s| of(s) && s.label("state") == "queued"),
                "max": gauge(now, "rampart_bulkhead", |s| of(s) && s.label("state") == "max"),
            },
            "warmup": {
                "done": warm("done"),
                "failed": warm("failed"),
                "expected": warm("expected"),
                "concurrency": gauge(now, "rampart_warmup_concurrency", of),
            },
        });
    }
    let hot = |s: &Series| s.label("route") == crate::http::layers::HOT_ROUTE;
    let (_, _, http_buckets) =
        histogram_increase(before, now, "rampart_http_request_duration_seconds", hot);
    let (http_requests, _, _) =
        histogram_increase(before, now, "rampart_http_request_duration_seconds", |_| {
            true
        });
    let breakers: BTreeMap<&str, Value> = now
        .named("rampart_breaker_state")
        .map(|s| {
            let dependency = s.label("dependency");
            let transitions = now
                .named("rampart_breaker_transitions_total")
                .filter(|t| t.label("dependency") == dependency)
                .map(|t| t.value)
                .sum::<f64>();
            (
                dependency,
                json!({ "state": breaker_state(s.value), "transitions": transitions }),
            )
        })
        .collect();
    let workers = gauge(now, "rampart_tokio_workers", |_| true);
    let busy = rate(
        before,
        now,
        seconds,
        "rampart_tokio_worker_busy_seconds_total",
        |_| true,
    );
    json!({
        "t": unix_ms,
        "ready": ready,
        "resources": resources,
        "http": {
            "rps": round(if seconds > 0.0 { http_requests / seconds } else { 0.0 }),
            "hot_p50_ms": ms(quantile(0.5, &http_buckets)),
            "hot_p99_ms": ms(quantile(0.99, &http_buckets)),
        },
        "breakers": breakers,
        "pool": {
            "in_use": gauge(now, "rampart_source_pool_connections", |s| s.label("state") == "in_use"),
            "idle": gauge(now, "rampart_source_pool_connections", |s| s.label("state") == "idle"),
            "size": gauge(now, "rampart_source_pool_size", |_| true),
        },
        "shed_per_s": round(rate(before, now, seconds, "rampart_shed_total", |_| true)),
        "timeouts_per_s": round(rate(before, now, seconds, "rampart_timeouts_total", |_| true)),
        "panics_per_s": round(rate(before, now, seconds, "rampart_process_panics_total", |_| true)),
        "connections_open": gauge(now, "rampart_connections_open", |_| true),
        "runtime": {
            "workers": workers,
            "busy_ratio": if workers > 0.0 { round(busy / workers) } else { Value::Null },
            "alive_tasks": gauge(now, "rampart_tokio_alive_tasks", |_| true),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(name: &str, labels: &[(&str, &str)], value: f64) -> Series {
        Series {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            value,
            sum: 0.0,
            buckets: Vec::new(),
        }
    }

    #[test]
    fn rates_and_hit_ratio_come_from_the_difference_of_two_readings() {
        let users = |x: &'static str, v| {
            counter(
                "rampart_requests_total",
                &[("resource", "users"), ("x_cache", x)],
                v,
            )
        };
        let before = Reading {
            series: vec![users("hit", 100.0), users("miss", 50.0)],
        };
        let now = Reading {
            series: vec![
                users("hit", 130.0),
                users("miss", 60.0),
                users("coalesced", 2.0),
            ],
        };
        let s = stats(&before, &now, 2.0, 7, true);
        let u = &s["resources"]["users"];
        assert_eq!(u["rps"], 21.0);
        assert_eq!(u["by_x_cache"]["hit"], 15.0);
        assert_eq!(u["coalesced_per_s"], 1.0);
        assert_eq!(u["hit_ratio"], 0.71);
        assert_eq!(s["t"], 7);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
        let buckets = [(0.1, 50.0), (0.2, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &buckets), Some(0.1));
        let p75 = quantile(0.75, &buckets).expect("observations");
        assert!((p75 - 0.15).abs() < 1e-9, "{p75}");
        assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        // Past the last finite bound: that bound.
        assert_eq!(
            quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 10.0)]),
            Some(0.1)
        );
    }
}
