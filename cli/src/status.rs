//! `moe status`: what a cluster is doing, read from etcd (node records, placement, leader,
//! gateways' popularity reports), from each node's `Info` and, for the gateways named with
//! `--gateway`, from their `/metrics`. A table for people, or with `--json` one object per
//! refresh; `--watch` refreshes until interrupted.
//!
//! The summary ([`Status::from_observed`]) is pure; gathering ([`observe`]) does the IO, every
//! call under `--timeout-seconds`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use moe_gateway::exposition::Exposition;
use moe_gateway::metric_names as names;
use moe_gateway::policy::Rung;
use moe_launch::http::{Request, blocking};
use moe_proto::expert::expert_service_client::ExpertServiceClient;
use moe_proto::expert::{ExpertShape, InfoRequest, NodeInfo, Precision as WirePrecision};
use moe_service::tls::ClientTlsArgs;
use moe_state::etcd::Etcd;
use moe_state::keys::ClusterKeys;
use moe_state::records::{GatewayStats, NodeRecord, Placement};
use moe_state::watch::Watcher;
use serde::Serialize;
use tonic::transport::{ClientTlsConfig, Endpoint};

/// Options of `moe status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "MOE_ETCD", value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// The cluster's name (its keys live under /moe/v1/<cluster>/).
    #[arg(long, env = "MOE_CLUSTER", default_value = "default")]
    cluster: String,
    /// Print one JSON object (one per refresh with --watch) instead of tables.
    #[arg(long)]
    json: bool,
    /// Refresh every --interval seconds until interrupted.
    #[arg(long)]
    watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// A gateway's HTTP address (host:port or http://host:port) to read its load and its links
    /// to the nodes from; repeatable.
    #[arg(long = "gateway")]
    gateways: Vec<String>,
    /// Deadline of every etcd, node and gateway call, in seconds.
    #[arg(long, default_value_t = 3)]
    timeout_seconds: u64,
    /// TLS towards the nodes' Info RPC and etcd, as a gateway's.
    #[command(flatten)]
    tls: ClientTlsArgs,
}

impl StatusArgs {
    /// A one-shot read of `cluster` through `etcd`, nodes included, no gateways.
    pub fn for_cluster(etcd: &str, cluster: &str) -> StatusArgs {
        StatusArgs {
            etcd: vec![etcd.to_string()],
            cluster: cluster.to_string(),
            json: false,
            watch: false,
            interval: 2.0,
            gateways: Vec::new(),
            timeout_seconds: 2,
            tls: ClientTlsArgs::default(),
        }
    }
}

/// What one gateway's `/metrics` said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayMetrics {
    pub running: f64,
    pub waiting: f64,
    pub kv_usage: f64,
    pub generated_tokens: f64,
    /// Pre-calculation since start: layers answered from it (round trips saved), the routers'
    /// choices in those layers, and how many of them had been pre-calculated.
    pub precalculated: [f64; 3],
    /// Per node, by [`LINK_SERIES`] order: summed round trips, their count, bytes sent and
    /// received, the link's rung and saturation, and the pairs planned high, low and skipped.
    pub links: BTreeMap<String, [f64; 9]>,
}

/// The per-node series `moe status` reads, with the label that picks one (if any).
const LINK_SERIES: [(&str, Option<(&str, &str)>); 9] = [
    (names::EXPERT_NODE_RTT_SECONDS_SUM, None),
    (names::EXPERT_NODE_RTT_SECONDS_COUNT, None),
    (names::EXPERT_NODE_BYTES_SENT_TOTAL, None),
    (names::EXPERT_NODE_BYTES_RECEIVED_TOTAL, None),
    (names::EXPERT_LINK_RUNG, None),
    (names::EXPERT_LINK_SATURATED, None),
    (names::EXPERT_PAIRS_TOTAL, Some(("precision", "high"))),
    (names::EXPERT_PAIRS_TOTAL, Some(("precision", "low"))),
    (names::EXPERT_PAIRS_TOTAL, Some(("precision", "skip"))),
];

