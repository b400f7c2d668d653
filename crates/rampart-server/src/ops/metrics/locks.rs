//! `rampart_lock_wait_seconds{lock}`: the library's lock wait histograms
//! (`rampart::contention`), read at scrape time. Only acquisitions that had
//! to wait are counted: a lock that is never contended shows no series
//! growth at all, which is the healthy picture.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};

const NAME: &str = "rampart_lock_wait_seconds";
const HELP: &str = "Waits for the guards' shared locks (single-flight map, generation stripes, \
                    breaker cores), contended acquisitions only.";

/// Reads the library's lock waits at each scrape.
#[derive(Clone)]
pub struct LockWaitCollector {
    desc: Desc,
}

impl LockWaitCollector {
    pub fn new() -> prometheus::Result<LockWaitCollector> {
        Ok(LockWaitCollector {
            desc: Desc::new(
                NAME.to_owned(),
                HELP.to_owned(),
                vec!["lock".to_owned()],
                std::collections::HashMap::new(),
            )?,
        })
    }
}

impl Collector for LockWaitCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let metrics = rampart::contention::lock_waits()
            .into_iter()
            .map(|waits| {
                let mut histogram = Histogram::default();
                histogram.set_sample_count(waits.count);
                histogram.set_sample_sum(waits.sum.as_secs_f64());
                histogram.set_bucket(
                    waits
                        .buckets
                        .iter()
                        .map(|(bound, cumulative)| {
                            let mut bucket = Bucket::default();
                            bucket.set_upper_bound(bound.as_secs_f64());
                            bucket.set_cumulative_count(*cumulative);
                            bucket
                        })
                        .collect(),
                );
                let mut label = LabelPair::default();
                label.set_name("lock".to_owned());
                label.set_value(waits.lock.to_owned());
                let mut metric = Metric::default();
                metric.set_label(vec![label]);
                metric.set_histogram(histogram);
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(NAME.to_owned());
        family.set_help(HELP.to_owned());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(metrics);
        vec![family]
    }
}
