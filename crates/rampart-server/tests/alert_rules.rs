//! The alert rules (ops/prometheus/rampart-alerts.yml) name only metrics
//! the service exports: a renamed metric fails here, not silently in
//! production. (promtool checks the rules themselves:
//! scripts/check-alerts.sh.)

mod common;

use std::collections::BTreeSet;

use common::start;

const RULES: &str = include_str!("../../../ops/prometheus/rampart-alerts.yml");
const README: &str = include_str!("../../../README.md");

/// `rampart_…` metric names in `text`, histogram series reduced to their
/// family (`_bucket`, `_count`, `_sum`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("rampart_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Not the `rampart:` recording rules' names, nor a word's middle.
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            let name = &tail[..end];
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(family.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn every_metric_the_alert_rules_use_is_exported_and_documented() {
    let used = metric_names(RULES);
    assert!(used.len() >= 8, "the rules were read: {used:?}");
    let t = start(|_| {}).await;
    // A miss and a hit: the labelled series exist once something happened.
    assert_eq!(t.get("/v1/r/users/1").await.status(), 200);
    assert_eq!(t.get("/v1/r/users/1").await.status(), 200);
    let text = t.get("/metrics").await.text().await.expect("metrics text");
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    for name in &used {
        // Breaker transitions have a series only after the first one.
        if name != "rampart_breaker_transitions_total" {
            assert!(
                exported.contains(name),
                "{name} is not in /metrics: {exported:?}"
            );
        }
        assert!(
            README.contains(&format!("`{name}`")),
            "{name} is not in README's metrics table"
        );
    }
    t.server.shutdown().await.expect("shutdown");
}
