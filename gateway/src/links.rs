//! The expert nodes' links as the gateway measures them, per node: calls and failures, protobuf
//! bytes each way, the round-trip time of each call, and the time the node says it spent
//! queueing and computing. A round trip minus the node's queue and compute is the network and
//! both ends' (de)serialisation: the part a faster link would shrink. Each link also keeps its
//! saturation state and downgrade rung ([`Ladder`]) and counts the pairs it was sent at each
//! precision.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use moe_proto::expert::Timings;

use crate::metric_names as names;
use crate::metrics::{Histogram, header};
use crate::policy::{Ladder, LadderConfig, PairCounts, Rung, Sample};

/// One node's calls so far.
#[derive(Debug, Default, Clone)]
pub struct Link {
    pub calls: u64,
    pub failures: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub rtt: Histogram,
    pub rtt_seconds: f64,
    pub queue_seconds: f64,
    pub compute_seconds: f64,
    /// Calls sent and not yet answered or failed.
    pub in_flight: usize,
    /// When the last call failed.
    pub last_failure: Option<Instant>,
    pub ladder: Ladder,
    /// Pairs planned for the node (skipped ones were not sent).
    pub pairs: PairCounts,
    /// Pairs planned low on this link that went to a replica on a less loaded one instead.
    pub rerouted: u64,
    /// Pairs of a later layer sent with an earlier layer's requests, pre-calculated.
    pub precalculated: u64,
}

/// How long a node whose call failed is tried only after its healthy replicas.
pub const UNHEALTHY_FOR: Duration = Duration::from_secs(10);

/// What choosing between a node's replicas looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub in_flight: usize,
    /// The link's rung on the downgrade ladder.
    pub rung: Rung,
    /// A call failed within [`UNHEALTHY_FOR`].
    pub failed_recently: bool,
    /// The link has no room for more rows ([`Ladder::crowded`]); one with no calls yet has.
    pub crowded: bool,
}