impl GatewayMetrics {
    /// Reads the series `moe status` shows from a Prometheus text exposition.
    pub fn parse(text: &str) -> GatewayMetrics {
        let e = Exposition::new(text);
        let mut links: BTreeMap<String, [f64; 9]> = BTreeMap::new();
        for (i, (name, filter)) in LINK_SERIES.iter().enumerate() {
            for (node, v) in e.by_label(name, "node", *filter) {
                links.entry(node.to_string()).or_default()[i] = v;
            }
        }
        GatewayMetrics {
            running: e.value(names::NUM_REQUESTS_RUNNING),
            waiting: e.value(names::NUM_REQUESTS_WAITING),
            kv_usage: e.value(names::KV_CACHE_USAGE_PERC),
            generated_tokens: e.value(names::GENERATION_TOKENS_TOTAL),
            precalculated: [
                names::PRECALCULATED_LAYERS_TOTAL,
                names::PRECALCULATED_ROUTED_PAIRS_TOTAL,
                names::PRECALCULATED_HITS_TOTAL,
            ]
            .map(|name| e.value(name)),
            links,
        }
    }
}

/// One gateway's read: its metrics, and generated tokens per second since the previous read.
pub type GatewayRead = Result<(GatewayMetrics, Option<f64>), String>;

/// Everything gathered for one refresh.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub nodes: Vec<NodeRecord>,
    pub infos: BTreeMap<String, Result<NodeInfo, String>>,
    pub placement: Option<Placement>,
    pub leader: Option<String>,
    pub stats: Vec<GatewayStats>,
    /// Per `--gateway`: its metrics now, and generated tokens per second since the last read
    /// (one second before, without `--watch`).
    pub gateways: Vec<(String, GatewayRead)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    pub id: String,
    pub address: String,
    pub backend: String,
    pub precisions: String,
    /// The placement epoch whose experts the node has loaded.
    pub epoch: u64,
    /// Whether it has loaded the current placement.
    pub serving: bool,
    /// (layer, expert) pairs it holds, by its `Info`.
    pub experts: usize,
    pub queue_depth: u32,
    pub queue_capacity: u32,
    /// Mean round trip of the gateways' calls to it, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Bytes the gateways sent to it and received from it.
    pub bytes_sent: Option<f64>,
    pub bytes_received: Option<f64>,
    /// The highest downgrade rung any gateway's link to it is at (`off`, `int8-wire`,
    /// `low-weights`, `skip`), and whether any of those links is saturated.
    pub link_rung: Option<String>,
    pub saturated: Option<bool>,
    /// The share of the pairs the gateways planned for it that went at low precision or were
    /// skipped.
    pub downgraded: Option<f64>,
    /// GPU cache copies loaded at low precision because the PCIe link was backed up.
    pub gpu_downgraded: u64,
    /// Groups served at low precision because the node's compute queue was backed up.
    pub queue_downgraded: u64,
    /// What it is doing while it loads its experts (e.g. building shards, with the count).
    pub loading: Option<String>,
    /// Why it answers NOT_SERVING although started (it could load none of its experts).
    pub not_serving: Option<String>,
    /// Assigned experts it could not load, one line per cause (from its record).
    pub unloadable: Vec<String>,
    /// Matrices it stores in a wider format than its precisions ask (from its `Info`).
    pub fallbacks: Vec<String>,
    /// What its experts compute (activation, biases, width), by its `Info`.
    pub expert_shape: Option<String>,
    /// Why `Info` did not answer, when it did not.
    pub error: Option<String>,
}

/// What a node's record says it could not load, one line per cause.
fn unloadable_lines(record: &NodeRecord) -> Vec<String> {
    record
        .unloadable
        .iter()
        .map(|f| {
            let room = if f.no_room { " (no room)" } else { "" };
            format!("{} experts unloadable{room}: {}", f.experts.len(), f.cause)
        })
        .collect()
}

/// The matrices a node's `Info` says are stored wider than asked, one line each.
fn shape_text(shape: &ExpertShape) -> String {
    let biases = match shape.biased {
        true => "with biases",
        false => "without biases",
    };
    format!(
        "{} {biases}, {} wide",
        shape.activation, shape.intermediate_size
    )
}

