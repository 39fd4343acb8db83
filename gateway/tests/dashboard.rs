//! The Grafana dashboard in the Helm chart (`helm/moe-cluster/dashboards/moe-cluster.json`)
//! queries only metric families the gateway exports, so it cannot drift from `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use moe_gateway::dispatch::Dispatcher;
use moe_gateway::metrics::{Gauges, Metrics};
use moe_proto::tensor::Limits;
use moe_state::records::{NodeRecord, Placement};
use moe_state::watch::Snapshot;
use tokio::sync::watch;

/// Every `moe:` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.match_indices("moe:")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect()
        })
        .collect()
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../helm/moe-cluster/dashboards/moe-cluster.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());

    let mut text = Metrics::default().render(Gauges {
        running: 0,
        waiting: 0,
        kv_usage: 0.0,
        kv_blocks_in_use: 0,
        preemptions: 0,
        expert_retries: 0,
        expert_bytes_sent: 0,
        expert_bytes_received: 0,
        expert_seconds: 0.0,
    });
    let (_placements, placement) = watch::channel(Snapshot::<Placement> {
        revision: 0,
        entries: BTreeMap::new(),
    });
    let (_records, nodes) = watch::channel(Snapshot::<NodeRecord> {
        revision: 0,
        entries: BTreeMap::new(),
    });
    let dispatcher = Dispatcher::new(
        placement,
        nodes,
        8,
        Duration::from_secs(1),
        Limits::default(),
    );
    dispatcher.render_metrics(&mut text);
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();

    for name in metric_names(&exprs.join("\n")) {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(f)))
            .unwrap_or(&name);
        assert!(
            families.contains(family),
            "the dashboard queries {name}, which is not exported"
        );
    }
}
