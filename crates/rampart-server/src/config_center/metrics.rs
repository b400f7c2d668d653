//! The config center's gauges, read from the registry at each scrape (no
//! bookkeeping on the request path beyond the parked count):
//!
//! * `rampart_config_watchers_parked`: long-polls and watches waiting for
//!   a change now;
//! * `rampart_config_namespaces`: namespaces served;
//! * `rampart_config_namespace_version{namespace}`: each namespace's
//!   stable version as this instance serves it.
//!
//! Cardinality of the labelled gauge: namespaces are created only by an
//! admin-token write and their names are checked at the edge (1–128 of
//! `[A-Za-z0-9._-]`), so a series never comes from a reader's input; and
//! at most [`MAX_NAMESPACE_SERIES`] are exported, the first by name. Past
//! that, `rampart_config_namespaces` still counts them all, so the
//! difference shows how many were left out.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::ConfigCenter;

/// The most `rampart_config_namespace_version` series one scrape exports.
pub const MAX_NAMESPACE_SERIES: usize = 100;

const PARKED: (&str, &str) = (
    "rampart_config_watchers_parked",
    "Config-center long-polls and watches waiting for a change now.",
);
const NAMESPACES: (&str, &str) = (
    "rampart_config_namespaces",
    "Config-center namespaces served by this instance.",
);
const VERSION: (&str, &str) = (
    "rampart_config_namespace_version",
    "Each config-center namespace's stable version served by this instance (the first 100 namespaces by name).",
);

/// Reads the config center's gauges at each scrape.
pub struct CenterCollector {
    center: Arc<ConfigCenter>,
    descs: Vec<Desc>,
}

impl CenterCollector {
    pub fn new(center: Arc<ConfigCenter>) -> prometheus::Result<CenterCollector> {
        let desc = |(name, help): (&str, &str), labels: &[&str]| {
            Desc::new(
                name.to_owned(),
                help.to_owned(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
                HashMap::new(),
            )
        };
        Ok(CenterCollector {
            center,
            descs: vec![
                desc(PARKED, &[])?,
                desc(NAMESPACES, &[])?,
                desc(VERSION, &["namespace"])?,
            ],
        })
    }
}

/// One gauge family holding `series` (label pairs, value).
fn gauges(
    (name, help): (&str, &str),
    series: impl IntoIterator<Item = (Option<(&'static str, String)>, f64)>,
) -> MetricFamily {
    let metrics = series
        .into_iter()
        .map(|(label, value)| {
            let mut gauge = Gauge::default();
            gauge.set_value(value);
            let mut metric = Metric::default();
            if let Some((key, value)) = label {
                let mut pair = LabelPair::default();
                pair.set_name(key.to_owned());
                pair.set_value(value);
                metric.set_label(vec![pair]);
            }
            metric.set_gauge(gauge);
            metric
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(MetricType::GAUGE);
    family.set_metric(metrics);
    family
}

impl Collector for CenterCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let registry = &self.center.registry;
        // `all()` is sorted by name: the series kept past the cap are the
        // same from scrape to scrape.
        let namespaces = registry.all();
        let versions = namespaces.iter().take(MAX_NAMESPACE_SERIES).map(|ns| {
            let state = ns.load();
            (
                Some(("namespace", state.name.clone())),
                state.stable.version as f64,
            )
        });
        vec![
            gauges(PARKED, [(None, registry.parked() as f64)]),
            gauges(NAMESPACES, [(None, namespaces.len() as f64)]),
            gauges(VERSION, versions),
        ]
    }
}