fn fallback_lines(info: &NodeInfo) -> Vec<String> {
    let name = |p: i32| {
        WirePrecision::try_from(p).map_or("?".to_string(), |p| {
            p.as_str_name()
                .trim_start_matches("PRECISION_")
                .to_ascii_lowercase()
        })
    };
    info.fallbacks
        .iter()
        .map(|f| {
            format!(
                "{} matrices asked {} stored {}: {}",
                f.matrix,
                name(f.asked),
                name(f.stored),
                f.reason
            )
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpertLoad {
    pub layer: u32,
    pub expert: u32,
    pub tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlacementStatus {
    pub epoch: u64,
    /// Experts of the placement.
    pub experts: usize,
    /// The fraction of them with a node that has loaded the placement.
    pub coverage: f64,
    pub replicas_min: usize,
    pub replicas_mean: f64,
    pub replicas_max: usize,
    /// The most routed experts in the gateways' last reports.
    pub hottest: Vec<ExpertLoad>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayStatus {
    pub address: String,
    pub running: Option<f64>,
    pub waiting: Option<f64>,
    pub kv_usage: Option<f64>,
    pub tokens_per_second: Option<f64>,
    /// Round trips saved by pre-calculation since start (none while it is off).
    pub round_trips_saved: Option<f64>,
    /// The share of the routers' choices in pre-calculated layers that had been pre-calculated.
    pub precalculated_hit_rate: Option<f64>,
    pub error: Option<String>,
}

/// The summary `moe status` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub cluster: String,
    pub leader: Option<String>,
    pub nodes: Vec<NodeStatus>,
    pub placement: Option<PlacementStatus>,
    /// Gateways that reported routing counts to etcd.
    pub reporting_gateways: Vec<String>,
    pub gateways: Vec<GatewayStatus>,
}

impl Status {
    pub fn from_observed(cluster: &str, o: &Observed) -> Status {
        let epoch = o.placement.as_ref().map_or(0, |p| p.epoch);
        let values = |node: &str, i: usize| -> Vec<f64> {
            o.gateways
                .iter()
                .filter_map(|(_, g)| g.as_ref().ok()?.0.links.get(node).map(|l| l[i]))
                .collect()
        };
        let links = |node: &str, i: usize| -> Option<f64> {
            let v = values(node, i);
            (!v.is_empty()).then(|| v.iter().sum())
        };
        let highest = |node: &str, i: usize| values(node, i).into_iter().reduce(f64::max);
        let nodes = o
            .nodes
            .iter()
            .map(|r| {
                let info = o.infos.get(r.id.as_str());
                let ok = info.and_then(|i| i.as_ref().ok());
                let rtt_ms = match (links(&r.id, 0), links(&r.id, 1)) {
                    (Some(sum), Some(count)) if count > 0.0 => Some(sum / count * 1e3),
                    _ => None,
                };
                let rung = highest(&r.id, 4)
                    .and_then(|v| Rung::ALL.get(v as usize))
                    .map(|r| r.flag().to_string());
                let pairs: Vec<Option<f64>> = (6..9).map(|i| links(&r.id, i)).collect();
                let downgraded = match pairs[..] {
                    [Some(high), Some(low), Some(skip)] if high + low + skip > 0.0 => {
                        Some((low + skip) / (high + low + skip))
                    }
                    _ => None,
                };
                NodeStatus {
                    link_rung: rung,
                    saturated: highest(&r.id, 5).map(|v| v > 0.0),
                    downgraded,
                    id: r.id.to_string(),
                    address: r.address.clone(),
                    backend: r.backend.clone(),
                    precisions: r.precisions.clone(),
                    epoch: r.epoch,
                    serving: epoch > 0 && r.epoch >= epoch,
                    experts: ok.map_or(0, |i| i.experts.len()),
                    queue_depth: ok.map_or(0, |i| i.queue_depth),
                    queue_capacity: ok.map_or(0, |i| i.queue_capacity),
                    rtt_ms,
                    bytes_sent: links(&r.id, 2),
                    bytes_received: links(&r.id, 3),
                    gpu_downgraded: ok.map_or(0, |i| i.gpu_downgraded),
                    queue_downgraded: ok.map_or(0, |i| i.queue_downgraded),
                    loading: ok.map(|i| i.loading.clone()).filter(|l| !l.is_empty()),
                    not_serving: ok.map(|i| i.not_serving.clone()).filter(|l| !l.is_empty()),
                    unloadable: unloadable_lines(r),
                    fallbacks: ok.map(fallback_lines).unwrap_or_default(),
                    expert_shape: ok.and_then(|i| i.expert_shape.as_ref()).map(shape_text),
                    error: info.and_then(|i| i.as_ref().err().cloned()),
                }
            })
            .collect::<Vec<_>>();
        let placement = o.placement.as_ref().map(|p| {
            let replicas: Vec<usize> = p.assignments.iter().map(|a| a.nodes.len()).collect();
            let covered = p
                .assignments
                .iter()
                .filter(|a| {
                    let serving = |r: &NodeRecord| r.has_loaded(p, a.layer, a.expert);
                    o.nodes
                        .iter()
                        .any(|r| a.nodes.contains(&r.id) && serving(r))
                })
                .count();
            let mut tokens: BTreeMap<(u32, u32), u64> = BTreeMap::new();
            for c in o.stats.iter().flat_map(|s| &s.counts) {
                *tokens.entry((c.layer, c.expert)).or_default() += c.tokens;
            }
            let mut hottest: Vec<ExpertLoad> = tokens
                .into_iter()
                .map(|((layer, expert), tokens)| ExpertLoad {
                    layer,
                    expert,
                    tokens,
                })
                .collect();
            hottest.sort_by(|a, b| {
                b.tokens
                    .cmp(&a.tokens)
                    .then((a.layer, a.expert).cmp(&(b.layer, b.expert)))
            });
            hottest.truncate(5);
            let n = replicas.len();
            PlacementStatus {
                epoch: p.epoch,
                experts: n,
                coverage: if n == 0 {
                    0.0
                } else {
                    covered as f64 / n as f64
                },
                replicas_min: replicas.iter().copied().min().unwrap_or(0),
                replicas_mean: if n == 0 {
                    0.0
                } else {
                    replicas.iter().sum::<usize>() as f64 / n as f64
                },
                replicas_max: replicas.iter().copied().max().unwrap_or(0),
                hottest,
            }
        });
        let gateways = o
            .gateways
            .iter()
            .map(|(address, g)| match g {
                Ok((m, tps)) => {
                    let [layers, routed, hits] = m.precalculated;
                    GatewayStatus {
                        address: address.clone(),
                        running: Some(m.running),
                        waiting: Some(m.waiting),
                        kv_usage: Some(m.kv_usage),
                        tokens_per_second: *tps,
                        round_trips_saved: (layers > 0.0).then_some(layers),
                        precalculated_hit_rate: (routed > 0.0).then(|| hits / routed),
                        error: None,
                    }
                }
                Err(e) => GatewayStatus {
                    address: address.clone(),
                    running: None,
                    waiting: None,
                    kv_usage: None,
                    tokens_per_second: None,
                    round_trips_saved: None,
                    precalculated_hit_rate: None,
                    error: Some(e.clone()),
                },
            })
            .collect();
        Status {
            cluster: cluster.to_string(),
            leader: o.leader.clone(),
            nodes,
            placement,
            reporting_gateways: o.stats.iter().map(|s| s.gateway.clone()).collect(),
            gateways,
        }
    }

    /// One line on what a starting cluster is still waiting for: the placement and each node.
    pub fn waiting_line(&self) -> String {
        let placement = match &self.placement {
            Some(p) => format!(
                "placement epoch {} covers {:.0}% of {} experts",
                p.epoch,
                p.coverage * 100.0,
                p.experts
            ),
            None if self.leader.is_none() => "no coordinator leader yet".to_string(),
            None => "no placement yet".to_string(),
        };
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                let mut line = match (&n.error, &n.not_serving, &n.loading, n.serving) {
                    (Some(e), _, _, _) => format!("{} not answering ({e})", n.id),
                    (None, Some(why), _, _) => format!("{} not serving: {why}", n.id),
                    (None, None, Some(what), _) => format!("{} loading: {what}", n.id),
                    (None, None, None, true) => format!("{} serving", n.id),
                    (None, None, None, false) => format!("{} loading the placement", n.id),
                };
                for problem in &n.unloadable {
                    line.push_str(&format!(" ({problem})"));
                }
                line
            })
            .collect();
        if nodes.is_empty() {
            format!("{placement}; no node registered yet")
        } else {
            format!("{placement}; {}", nodes.join(", "))
        }
    }

    /// The tables people read.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let leader = self.leader.as_deref().unwrap_or("none");
        let _ = write!(out, "cluster {}  leader {leader}", self.cluster);
        match &self.placement {
            Some(p) => {
                let _ = writeln!(
                    out,
                    "  placement epoch {}  coverage {:.0}% of {} experts  replicas {}-{} (mean {:.2})",
                    p.epoch,
                    p.coverage * 100.0,
                    p.experts,
                    p.replicas_min,
                    p.replicas_max,
                    p.replicas_mean
                );
            }
            None => {
                let _ = writeln!(out, "  no placement yet");
            }
        }
        let _ = writeln!(
            out,
            "\n{:<16} {:<22} {:<8} {:<7} {:>5} {:>7} {:>7} {:>9} {:>10} {:>10} {:<12} {:>6} {:>6}  state",
            "NODE",
            "ADDRESS",
            "BACKEND",
            "PREC",
            "EPOCH",
            "EXPERTS",
            "QUEUE",
            "RTT ms",
            "MB sent",
            "MB recv",
            "LINK",
            "DOWN%",
            "GPU DN"
        );
        let opt =
            |v: Option<f64>, scale: f64| v.map_or("-".to_string(), |v| format!("{:.1}", v * scale));
        for n in &self.nodes {
            let state = n.state();
            let _ = writeln!(
                out,
                "{:<16} {:<22} {:<8} {:<7} {:>5} {:>7} {:>7} {:>9} {:>10} {:>10} {:<12} {:>6} {:>6}  {state}",
                n.id,
                n.address,
                n.backend,
                n.precisions,
                n.epoch,
                n.experts,
                format!("{}/{}", n.queue_depth, n.queue_capacity),
                opt(n.rtt_ms, 1.0),
                opt(n.bytes_sent, 1e-6),
                opt(n.bytes_received, 1e-6),
                match (&n.link_rung, n.saturated) {
                    (Some(r), Some(true)) => format!("{r} (sat)"),
                    (Some(r), _) => r.clone(),
                    (None, _) => "-".to_string(),
                },
                opt(n.downgraded, 100.0),
                n.gpu_downgraded
            );
        }
        for n in &self.nodes {
            for line in n.unloadable.iter().chain(&n.fallbacks) {
                let _ = writeln!(out, "{}: {line}", n.id);
            }
        }
        let shapes: BTreeSet<&String> = self
            .nodes
            .iter()
            .filter_map(|n| n.expert_shape.as_ref())
            .collect();
        match shapes.iter().next() {
            None => {}
            Some(shape) if shapes.len() == 1 => {
                let _ = writeln!(out, "experts: {shape}");
            }
            Some(_) => {
                for n in &self.nodes {
                    let shape = n.expert_shape.as_deref().unwrap_or("-");
                    let _ = writeln!(out, "{}: experts differ from other nodes': {shape}", n.id);
                }
            }
        }
        if let Some(p) = self.placement.as_ref().filter(|p| !p.hottest.is_empty()) {
            let hot: Vec<String> = p
                .hottest
                .iter()
                .map(|h| format!("{}:{} ({} tokens)", h.layer, h.expert, h.tokens))
                .collect();
            let _ = writeln!(out, "\nhottest experts (layer:expert): {}", hot.join(", "));
        }
        if !self.reporting_gateways.is_empty() {
            let _ = writeln!(
                out,
                "gateways reporting: {}",
                self.reporting_gateways.join(", ")
            );
        }
        for g in &self.gateways {
            match &g.error {
                Some(e) => {
                    let _ = writeln!(out, "gateway {}: no answer: {e}", g.address);
                }
                None => {
                    let _ = writeln!(
                        out,
                        "gateway {}: {} running, {} waiting, KV {:.0}%, {} tok/s",
                        g.address,
                        g.running.unwrap_or(0.0),
                        g.waiting.unwrap_or(0.0),
                        g.kv_usage.unwrap_or(0.0) * 100.0,
                        opt(g.tokens_per_second, 1.0)
                    );
                    if let (Some(saved), Some(hits)) =
                        (g.round_trips_saved, g.precalculated_hit_rate)
                    {
                        let _ = writeln!(
                            out,
                            "  pre-calculation: {saved:.0} round trips saved, {:.0}% of the routed pairs pre-calculated",
                            hits * 100.0
                        );
                    }
                }
            }
        }
        out
    }
}

impl NodeStatus {
    /// One word or phrase: serving, loading (with what), not serving (with why), no answer.
    fn state(&self) -> String {
        match (&self.error, &self.not_serving, &self.loading, self.serving) {
            (Some(e), _, _, _) => format!("no answer: {e}"),
            (None, Some(why), _, _) => format!("not serving: {why}"),
            (None, None, Some(what), _) => format!("loading: {what}"),
            (None, None, None, true) => "serving".to_string(),
            (None, None, None, false) => "loading".to_string(),
        }
    }
}

/// `host:port` of a `--gateway` value.
fn host_port(gateway: &str) -> &str {
    let rest = gateway.strip_prefix("http://").unwrap_or(gateway);
    rest.trim_end_matches('/')
}

async fn node_info(
    address: &str,
    tls: Option<&ClientTlsConfig>,
    deadline: Duration,
) -> Result<NodeInfo, String> {
    let call = async {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint =
            Endpoint::from_shared(format!("{scheme}://{address}")).map_err(|e| e.to_string())?;
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| e.to_string())?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| moe_service::causes(&e))?;
        let mut client = ExpertServiceClient::new(channel);
        client
            .info(InfoRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_string())
    };
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {deadline:?}")))
}

