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
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, IntGaugeVec, Opts};

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

impl Collector for CenterCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let registry = &self.center.registry;
        // `all()` is sorted by name: the series kept past the cap are the
        // same from scrape to scrape.
        let namespaces = registry.all();
        let mut out = Vec::new();
        // Built afresh each scrape from what the registry holds now, so a
        // series never outlives its namespace's presence in the cap.
        let (parked, count, versions) = (
            IntGauge::new(PARKED.0, PARKED.1),
            IntGauge::new(NAMESPACES.0, NAMESPACES.1),
            IntGaugeVec::new(Opts::new(VERSION.0, VERSION.1), &["namespace"]),
        );
        let whole = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        if let Ok(gauge) = parked {
            gauge.set(whole(registry.parked()));
            out.extend(gauge.collect());
        }
        if let Ok(gauge) = count {
            gauge.set(whole(namespaces.len()));
            out.extend(gauge.collect());
        }
        if let Ok(gauges) = versions {
            for ns in namespaces.iter().take(MAX_NAMESPACE_SERIES) {
                let state = ns.load();
                gauges
                    .with_label_values(&[state.name.as_str()])
                    .set(i64::try_from(state.stable.version).unwrap_or(i64::MAX));
            }
            out.extend(gauges.collect());
        }
        out
    }
}