/// The Prometheus label `node="<id>"`, escaped.
pub fn node_label(node: &str) -> String {
    format!(
        "node=\"{}\"",
        node.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// Every node's [`Link`], by node id, and the rule their ladders follow.
#[derive(Debug, Default)]
pub struct Links {
    links: Mutex<BTreeMap<String, Link>>,
    ladder: LadderConfig,
}

impl Links {
    pub fn new(ladder: LadderConfig) -> Links {
        Links {
            links: Mutex::default(),
            ladder,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Link>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `node`'s downgrade rung now.
    pub fn rung(&self, node: &str) -> Rung {
        self.lock()
            .get(node)
            .map_or(Rung::Full, |l| l.ladder.rung())
    }

    /// Counts the pairs planned for a call to `node`.
    pub fn planned(&self, node: &str, pairs: PairCounts) {
        let mut links = self.lock();
        links.entry(node.to_string()).or_default().pairs.add(pairs);
    }

    /// `pairs` planned low on `node`'s link went to a replica on a less loaded link instead.
    pub fn rerouted(&self, node: &str, pairs: u64) {
        self.lock().entry(node.to_string()).or_default().rerouted += pairs;
    }

    /// Gives every node of `nodes` its series, at zero until its first call, so a dashboard
    /// sees a node as soon as it registers.
    pub fn know<'a>(&self, nodes: impl IntoIterator<Item = &'a str>) {
        let mut links = self.lock();
        for node in nodes {
            links.entry(node.to_string()).or_default();
        }
    }

    /// `pairs` of a later layer go to `node` with an earlier layer's request.
    pub fn precalculated(&self, node: &str, pairs: u64) {
        self.lock()
            .entry(node.to_string())
            .or_default()
            .precalculated += pairs;
    }

    /// A call to `node` is on its way.
    pub fn started(&self, node: &str) {
        self.lock().entry(node.to_string()).or_default().in_flight += 1;
    }

    /// `node`'s load and health now.
    pub fn health(&self, node: &str) -> Health {
        self.lock().get(node).map_or(Health::default(), |l| Health {
            in_flight: l.in_flight,
            rung: l.ladder.rung(),
            failed_recently: l.last_failure.is_some_and(|t| t.elapsed() < UNHEALTHY_FOR),
            crowded: l.ladder.crowded(Instant::now(), &self.ladder),
        })
    }

    /// Counts a finished call to `node`, then lets `then` add what only its outcome knows.
    fn record(&self, node: &str, sent: u64, rtt: Duration, then: impl FnOnce(&mut Link)) {
        let mut links = self.lock();
        let link = links.entry(node.to_string()).or_default();
        link.in_flight = link.in_flight.saturating_sub(1);
        link.calls += 1;
        link.sent_bytes += sent;
        link.rtt.observe(rtt.as_secs_f64());
        link.rtt_seconds += rtt.as_secs_f64();
        then(link);
    }

    /// A call to `node` answered after `rtt` with a reply of `received` bytes.
    pub fn answered(
        &self,
        node: &str,
        sent: u64,
        received: u64,
        rtt: Duration,
        timings: Option<&Timings>,
    ) {
        let config = self.ladder;
        self.record(node, sent, rtt, |link| {
            link.received_bytes += received;
            let (queue, compute) = timings.map_or((0, 0), |t| (t.queue_us, t.compute_us));
            link.queue_seconds += queue as f64 / 1e6;
            link.compute_seconds += compute as f64 / 1e6;
            let queue = Duration::from_micros(queue);
            let sample = Sample {
                wire: rtt.saturating_sub(queue + Duration::from_micros(compute)),
                queue,
            };
            let before = link.ladder.rung();
            link.ladder.observe(Instant::now(), sample, &config);
            let after = link.ladder.rung();
            if after != before {
                let (busy, queue) = (link.ladder.busy(), sample.queue);
                tracing::info!(
                    node,
                    from = before.flag(),
                    to = after.flag(),
                    busy,
                    ?queue,
                    "the link's precision rung moved"
                );
            }
        });
    }

    /// A call to `node` that failed (refused, timed out or lost its stream) after `rtt`.
    pub fn failed(&self, node: &str, sent: u64, rtt: Duration) {
        self.record(node, sent, rtt, |link| {
            link.failures += 1;
            link.last_failure = Some(Instant::now());
        });
    }

    /// Bytes sent to and received from every node, summed.
    pub fn totals(&self) -> (u64, u64) {
        self.lock().values().fold((0, 0), |(sent, received), l| {
            (sent + l.sent_bytes, received + l.received_bytes)
        })
    }

    pub fn snapshot(&self) -> BTreeMap<String, Link> {
        self.lock().clone()
    }

    /// Every node's series in the Prometheus text format, labelled `node="<id>"`.
    pub fn render(&self, out: &mut String) {
        let links = self.snapshot();
        let label = node_label;
        type Value = fn(&Link) -> f64;
        let families: [(&str, &str, &str, Value); 12] = [
            (
                names::EXPERT_NODE_CALLS_TOTAL,
                "Layer requests sent to the node.",
                "counter",
                |l| l.calls as f64,
            ),
            (
                names::EXPERT_NODE_FAILURES_TOTAL,
                "Layer requests the node failed, refused or did not answer in time.",
                "counter",
                |l| l.failures as f64,
            ),
            (
                names::EXPERT_NODE_BYTES_SENT_TOTAL,
                "Protobuf bytes of layer requests sent to the node.",
                "counter",
                |l| l.sent_bytes as f64,
            ),
            (
                names::EXPERT_NODE_BYTES_RECEIVED_TOTAL,
                "Protobuf bytes of the node's replies.",
                "counter",
                |l| l.received_bytes as f64,
            ),
            (
                names::EXPERT_NODE_QUEUE_SECONDS_TOTAL,
                "Time the node reports its requests waited for its compute thread.",
                "counter",
                |l| l.queue_seconds,
            ),
            (
                names::EXPERT_NODE_COMPUTE_SECONDS_TOTAL,
                "Time the node reports computing its requests.",
                "counter",
                |l| l.compute_seconds,
            ),
            (
                names::EXPERT_NODE_RTT_SECONDS_TOTAL,
                "Round-trip time of layer requests to the node, summed.",
                "counter",
                |l| l.rtt_seconds,
            ),
            (
                names::EXPERT_PAIRS_PRECALCULATED_TOTAL,
                "Pairs of a later layer sent with an earlier layer's requests, pre-calculated \
                 from that layer's input.",
                "counter",
                |l| l.precalculated as f64,
            ),
            (
                names::EXPERT_LINK_RUNG,
                "The link's downgrade rung: 0 full, 1 int8 activations, 2 low-precision \
                 weights above T1, 3 skipping above T2.",
                "gauge",
                |l| l.ladder.rung() as usize as f64,
            ),
            (
                names::EXPERT_LINK_SATURATED,
                "1 while the link is over the saturation rule.",
                "gauge",
                |l| f64::from(u8::from(l.ladder.saturated())),
            ),
            (
                names::EXPERT_LINK_BASELINE_SECONDS,
                "The link's bare wire time: the smallest of the last 30 s.",
                "gauge",
                |l| l.ladder.baseline().unwrap_or(0.0),
            ),
            (
                names::EXPERT_LINK_BUSY,
                "Wire time beyond the bare minimum per second of wall time (1 = always \
                 carrying bytes).",
                "gauge",
                |l| l.ladder.busy(),
            ),
        ];
        for (name, help, kind, value) in families {
            header(out, name, help, kind);
            for (node, link) in &links {
                let _ = writeln!(out, "{name}{{{}}} {}", label(node), value(link));
            }
        }
        let name = names::EXPERT_NODE_RTT_SECONDS;
        header(
            out,
            name,
            "Round-trip time of layer requests to the node.",
            "histogram",
        );
        for (node, link) in &links {
            link.rtt.render_series(out, name, &label(node));
        }
        let name = names::EXPERT_LINK_RUNG_SECONDS_TOTAL;
        header(out, name, "Time the link spent at each rung.", "counter");
        let now = Instant::now();
        for (node, link) in &links {
            for (rung, time) in Rung::ALL.iter().zip(link.ladder.time_in(now)) {
                let (node, rung) = (label(node), rung.name());
                let seconds = time.as_secs_f64();
                let _ = writeln!(out, "{name}{{{node},rung=\"{rung}\"}} {seconds}");
            }
        }
        let name = names::EXPERT_PAIRS_TOTAL;
        header(
            out,
            name,
            "(token, expert) pairs planned for the node, by precision (skip: not sent).",
            "counter",
        );
        for (node, link) in &links {
            for (plan, count) in link.pairs.iter() {
                let (node, plan) = (label(node), plan.name());
                let _ = writeln!(out, "{name}{{{node},precision=\"{plan}\"}} {count}");
            }
        }
        let name = names::EXPERT_PAIRS_REROUTED_TOTAL;
        header(
            out,
            name,
            "Pairs planned low on the node's saturated link, sent to a replica on a less loaded \
             link instead.",
            "counter",
        );
        for (node, link) in &links {
            let _ = writeln!(out, "{name}{{{}}} {}", label(node), link.rerouted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_node_has_its_series_at_zero_before_its_first_call() {
        let links = Links::default();
        links.know(["node-7"]);
        let mut text = String::new();
        links.render(&mut text);
        for line in [
            "moe:expert_node_calls_total{node=\"node-7\"} 0",
            "moe:expert_node_rtt_seconds_count{node=\"node-7\"} 0",
            "moe:expert_pairs_total{node=\"node-7\",precision=\"low\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(links.health("node-7"), Health::default());
    }

    #[test]
    fn renders_each_nodes_series_with_its_label() {
        let links = Links::default();
        let timings = Timings {
            queue_us: 1_000,
            compute_us: 4_000,
            load_us: 0,
        };
        links.answered("node-0", 100, 300, Duration::from_millis(7), Some(&timings));
        links.answered("node-0", 100, 300, Duration::from_millis(3), None);
        links.failed("node-1", 50, Duration::from_millis(30));
        links.planned("node-0", PairCounts::new(3, 2, 0));
        links.planned("node-0", PairCounts::new(2, 0, 1));
        let mut text = String::new();
        links.render(&mut text);
        for line in [
            "moe:expert_node_calls_total{node=\"node-0\"} 2",
            "moe:expert_node_calls_total{node=\"node-1\"} 1",
            "moe:expert_node_failures_total{node=\"node-0\"} 0",
            "moe:expert_node_failures_total{node=\"node-1\"} 1",
            "moe:expert_node_bytes_sent_total{node=\"node-0\"} 200",
            "moe:expert_node_bytes_received_total{node=\"node-0\"} 600",
            "moe:expert_node_bytes_received_total{node=\"node-1\"} 0",
            "moe:expert_node_queue_seconds_total{node=\"node-0\"} 0.001",
            "moe:expert_node_compute_seconds_total{node=\"node-0\"} 0.004",
            "moe:expert_node_rtt_seconds_bucket{node=\"node-0\",le=\"0.005\"} 1",
            "moe:expert_node_rtt_seconds_bucket{node=\"node-0\",le=\"0.01\"} 2",
            "moe:expert_node_rtt_seconds_bucket{node=\"node-1\",le=\"0.04\"} 1",
            "moe:expert_node_rtt_seconds_count{node=\"node-1\"} 1",
            "moe:expert_link_rung{node=\"node-0\"} 0",
            "moe:expert_link_saturated{node=\"node-0\"} 0",
            "moe:expert_link_baseline_seconds{node=\"node-0\"} 0.002",
            "moe:expert_pairs_total{node=\"node-0\",precision=\"high\"} 5",
            "moe:expert_pairs_total{node=\"node-0\",precision=\"low\"} 2",
            "moe:expert_pairs_total{node=\"node-0\",precision=\"skip\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(links.health("node-0"), Health::default());
        assert_eq!(
            links.health("node-1"),
            Health {
                failed_recently: true,
                ..Health::default()
            }
        );
        links.started("node-0");
        links.started("node-0");
        assert_eq!(links.health("node-0").in_flight, 2);
        links.answered("node-0", 1, 1, Duration::from_millis(1), None);
        assert_eq!(links.health("node-0").in_flight, 1);
        let rtt = links.snapshot()["node-0"].rtt_seconds;
        assert!((rtt - 0.011).abs() < 1e-9, "{rtt}");
    }
}