/// Each gateway's metrics now, with generated tokens per second since its entry in `previous`
/// (which this read replaces).
async fn read_gateways(
    gateways: &[String],
    previous: &mut BTreeMap<String, (f64, Instant)>,
) -> anyhow::Result<Vec<(String, GatewayRead)>> {
    let mut read = Vec::new();
    for g in gateways {
        let address = host_port(g).to_string();
        let scraped = tokio::task::spawn_blocking({
            let address = address.clone();
            move || blocking::call(&address, &Request::get("/metrics"), Duration::from_secs(5))
        })
        .await?;
        let one = match scraped {
            Ok(response) => {
                let m = GatewayMetrics::parse(&response.body);
                let now = Instant::now();
                let tps = previous.get(g).map(|&(tokens, at)| {
                    (m.generated_tokens - tokens) / now.duration_since(at).as_secs_f64().max(1e-3)
                });
                previous.insert(g.clone(), (m.generated_tokens, now));
                Ok((m, tps))
            }
            Err(e) => Err(format!("{address}/metrics did not answer: {e}")),
        };
        read.push((g.clone(), one));
    }
    Ok(read)
}

/// What a starting cluster is waiting for, as `moe status` sees it, in one line (what `moe up`
/// and the benchmarks say while [`moe_launch::LocalCluster`] waits).
pub fn waiting_on(etcd: &str, cluster: &str) -> String {
    let read = || -> anyhow::Result<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let args = StatusArgs::for_cluster(etcd, cluster);
        let observed = runtime.block_on(observe(&args, &mut BTreeMap::new()))?;
        Ok(Status::from_observed(cluster, &observed).waiting_line())
    };
    read().unwrap_or_else(|e| format!("cannot read the cluster's state: {e:#}"))
}

/// Reads the cluster once; `previous` holds each gateway's generated tokens and when they were
/// read, for its tokens per second.
pub async fn observe(
    args: &StatusArgs,
    previous: &mut BTreeMap<String, (f64, Instant)>,
) -> anyhow::Result<Observed> {
    let deadline = Duration::from_secs(args.timeout_seconds.max(1));
    let keys = ClusterKeys::new(&args.cluster).context("--cluster")?;
    let (nodes_tls, etcd_tls) = args.tls.configs(&args.etcd).map_err(anyhow::Error::msg)?;
    let etcd = Etcd::connect_with(&args.etcd, etcd_tls, deadline).await.with_context(|| {
        format!(
            "cannot reach etcd at {}: start one (apt-get install etcd-server) or point --etcd at the cluster's",
            args.etcd.join(",")
        )
    })?;
    let nodes: Vec<NodeRecord> = Watcher::nodes(&etcd, &keys)
        .await
        .context("reading the node records")?
        .borrow()
        .entries
        .values()
        .cloned()
        .collect();
    let placement = Watcher::placement(&etcd, &keys)
        .await
        .context("reading the placement")?
        .borrow()
        .single()
        .cloned();
    let stats: Vec<GatewayStats> = Watcher::stats(&etcd, &keys)
        .await
        .context("reading the gateways' reports")?
        .borrow()
        .entries
        .values()
        .cloned()
        .collect();
    let leader = tokio::time::timeout(deadline, etcd.client().get(keys.leader(), None))
        .await
        .context("reading the leader: etcd did not answer")?
        .context("reading the leader")?
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
    let mut infos = BTreeMap::new();
    for n in &nodes {
        infos.insert(
            n.id.to_string(),
            node_info(&n.address, nodes_tls.as_ref(), deadline).await,
        );
    }
    let gateways = read_gateways(&args.gateways, previous).await?;
    Ok(Observed {
        nodes,
        infos,
        placement,
        leader,
        stats,
        gateways,
    })
}

pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut previous = BTreeMap::new();
        if !args.watch && !args.gateways.is_empty() {
            // One read a second before the one shown, for the gateways' tokens per second.
            read_gateways(&args.gateways, &mut previous).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        loop {
            let observed = observe(args, &mut previous).await?;
            let status = Status::from_observed(&args.cluster, &observed);
            if args.json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                if args.watch {
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", status.render());
            }
            if !args.watch {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs_f64(args.interval.max(0.1))).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use moe_proto::expert::HeldExpert;
    use moe_state::records::{Assignment, ExpertCount};

    use super::*;

    fn record(id: &str, epoch: u64) -> NodeRecord {
        NodeRecord {
            epoch,
            ..NodeRecord::new(id, format!("10.0.0.{}:50061", id.len()))
        }
    }

    const METRICS: &str = "\
moe:num_requests_running 3
moe:num_requests_waiting 1
moe:kv_cache_usage_perc 0.25
moe:generation_tokens_total 120
moe:expert_node_rtt_seconds_sum{node=\"a\"} 0.5
moe:expert_node_rtt_seconds_count{node=\"a\"} 100
moe:expert_node_bytes_sent_total{node=\"a\"} 2000000
moe:expert_node_bytes_received_total{node=\"a\"} 4000000
moe:expert_link_rung{node=\"a\"} 2
moe:expert_link_saturated{node=\"a\"} 1
moe:expert_pairs_total{node=\"a\",precision=\"high\"} 75
moe:expert_pairs_total{node=\"a\",precision=\"low\"} 20
moe:expert_pairs_total{node=\"a\",precision=\"skip\"} 5
moe:precalculated_layers_total 40
moe:precalculated_routed_pairs_total 80
moe:precalculated_hits_total 60
";

    #[test]
    fn the_summary_counts_coverage_replicas_and_hot_experts() {
        let placement = Placement {
            epoch: 3,
            model: "m".into(),
            layers: 1,
            experts_per_layer: 3,
            assignments: vec![
                Assignment {
                    layer: 0,
                    expert: 0,
                    nodes: vec!["a".into(), "b".into()],
                },
                Assignment {
                    layer: 0,
                    expert: 1,
                    nodes: vec!["b".into()],
                },
                Assignment {
                    layer: 0,
                    expert: 2,
                    nodes: vec!["a".into()],
                },
            ],
        };
        let info = NodeInfo {
            experts: vec![HeldExpert::default(); 2],
            queue_depth: 1,
            queue_capacity: 64,
            ..NodeInfo::default()
        };
        let observed = Observed {
            nodes: vec![record("a", 3), record("b", 2), record("c", 0)],
            infos: BTreeMap::from([
                ("a".to_string(), Ok(info)),
                ("b".to_string(), Err("refused".to_string())),
                (
                    "c".to_string(),
                    Ok(NodeInfo {
                        loading: "building shards: 1/4 (25%)".into(),
                        ..NodeInfo::default()
                    }),
                ),
            ]),
            placement: Some(placement),
            leader: Some("coord-1".into()),
            stats: vec![GatewayStats {
                gateway: "gw".into(),
                window_seconds: 30,
                counts: vec![
                    ExpertCount {
                        layer: 0,
                        expert: 1,
                        tokens: 50,
                    },
                    ExpertCount {
                        layer: 0,
                        expert: 2,
                        tokens: 70,
                    },
                ],
            }],
            gateways: vec![(
                "gw:8000".into(),
                Ok((GatewayMetrics::parse(METRICS), Some(12.5))),
            )],
        };
        let status = Status::from_observed("prod", &observed);
        let p = status.placement.as_ref().unwrap();
        // b has not loaded epoch 3: expert 1, on b alone, is not covered.
        assert!((p.coverage - 2.0 / 3.0).abs() < 1e-9, "{p:?}");
        assert_eq!((p.replicas_min, p.replicas_max), (1, 2));
        assert!((p.replicas_mean - 4.0 / 3.0).abs() < 1e-9);
        assert_eq!((p.hottest[0].expert, p.hottest[0].tokens), (2, 70));
        let a = &status.nodes[0];
        assert!(a.serving && a.experts == 2 && a.queue_depth == 1);
        assert_eq!(a.rtt_ms, Some(5.0));
        assert_eq!(a.bytes_received, Some(4e6));
        assert_eq!(a.link_rung.as_deref(), Some("low-weights"));
        assert_eq!((a.saturated, a.downgraded), (Some(true), Some(0.25)));
        let b = &status.nodes[1];
        assert!(!b.serving);
        assert_eq!(b.error.as_deref(), Some("refused"));
        assert_eq!(status.gateways[0].tokens_per_second, Some(12.5));
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["nodes"][0]["id"], "a");
        assert_eq!(json["leader"], "coord-1");
        assert_eq!(json["placement"]["epoch"], 3);
        let table = status.render();
        assert_eq!(
            status.waiting_line(),
            "placement epoch 3 covers 67% of 3 experts; a serving, b not answering (refused), \
             c loading: building shards: 1/4 (25%)"
        );
        for part in [
            "leader coord-1",
            "coverage 67% of 3 experts",
            "serving",
            "no answer: refused",
            "0:2 (70 tokens)",
            "low-weights (sat)",
            "loading: building shards: 1/4 (25%)",
            "3 running, 1 waiting, KV 25%, 12.5 tok/s",
            "pre-calculation: 40 round trips saved, 75% of the routed pairs pre-calculated",
        ] {
            assert!(table.contains(part), "missing {part:?} in\n{table}");
        }
    }

    #[test]
    fn what_a_node_could_not_load_and_its_fallbacks_are_shown() {
        use moe_proto::expert::FormatFallback;
        use moe_state::records::LoadFailure;
        let placement = Placement {
            epoch: 2,
            model: "m".into(),
            layers: 1,
            experts_per_layer: 2,
            assignments: (0..2)
                .map(|expert| Assignment {
                    layer: 0,
                    expert,
                    nodes: vec!["a".into()],
                })
                .collect(),
        };
        let full = NodeRecord {
            unloadable: vec![LoadFailure {
                cause: "/dev/shm/a: No space left on device (os error 28)".into(),
                no_room: true,
                experts: vec![(0, 1)],
            }],
            ..record("a", 2)
        };
        let info = NodeInfo {
            fallbacks: vec![FormatFallback {
                asked: WirePrecision::Q4 as i32,
                stored: WirePrecision::F16 as i32,
                matrix: "down".into(),
                reason: "40 columns is not a multiple of the 32-element block".into(),
            }],
            not_serving: "could load none of the 2 experts the placement assigns".into(),
            expert_shape: Some(ExpertShape {
                activation: "clamped-swiglu(alpha=1.702, limit=7)".into(),
                biased: true,
                intermediate_size: 2880,
            }),
            ..NodeInfo::default()
        };
        let observed = Observed {
            nodes: vec![full],
            infos: BTreeMap::from([("a".to_string(), Ok(info))]),
            placement: Some(placement),
            ..Observed::default()
        };
        let status = Status::from_observed("c", &observed);
        assert_eq!(status.placement.as_ref().unwrap().coverage, 0.5);
        let waiting = status.waiting_line();
        assert!(
            waiting.contains("a not serving: could load none"),
            "{waiting}"
        );
        assert!(
            waiting.contains("1 experts unloadable (no room): /dev/shm/a"),
            "{waiting}"
        );
        let table = status.render();
        for part in [
            "a: 1 experts unloadable (no room): /dev/shm/a: No space left on device",
            "a: down matrices asked q4 stored f16: 40 columns is not a multiple",
            "not serving: could load none",
            "experts: clamped-swiglu(alpha=1.702, limit=7) with biases, 2880 wide",
        ] {
            assert!(table.contains(part), "missing {part:?} in\n{table}");
        }
    }

    #[test]
    fn gateway_addresses_lose_their_scheme() {
        assert_eq!(host_port("http://127.0.0.1:8000/"), "127.0.0.1:8000");
        assert_eq!(host_port("127.0.0.1:8000"), "127.0.0.1:8000");
    }
}
