//! Running one MoE layer's routed experts on the expert nodes that hold them. The (token,
//! expert, gate weight) pairs are grouped by the node chosen for each expert among its replicas
//! (loaded the placement, then no recent failure, then fewest calls in flight, then the
//! placement's order), and each
//! node gets **one message for the layer**: the token rows its pairs need, once, and per expert
//! the rows, weights, HOBBIT unimportance scores and precision. The nodes' per-token weighted
//! sums are added up in node-id order (for `exact` requests, each pair's output instead, added
//! per token in expert order as the single-process model does). A node that fails, refuses with
//! a retryable status or misses the deadline is left out for the rest of the layer and its
//! experts go to their next replica in the same step (an expert call is idempotent: the KV cache
//! stays here); the layer fails only when some expert has no replica left. Replicas that refused
//! because they do not hold an expert yet (still loading what a new placement gave them) are
//! tried again, every 20 ms within the call deadline, before the layer gives up. A node whose
//! epoch is ahead of this gateway's placement (ABORTED) is retried with the newest placement.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moe_model::Model;
use moe_model::moe::{Route, RoutedExperts};
use moe_model::{ModelError, RoutedError};
use moe_proto::expert::{ExpertWork, LayerRequest, Precision as WirePrecision, PrefetchHint};
use moe_proto::tensor::{self, Limits, WireDtype};
use moe_service::telemetry::traceparent;
use moe_state::records::{ExpertCount, NodeRecord, Placement};
use moe_state::watch::Snapshot;
use prost::Message;
use tokio::sync::{Mutex, watch};
use tonic::Code;
use tonic::transport::ClientTlsConfig;
use tracing::Instrument;

use crate::links::{Health, Links, node_label};
use crate::metric_names as names;
use crate::metrics::header;
use crate::node_client::{CallError, NodeClient};
use crate::policy::{LadderConfig, PairPlan, Rung, Thresholds};
use crate::prediction::{Accuracy, Lookahead, MAX_DISTANCE};
use crate::readiness::{Readiness, unavailable};

/// Why a layer could not be run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DispatchError {
    #[error("no placement is known yet")]
    NoPlacement,
    #[error("layer {layer} expert {expert}: no replica could serve it (last error: {last})")]
    NoReplica {
        layer: usize,
        expert: usize,
        last: String,
    },
    #[error("layer {layer} expert {expert}: no node can serve it: {cause}")]
    Unservable {
        layer: usize,
        expert: usize,
        cause: String,
    },
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("expert node {node}: a malformed reply: {reason}")]
    BadReply { node: String, reason: String },
}

impl DispatchError {
    /// The error as the model reports it, by whether a retry may succeed: a missing placement,
    /// an expert no replica or node could serve and a node that failed are unavailability; a
    /// malformed reply or a request a node refused as malformed are bugs.
    pub fn kind(&self) -> RoutedError {
        let message = self.to_string();
        match self {
            DispatchError::BadReply { .. } => RoutedError::Internal(message),
            DispatchError::Call(call) if !call.retryable() => RoutedError::Internal(message),
            _ => RoutedError::Unavailable(message),
        }
    }
}

/// The precision a request asks its experts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// The nodes' high-precision copies, f32 activations both ways, and every pair's output
    /// returned on its own so the sums are taken in the single-process model's order: its result
    /// bit for bit, at top_k times the reply bytes.
    Exact,
    /// The link-aware policy decides per node link and per pair ([`crate::policy`]): f32
    /// activations and high precision while the link keeps up, then int8 activations, low
    /// precision for unimportant pairs and (when allowed) skipping the least important ones.
    Auto,
}

/// The dispatcher's traffic so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Traffic {
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub seconds: f64,
}

/// One pair of a layer: a token row, its gate weight and unimportance.
#[derive(Debug, Clone, Copy)]
struct Pair {
    token: usize,
    weight: f32,
    unimportance: f32,
}

/// The pairs of each expert, from the routes: HOBBIT's unimportance of a pair is the normalised
/// gate mass of the token's heavier experts (0 for its top expert).
fn pairs_by_expert(routes: &[Route]) -> BTreeMap<usize, Vec<Pair>> {
    let mut by_expert: BTreeMap<usize, Vec<Pair>> = BTreeMap::new();
    for (token, route) in routes.iter().enumerate() {
        let total: f32 = route.weights.iter().sum();
        let mut above = 0.0f32;
        for (&expert, &weight) in route.experts.iter().zip(&route.weights) {
            let unimportance = if total > 0.0 { above / total } else { 0.0 };
            by_expert.entry(expert).or_default().push(Pair {
                token,
                weight,
                unimportance: unimportance.clamp(0.0, 1.0),
            });
            above += weight;
        }
    }
    by_expert
}

/// The message for one node: the rows its experts need (in token order) and their work, each
/// pair as the thresholds plan it at the link's rung (skipped pairs left out, and experts left
/// with none), with the rung's activation dtype. Also the pairs planned at each precision, by
/// [`PairPlan`] order.
fn request(
    layer: usize,
    epoch: u64,
    h: &[f32],
    hidden: usize,
    experts: &[(usize, &[Pair])],
    per_pair: bool,
    policy: (Rung, Thresholds),
) -> (LayerRequest, Vec<usize>, [u64; 3]) {
    let (rung, thresholds) = policy;
    let mut planned = [0u64; 3];
    let experts: Vec<(usize, Vec<(&Pair, PairPlan)>)> = experts
        .iter()
        .map(|&(expert, pairs)| {
            let pairs: Vec<_> = pairs
                .iter()
                .map(|p| (p, thresholds.plan(p.unimportance, rung)))
                .inspect(|(_, plan)| planned[*plan as usize] += 1)
                .filter(|(_, plan)| *plan != PairPlan::Skip)
                .collect();
            (expert, pairs)
        })
        .filter(|(_, pairs)| !pairs.is_empty())
        .collect();
    let tokens: BTreeSet<usize> = experts
        .iter()
        .flat_map(|(_, pairs)| pairs.iter().map(|(p, _)| p.token))
        .collect();
    let tokens: Vec<usize> = tokens.into_iter().collect();
    let row_of: HashMap<usize, u32> = tokens
        .iter()
        .enumerate()
        .map(|(row, &t)| (t, row as u32))
        .collect();
    let mut rows = Vec::with_capacity(tokens.len() * hidden);
    for &t in &tokens {
        rows.extend_from_slice(&h[t * hidden..(t + 1) * hidden]);
    }
    let wire_precision = |plan: PairPlan| match plan {
        PairPlan::Low => WirePrecision::Low as i32,
        PairPlan::High | PairPlan::Skip => WirePrecision::High as i32,
    };
    let work = experts
        .iter()
        .map(|(expert, pairs)| ExpertWork {
            expert: *expert as u32,
            rows: pairs.iter().map(|(p, _)| row_of[&p.token]).collect(),
            weights: pairs.iter().map(|(p, _)| p.weight).collect(),
            precisions: pairs
                .iter()
                .map(|(_, plan)| wire_precision(*plan))
                .collect(),
            // None for `exact`: the node reads that as 0, so its own GPU-link rule never
            // downgrades an exact request.
            unimportance: if per_pair {
                Vec::new()
            } else {
                pairs.iter().map(|(p, _)| p.unimportance).collect()
            },
        })
        .collect();
    let dtype = if rung.int8_activations() {
        WireDtype::I8RowScaled
    } else {
        WireDtype::F32
    };
    // int8 needs finite rows; anything else goes as f32, which takes any value.
    let encoded = tensor::encode(&rows, tokens.len(), hidden, dtype)
        .or_else(|_| tensor::encode(&rows, tokens.len(), hidden, WireDtype::F32))
        .expect("f32 rows of the right length always encode");
    let request = LayerRequest {
        batch_id: 0,
        epoch,
        layer: layer as u32,
        tokens: Some(encoded),
        experts: work,
        reply_dtype: dtype.proto() as i32,
        per_pair,
        traceparent: String::new(),
    };
    (request, tokens, planned)
}

/// One MoE layer's request as an `auto` request sends it on a link at `rung`, for a single node
/// that holds every expert: what `moe eval-quality` runs in process to measure each rung's
/// quality. Also the token of each row of the reply, and the pairs planned at each precision.
pub fn whole_layer_request(
    layer: usize,
    h: &[f32],
    routes: &[Route],
    hidden: usize,
    policy: (Rung, Thresholds),
) -> (LayerRequest, Vec<usize>, [u64; 3]) {
    let pairs = pairs_by_expert(routes);
    let work: Vec<(usize, &[Pair])> = pairs.iter().map(|(e, p)| (*e, p.as_slice())).collect();
    request(layer, 0, h, hidden, &work, false, policy)
}

/// The precision to stage an expert at for its predicted `pairs` on a link at `rung`: low only
/// when none of them would run at high precision.
fn hint_precision(pairs: &[Pair], rung: Rung, thresholds: Thresholds) -> WirePrecision {
    let low = pairs
        .iter()
        .all(|p| thresholds.plan(p.unimportance, rung) != PairPlan::High);
    if low {
        WirePrecision::Low
    } else {
        WirePrecision::High
    }
}

/// The node to send `expert` of `layer` to, among its replicas not `excluded`: one that has
/// loaded the placement, then one that held the expert in the `previous` placement and has not
/// moved on (a node keeps an expert it lost for a grace period, so work finds it while the new
/// replicas load), then one still loading it; within each, one whose calls have not failed
/// lately, then the one with the fewest calls in flight, then the placements' order (the
/// coordinator's choice of primary first). Under light load with healthy nodes that is always
/// the first replica; a replica takes over from a busy or failing one.
fn replica(
    (placement, previous): (&Placement, Option<&Placement>),
    nodes: &Snapshot<NodeRecord>,
    health: &dyn Fn(&str) -> Health,
    layer: usize,
    expert: usize,
    excluded: &BTreeSet<String>,
) -> Option<String> {
    let (l, e) = (layer as u32, expert as u32);
    let holds =
        |node: &String, p: &Placement| nodes.get(node).is_some_and(|r| r.has_loaded(p, l, e));
    // A node that reported it cannot load the expert is no candidate, even as one still loading.
    let unloadable = |node: &String| {
        nodes
            .get(node)
            .is_some_and(|r| r.load_failure(l, e).is_some())
    };
    let current = placement.nodes(l, e);
    let current_tiers = current
        .iter()
        .filter(|n| !unloadable(n))
        .map(|n| (if holds(n, placement) { 0 } else { 2 }, n));
    let earlier = previous.into_iter().flat_map(|p| {
        p.nodes(layer as u32, expert as u32)
            .iter()
            .filter(|n| !current.contains(*n) && holds(n, p))
            .map(|n| (1, n))
    });
    current_tiers
        .chain(earlier)
        .filter(|(_, n)| !excluded.contains(*n))
        .enumerate()
        .min_by_key(|(order, (tier, n))| {
            let h = health(n);
            (*tier, h.failed_recently, h.in_flight, *order)
        })
        .map(|(_, (_, n))| n.clone())
}

/// A share of one expert's pairs in a layer: all of them, or the share rerouted (its pairs
/// planned low on a saturated link, sent to a replica on a less loaded one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Unit {
    expert: usize,
    rerouted: bool,
}

/// Where `expert`'s pairs planned low at `from`'s rung go instead, when `from`'s link is at or
/// above the low-weights rung: a replica not `excluded` that has loaded the placement, has not
/// failed lately and whose own link is below that rung; the lowest rung, then the fewest calls
/// in flight, then the placement's order.
fn reroute_target<'p>(
    placement: &'p Placement,
    nodes: &Snapshot<NodeRecord>,
    health: &dyn Fn(&str) -> Health,
    (layer, expert): (usize, usize),
    from: &str,
    excluded: &BTreeSet<String>,
) -> Option<&'p String> {
    if health(from).rung < Rung::LowWeights {
        return None;
    }
    placement
        .nodes(layer as u32, expert as u32)
        .iter()
        .enumerate()
        .filter(|(_, n)| *n != from && !excluded.contains(*n))
        .filter(|(_, n)| {
            let (l, e) = (layer as u32, expert as u32);
            nodes.get(n).is_some_and(|r| r.has_loaded(placement, l, e))
        })
        .map(|(order, n)| (order, n, health(n)))
        .filter(|(_, _, h)| !h.failed_recently && h.rung < Rung::LowWeights)
        .min_by_key(|(order, _, h)| (h.rung, h.in_flight, *order))
        .map(|(_, n, _)| n)
}

/// The gateway's view of the expert nodes, and its streams to them.
pub struct Dispatcher {
    placement: watch::Receiver<Snapshot<Placement>>,
    /// The last placement seen and the one before it.
    seen: std::sync::Mutex<(Option<Placement>, Option<Placement>)>,
    nodes: watch::Receiver<Snapshot<NodeRecord>>,
    clients: Mutex<HashMap<String, Arc<NodeClient>>>,
    /// TLS towards the nodes (`None`: plaintext).
    tls: Option<ClientTlsConfig>,
    hidden: usize,
    deadline: Duration,
    limits: Limits,
    retries: AtomicU64,
    /// Time spent running layers' routed experts, in nanoseconds.
    expert_nanos: AtomicU64,
    links: Links,
    thresholds: Thresholds,
    /// Layers ahead whose experts are predicted and hinted to the nodes (0 = none).
    prefetch_layers: usize,
    hints: AtomicU64,
    accuracy: Accuracy,
    /// Tokens routed to each (layer, expert) since the counts were last taken.
    routed: std::sync::Mutex<BTreeMap<(u32, u32), u64>>,
    /// Tokens routed to each (layer, expert) since start.
    popularity: std::sync::Mutex<BTreeMap<(u32, u32), u64>>,
}

impl Dispatcher {
    /// Routes by the placement and node records the receivers publish; every expert call gets
    /// `deadline`.
    pub fn new(
        placement: watch::Receiver<Snapshot<Placement>>,
        nodes: watch::Receiver<Snapshot<NodeRecord>>,
        hidden: usize,
        deadline: Duration,
        limits: Limits,
    ) -> Dispatcher {
        Dispatcher {
            placement,
            seen: std::sync::Mutex::new((None, None)),
            nodes,
            clients: Mutex::new(HashMap::new()),
            tls: None,
            hidden,
            deadline,
            limits,
            retries: AtomicU64::new(0),
            expert_nanos: AtomicU64::new(0),
            links: Links::default(),
            thresholds: Thresholds::default(),
            prefetch_layers: 0,
            hints: AtomicU64::new(0),
            accuracy: Accuracy::default(),
            routed: std::sync::Mutex::new(BTreeMap::new()),
            popularity: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The tokens routed to each (layer, expert) since the last call: the gateway's popularity
    /// report for the coordinator.
    pub fn take_counts(&self) -> Vec<ExpertCount> {
        let mut routed = self.routed.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *routed)
            .into_iter()
            .map(|((layer, expert), tokens)| ExpertCount {
                layer,
                expert,
                tokens,
            })
            .collect()
    }

    /// Expert calls retried on another replica so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Protobuf bytes of the layer requests sent and the replies received so far, and the time
    /// spent running layers' routed experts (network and node compute), in seconds.
    pub fn traffic(&self) -> Traffic {
        let (sent_bytes, received_bytes) = self.links.totals();
        Traffic {
            sent_bytes,
            received_bytes,
            seconds: self.expert_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }

    /// Predicts the experts of the next `layers` MoE layers (at most [`MAX_DISTANCE`]) at each
    /// MoE layer and sends the nodes that hold them prefetch hints.
    pub fn with_prefetch_layers(mut self, layers: usize) -> Dispatcher {
        self.prefetch_layers = layers.min(MAX_DISTANCE);
        self
    }

    /// Talks to the nodes over TLS with `tls` (their certificates checked against its CA, its
    /// own certificate presented when it has one).
    pub fn with_tls(mut self, tls: ClientTlsConfig) -> Dispatcher {
        self.tls = Some(tls);
        self
    }

    /// The link-aware precision policy for `auto` requests: HOBBIT's thresholds per pair and the
    /// rule each node link's ladder follows (the default has skipping off).
    pub fn with_policy(mut self, thresholds: Thresholds, ladder: LadderConfig) -> Dispatcher {
        self.thresholds = thresholds;
        self.links = Links::new(ladder);
        self
    }

    /// How well the predictions behind the hints matched the routing, per distance.
    pub fn accuracy(&self) -> &Accuracy {
        &self.accuracy
    }

    /// The dispatcher's series in the Prometheus text format: per node ([`Links`]) and whether
    /// it has loaded the current placement, prediction accuracy, prefetch hints, and the tokens
    /// routed to each expert since start.
    pub fn render_metrics(&self, out: &mut String) {
        self.links.render(out);
        let loaded = names::EXPERT_NODE_PLACEMENT_LOADED;
        header(
            out,
            loaded,
            "1 when the node has loaded the current placement's experts, 0 while it loads them.",
            "gauge",
        );
        if let Some(placement) = self.placement.borrow().single() {
            for (id, record) in &self.nodes.borrow().entries {
                let done = u8::from(record.epoch >= placement.epoch);
                let _ = writeln!(out, "{loaded}{{{}}} {done}", node_label(id));
            }
        }
        self.accuracy.render(out);
        let hints = names::EXPERT_PREFETCH_HINTS_TOTAL;
        header(
            out,
            hints,
            "Prefetch hints sent to expert nodes.",
            "counter",
        );
        let _ = writeln!(out, "{hints} {}", self.hints());
        let routed = names::EXPERT_ROUTED_TOKENS_TOTAL;
        header(
            out,
            routed,
            "Tokens routed to each expert since start.",
            "counter",
        );
        let popularity = self.popularity.lock().unwrap_or_else(|p| p.into_inner());
        for ((layer, expert), tokens) in popularity.iter() {
            let _ = writeln!(
                out,
                "{routed}{{layer=\"{layer}\",expert=\"{expert}\"}} {tokens}"
            );
        }
    }

    /// Prefetch hints queued to nodes so far.
    pub fn hints(&self) -> u64 {
        self.hints.load(Ordering::Relaxed)
    }

    /// Tells the nodes that serve the experts `predicted` routes to in `layer` (by the placement,
    /// as [`Self::run_layer`] would pick them) to stage those experts, each at the precision its
    /// pairs would get now: low when the node's link is at the low-weights rung or above and
    /// every predicted pair of the expert is above T1 (never for `exact`), high otherwise. Only
    /// streams already open get hints: a hint never connects, waits or fails.
    pub async fn hint(&self, layer: usize, predicted: &[Route], precision: Precision) {
        let Ok((placement, previous)) = self.placement() else {
            return;
        };
        let mut by_node: BTreeMap<(String, i32), Vec<u32>> = BTreeMap::new();
        {
            let nodes = self.nodes.borrow();
            let health = |n: &str| self.links.health(n);
            let none = BTreeSet::new();
            for (expert, pairs) in pairs_by_expert(predicted) {
                let placements = (&placement, previous.as_ref());
                let Some(node) = replica(placements, &nodes, &health, layer, expert, &none) else {
                    continue;
                };
                let rung = match precision {
                    Precision::Exact => Rung::Full,
                    Precision::Auto => self.links.rung(&node),
                };
                let precision = hint_precision(&pairs, rung, self.thresholds) as i32;
                by_node
                    .entry((node, precision))
                    .or_default()
                    .push(expert as u32);
            }
        }
        let clients = self.clients.lock().await;
        for ((node, precision), experts) in by_node {
            let Some(client) = clients.get(&node).filter(|c| c.is_alive()) else {
                continue;
            };
            let hint = PrefetchHint {
                epoch: placement.epoch,
                layer: layer as u32,
                experts,
                precision,
            };
            if client.hint(hint) {
                self.hints.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Per node: calls, bytes, round-trip times and the node's own queue and compute time.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The stream to node `id`, opened (again) when there is none or it has ended. A node whose
    /// record is gone (its lease lapsed, e.g. while etcd was away) is still called at its last
    /// known address while the placement names it: a lapsed lease is no proof of death, and a
    /// dead node fails the call or misses the deadline, and its replicas take over.
    async fn client(&self, id: &str) -> Result<Arc<NodeClient>, CallError> {
        let registered = self.nodes.borrow().get(id).map(|r| r.address.clone());
        let mut clients = self.clients.lock().await;
        let address = match (registered, clients.get(id)) {
            (Some(address), _) => address,
            (None, Some(known)) => known.address().to_string(),
            (None, None) => {
                return Err(CallError::Connect {
                    address: id.to_string(),
                    reason: "the node is not registered".into(),
                });
            }
        };
        if let Some(c) = clients.get(id)
            && c.is_alive()
            && c.address() == address
        {
            return Ok(Arc::clone(c));
        }
        let client = NodeClient::connect(
            &address,
            self.tls.as_ref(),
            self.deadline,
            self.limits.max_bytes,
        )
        .await?;
        let client = Arc::new(client);
        clients.insert(id.to_string(), Arc::clone(&client));
        Ok(client)
    }

    /// Whether every expert of the placement has a registered node that has loaded it (its
    /// record's epoch has reached the placement's, and it is not among those the node could not
    /// load): the gateway can serve.
    pub fn ready(&self) -> bool {
        self.readiness().is_ready()
    }

    /// What [`Dispatcher::ready`] decides, with what is missing and why.
    pub fn readiness(&self) -> Readiness {
        let placement = self.placement.borrow();
        let nodes = self.nodes.borrow();
        Readiness::of(placement.single(), &nodes)
    }

    /// The current placement, and the one before it when this gateway saw one.
    fn placement(&self) -> Result<(Placement, Option<Placement>), DispatchError> {
        let current = self
            .placement
            .borrow()
            .single()
            .cloned()
            .ok_or(DispatchError::NoPlacement)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0.as_ref().map(|p| p.epoch) != Some(current.epoch) {
            seen.1 = seen.0.replace(current.clone());
        }
        Ok((current, seen.1.clone()))
    }

    /// Runs layer `layer`'s routed experts for `h` (`[n, hidden]`) and `routes` (one per token);
    /// returns per token the gate-weighted sum of its experts' outputs.
    pub async fn run_layer(
        &self,
        layer: usize,
        h: &[f32],
        routes: &[Route],
        precision: Precision,
    ) -> Result<Vec<f32>, DispatchError> {
        let started = std::time::Instant::now();
        let span = tracing::info_span!("layer", layer, tokens = routes.len(), ?precision);
        let out = self
            .dispatch_layer(layer, h, routes, precision)
            .instrument(span)
            .await;
        self.expert_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }

    async fn dispatch_layer(
        &self,
        layer: usize,
        h: &[f32],
        routes: &[Route],
        precision: Precision,
    ) -> Result<Vec<f32>, DispatchError> {
        let hidden = self.hidden;
        let per_pair = precision == Precision::Exact;
        let mut out = vec![0.0f32; routes.len() * hidden];
        let all = pairs_by_expert(routes);
        for counts in [&self.routed, &self.popularity] {
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            for (&expert, pairs) in &all {
                *counts.entry((layer as u32, expert as u32)).or_default() += pairs.len() as u64;
            }
        }
        let mut remaining: BTreeMap<Unit, Vec<Pair>> = all
            .iter()
            .map(|(&expert, pairs)| {
                let unit = Unit {
                    expert,
                    rerouted: false,
                };
                (unit, pairs.clone())
            })
            .collect();
        // With per-pair replies: each expert's unweighted outputs, one row per pair.
        let mut outputs: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
        let mut excluded: BTreeSet<String> = BTreeSet::new();
        // Nodes that did not hold an expert yet (still loading what a new placement gave them).
        let mut loading: BTreeSet<String> = BTreeSet::new();
        let (mut placement, mut previous) = self.placement()?;
        let mut last = String::from("none");
        let started = std::time::Instant::now();
        // Pairs are rerouted on the first attempt only; a retry sends each share where it can.
        let mut first_attempt = !per_pair;
        'layer: while !remaining.is_empty() {
            let mut by_node: BTreeMap<String, Vec<Unit>> = BTreeMap::new();
            let mut reroutes = Vec::new();
            for &unit in remaining.keys() {
                let expert = unit.expert;
                // The node records are read in a block of their own: the watch's lock must not
                // be held across an await (its writer, the watcher task, would block a runtime
                // worker on it).
                let (chosen, reroute) = {
                    let health = |n: &str| self.links.health(n);
                    let nodes = self.nodes.borrow();
                    let placements = (&placement, previous.as_ref());
                    let chosen = replica(placements, &nodes, &health, layer, expert, &excluded);
                    let reroute = chosen.as_ref().filter(|_| first_attempt).and_then(|node| {
                        let key = (layer, expert);
                        reroute_target(&placement, &nodes, &health, key, node, &excluded)
                    });
                    (chosen, reroute.cloned())
                };
                let Some(node) = chosen else {
                    // No wait helps an expert every node reported it cannot load: fail now.
                    let unservable = {
                        let nodes = self.nodes.borrow();
                        unavailable(&placement, &nodes, layer as u32, expert as u32)
                    };
                    if let Some(cause) = unservable {
                        return Err(DispatchError::Unservable {
                            layer,
                            expert,
                            cause,
                        });
                    }
                    // Replicas still loading get a little time, within the call deadline.
                    if !loading.is_empty() && started.elapsed() < self.deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        excluded.retain(|n| !loading.contains(n));
                        loading.clear();
                        (placement, previous) = self.placement()?;
                        continue 'layer;
                    }
                    return Err(DispatchError::NoReplica {
                        layer,
                        expert,
                        last: last.clone(),
                    });
                };
                if let Some(to) = reroute {
                    reroutes.push((unit, node.clone(), to));
                }
                by_node.entry(node).or_default().push(unit);
            }
            first_attempt = false;
            for (unit, from, to) in reroutes {
                let rung = self.links.rung(&from);
                let (low, kept): (Vec<Pair>, Vec<Pair>) = remaining[&unit]
                    .iter()
                    .partition(|p| self.thresholds.plan(p.unimportance, rung) == PairPlan::Low);
                if low.is_empty() {
                    continue;
                }
                self.links.rerouted(&from, low.len() as u64);
                let moved = Unit {
                    rerouted: true,
                    ..unit
                };
                remaining.insert(moved, low);
                by_node.entry(to).or_default().push(moved);
                if kept.is_empty() {
                    remaining.remove(&unit);
                    by_node.entry(from).or_default().retain(|u| *u != unit);
                } else {
                    remaining.insert(unit, kept);
                }
            }
            by_node.retain(|_, units| !units.is_empty());
            let mut calls = tokio::task::JoinSet::new();
            // Nodes all of whose pairs were skipped: nothing to send.
            let mut skipped = BTreeSet::new();
            // Per node, its experts with their pairs (an expert's shares sent to one node merged,
            // in expert order).
            let mut works: BTreeMap<String, Vec<(usize, Vec<Pair>)>> = BTreeMap::new();
            for (node, units) in &by_node {
                let mut merged: BTreeMap<usize, Vec<Pair>> = BTreeMap::new();
                for unit in units {
                    let pairs = merged.entry(unit.expert).or_default();
                    pairs.extend_from_slice(&remaining[unit]);
                }
                let work: Vec<(usize, Vec<Pair>)> = merged.into_iter().collect();
                let slices: Vec<(usize, &[Pair])> =
                    work.iter().map(|(e, p)| (*e, p.as_slice())).collect();
                let rung = if per_pair {
                    Rung::Full
                } else {
                    self.links.rung(node)
                };
                let policy = (rung, self.thresholds);
                let (mut req, tokens, planned) =
                    request(layer, placement.epoch, h, hidden, &slices, per_pair, policy);
                self.links.planned(node, planned);
                if req.experts.is_empty() {
                    skipped.insert(node.clone());
                    continue;
                }
                let span = tracing::info_span!(
                    "expert_call",
                    node = %node,
                    experts = work.len(),
                    rows = tokens.len(),
                    rung = rung.name(),
                    high = planned[PairPlan::High as usize],
                    low = planned[PairPlan::Low as usize],
                    skipped = planned[PairPlan::Skip as usize],
                );
                works.insert(node.clone(), work);
                req.traceparent = traceparent(&span);
                let sent = req.encoded_len() as u64;
                self.links.started(node);
                let (node, deadline) = (node.clone(), self.deadline);
                let client = self.client(&node).await;
                calls.spawn(
                    async move {
                        let called = std::time::Instant::now();
                        let reply = match client {
                            Ok(client) => client.call(req, deadline).await,
                            Err(e) => Err(e),
                        };
                        (node, tokens, sent, called.elapsed(), reply)
                    }
                    .instrument(span),
                );
            }
            let mut answers = BTreeMap::new();
            while let Some(joined) = calls.join_next().await {
                let (node, tokens, sent, rtt, reply) =
                    joined.expect("an expert call does not panic");
                match &reply {
                    Ok(r) => {
                        let received = r.encoded_len() as u64;
                        self.links
                            .answered(&node, sent, received, rtt, r.timings.as_ref());
                    }
                    Err(_) => self.links.failed(&node, sent, rtt),
                }
                answers.insert(node, (tokens, reply));
            }
            for node in &skipped {
                for unit in &by_node[node] {
                    remaining.remove(unit);
                }
            }
            let mut refresh = false;
            for (node, (tokens, reply)) in answers {
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(CallError::Refused {
                        code: Code::Aborted,
                        ..
                    }) => {
                        refresh = true;
                        continue;
                    }
                    Err(e) if e.retryable() => {
                        tracing::warn!(%node, layer, error = %e, "expert call failed; trying a replica");
                        if let CallError::Refused {
                            code: Code::FailedPrecondition,
                            ..
                        } = e
                        {
                            loading.insert(node.clone());
                        }
                        last = e.to_string();
                        self.retries.fetch_add(1, Ordering::Relaxed);
                        excluded.insert(node);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let bad = |reason: String| DispatchError::BadReply {
                    node: node.clone(),
                    reason,
                };
                let output = reply
                    .output
                    .as_ref()
                    .ok_or_else(|| bad("no output".into()))?;
                let rows =
                    tensor::decode(output, hidden, &self.limits).map_err(|e| bad(e.to_string()))?;
                let work = &works[&node];
                let expected = if per_pair {
                    work.iter().map(|(_, pairs)| pairs.len()).sum()
                } else {
                    tokens.len()
                };
                if rows.rows != expected {
                    return Err(bad(format!("{} rows, expected {expected}", rows.rows)));
                }
                if per_pair {
                    let mut data = rows.data.as_slice();
                    for (expert, pairs) in work {
                        let (mine, rest) = data.split_at(pairs.len() * hidden);
                        outputs.insert(*expert, mine.to_vec());
                        data = rest;
                    }
                } else {
                    for (row, &t) in rows.data.chunks_exact(hidden).zip(&tokens) {
                        for (o, v) in out[t * hidden..(t + 1) * hidden].iter_mut().zip(row) {
                            *o += v;
                        }
                    }
                }
                for unit in &by_node[&node] {
                    remaining.remove(unit);
                }
            }
            if refresh {
                (placement, previous) = self.placement()?;
            }
        }
        // Per-pair outputs are added per token in expert order, weight times output, as the
        // single-process model adds them.
        for (expert, pairs) in &all {
            let Some(ys) = outputs.get(expert) else {
                continue;
            };
            for (p, y) in pairs.iter().zip(ys.chunks_exact(hidden)) {
                let o = &mut out[p.token * hidden..(p.token + 1) * hidden];
                o.iter_mut().zip(y).for_each(|(o, v)| *o += p.weight * v);
            }
        }
        Ok(out)
    }
}

/// A layer's routed experts run by the cluster: what `Model::forward_with` calls on a blocking
/// thread of `runtime` (it waits for the nodes there). With the dispatcher's prefetch layers on,
/// each layer first predicts the next layers' experts from its gate input with their routers
/// (`model` holds them), hints them to the nodes and scores the earlier predictions for itself.
pub struct RemoteExperts<'a> {
    dispatcher: &'a Dispatcher,
    runtime: tokio::runtime::Handle,
    precision: Precision,
    model: &'a Model,
    lookahead: Lookahead,
}

impl<'a> RemoteExperts<'a> {
    /// One forward pass's routed experts; `model` is the one whose forward pass this is.
    pub fn new(
        dispatcher: &'a Dispatcher,
        runtime: tokio::runtime::Handle,
        precision: Precision,
        model: &'a Model,
    ) -> RemoteExperts<'a> {
        RemoteExperts {
            dispatcher,
            runtime,
            precision,
            model,
            lookahead: Lookahead::default(),
        }
    }

    /// Predicts and hints the next `prefetch_layers` MoE layers after `layer` from `h`, the
    /// gate input of `layer`.
    fn predict(&mut self, layer: usize, h: &[f32], n: usize) -> moe_model::Result<()> {
        let ahead = self.model.config().moe_layers().filter(|&l| l > layer);
        for (i, target) in ahead.take(self.dispatcher.prefetch_layers).enumerate() {
            let Some(block) = self.model.moe_block(target) else {
                continue;
            };
            let predicted = block.route(self.model.pool(), h, n)?;
            self.runtime
                .block_on(self.dispatcher.hint(target, &predicted, self.precision));
            self.lookahead.predict(target, i + 1, &predicted);
        }
        Ok(())
    }
}

impl RoutedExperts for RemoteExperts<'_> {
    fn run(&mut self, layer: usize, h: &[f32], routes: &[Route]) -> moe_model::Result<Vec<f32>> {
        for score in self.lookahead.score(layer, routes) {
            self.dispatcher.accuracy.add(score);
        }
        self.predict(layer, h, routes.len())?;
        self.runtime
            .block_on(self.dispatcher.run_layer(layer, h, routes, self.precision))
            .map_err(|e| ModelError::RoutedExperts(e.kind()))
    }
}

#[cfg(test)]
mod tests {
    use moe_state::records::{Assignment, Capacity};

    use super::*;

    fn nodes(epochs: &[(&str, u64)]) -> Snapshot<NodeRecord> {
        let record = |id: &str, epoch| NodeRecord {
            id: id.into(),
            address: format!("{id}:1"),
            backend: "cpu".into(),
            precisions: "f16+q4".into(),
            capacity: Capacity {
                ram_disk_bytes: 0,
                host_memory_bytes: 0,
                gpu_bytes: 0,
                link_bytes_per_second: 0,
            },
            epoch,
            unloadable: Vec::new(),
        };
        Snapshot {
            revision: 1,
            entries: epochs
                .iter()
                .map(|&(id, epoch)| (id.to_string(), record(id, epoch)))
                .collect(),
        }
    }

    /// A watch's read guard held across an await would make a layer's future not `Send`, and
    /// could block a runtime worker on the watch's writer until the await ends (with every
    /// worker so blocked, it never does): the future must stay `Send`.
    #[test]
    fn dispatch_errors_say_whether_a_retry_may_succeed() {
        use crate::node_client::CallError;
        let unavailable = [
            DispatchError::NoPlacement,
            DispatchError::NoReplica {
                layer: 0,
                expert: 1,
                last: "timeout".into(),
            },
            DispatchError::Call(CallError::Connect {
                address: "a".into(),
                reason: "refused".into(),
            }),
        ];
        for e in unavailable {
            assert!(matches!(e.kind(), RoutedError::Unavailable(_)), "{e}");
        }
        let bugs = [
            DispatchError::BadReply {
                node: "node-0".into(),
                reason: "short".into(),
            },
            DispatchError::Call(CallError::Refused {
                address: "a".into(),
                code: tonic::Code::InvalidArgument,
                message: "bad rows".into(),
            }),
        ];
        for e in bugs {
            assert!(matches!(e.kind(), RoutedError::Internal(_)), "{e}");
        }
    }

    #[test]
    fn running_a_layer_holds_no_watch_guard_across_an_await() {
        fn is_send<T: Send>(_: &T) {}
        let (_, placement) = watch::channel(Snapshot {
            revision: 1,
            entries: BTreeMap::new(),
        });
        let (_, nodes) = watch::channel(nodes(&[("a", 1)]));
        let dispatcher = Dispatcher::new(
            placement,
            nodes,
            4,
            Duration::from_secs(1),
            Limits::default(),
        );
        let layer = dispatcher.run_layer(0, &[], &[], Precision::Auto);
        is_send(&layer);
    }

    /// Epoch 2 of a one-expert model whose expert is on nodes a, b and c, in that order.
    fn one_expert_on_abc() -> Placement {
        Placement {
            epoch: 2,
            model: "m".into(),
            layers: 1,
            experts_per_layer: 1,
            assignments: vec![Assignment {
                layer: 0,
                expert: 0,
                nodes: vec!["a".into(), "b".into(), "c".into()],
            }],
        }
    }

    #[test]
    fn replicas_are_chosen_by_loading_health_load_and_order() {
        let placement = one_expert_on_abc();
        let pick =
            |nodes: &Snapshot<NodeRecord>, health: &[(&str, usize, bool)], excluded: &[&str]| {
                let excluded = excluded.iter().map(|n| n.to_string()).collect();
                let health = |n: &str| {
                    health.iter().find(|(id, _, _)| *id == n).map_or(
                        Health::default(),
                        |&(_, in_flight, failed_recently)| Health {
                            in_flight,
                            failed_recently,
                            ..Health::default()
                        },
                    )
                };
                replica((&placement, None), nodes, &health, 0, 0, &excluded)
            };
        let loaded = nodes(&[("a", 2), ("b", 2), ("c", 2)]);
        assert_eq!(pick(&loaded, &[], &[]).as_deref(), Some("a"));
        assert_eq!(pick(&loaded, &[("a", 1, false)], &[]).as_deref(), Some("b"));
        assert_eq!(pick(&loaded, &[("a", 0, true)], &[]).as_deref(), Some("b"));
        assert_eq!(
            pick(
                &loaded,
                &[("a", 0, true), ("b", 3, false), ("c", 1, false)],
                &[]
            )
            .as_deref(),
            Some("c")
        );
        // a has not loaded epoch 2 yet: b serves, then c when b is out.
        let loading = nodes(&[("a", 1), ("b", 2), ("c", 2)]);
        assert_eq!(pick(&loading, &[], &[]).as_deref(), Some("b"));
        assert_eq!(pick(&loading, &[("b", 0, true)], &[]).as_deref(), Some("c"));
        assert_eq!(pick(&loading, &[], &["b"]).as_deref(), Some("c"));
        // Nobody has loaded it: the first replica left; none left: none.
        let stale = nodes(&[("a", 1), ("b", 1), ("c", 1)]);
        assert_eq!(pick(&stale, &[], &["a"]).as_deref(), Some("b"));
        assert_eq!(pick(&stale, &[], &["a", "b", "c"]), None);
    }

    #[test]
    fn while_new_replicas_load_the_previous_holders_serve() {
        let previous = one_expert_on_abc();
        let placement = Placement {
            epoch: 3,
            assignments: vec![Assignment {
                layer: 0,
                expert: 0,
                nodes: vec!["d".into(), "e".into()],
            }],
            ..previous.clone()
        };
        let pick = |nodes: &Snapshot<NodeRecord>, excluded: &[&str]| {
            let excluded = excluded.iter().map(|n| n.to_string()).collect();
            let health = |_: &str| Health::default();
            let placements = (&placement, Some(&previous));
            replica(placements, nodes, &health, 0, 0, &excluded)
        };
        // d and e still load epoch 3; a is gone, b and c held the expert at epoch 2.
        let loading = nodes(&[("b", 2), ("c", 3), ("d", 2), ("e", 2)]);
        assert_eq!(pick(&loading, &[]).as_deref(), Some("b"));
        assert_eq!(pick(&loading, &["b"]).as_deref(), Some("c"));
        assert_eq!(pick(&loading, &["b", "c"]).as_deref(), Some("d"));
        // Once e has loaded epoch 3 it comes first.
        let loaded = nodes(&[("b", 2), ("c", 3), ("d", 2), ("e", 3)]);
        assert_eq!(pick(&loaded, &[]).as_deref(), Some("e"));
        // Without a previous placement only the current replicas are candidates.
        let health = |_: &str| Health::default();
        let alone = replica(
            (&placement, None),
            &loading,
            &health,
            0,
            0,
            &BTreeSet::new(),
        );
        assert_eq!(alone.as_deref(), Some("d"));
    }

    #[test]
    fn low_pairs_are_rerouted_from_a_downgrading_link_to_the_least_loaded_healthy_replica() {
        let placement = one_expert_on_abc();
        let loaded = nodes(&[("a", 2), ("b", 2), ("c", 2)]);
        let target = |nodes: &Snapshot<NodeRecord>, links: &[(&str, Rung, usize, bool)]| {
            let health = |n: &str| {
                links.iter().find(|(id, ..)| *id == n).map_or(
                    Health::default(),
                    |&(_, rung, in_flight, failed_recently)| Health {
                        in_flight,
                        rung,
                        failed_recently,
                    },
                )
            };
            reroute_target(&placement, nodes, &health, (0, 0), "a", &BTreeSet::new()).cloned()
        };
        // a's link only sends int8 activations: nothing to reroute.
        assert_eq!(target(&loaded, &[("a", Rung::Int8Wire, 0, false)]), None);
        // a downgrades pairs: they go to b, the first replica with a calm link.
        let a_low = ("a", Rung::LowWeights, 0, false);
        assert_eq!(target(&loaded, &[a_low]).as_deref(), Some("b"));
        // The lowest rung first, then the fewest calls in flight.
        let busy_b = [a_low, ("b", Rung::Int8Wire, 0, false)];
        assert_eq!(target(&loaded, &busy_b).as_deref(), Some("c"));
        let b_in_flight = [
            a_low,
            ("b", Rung::Full, 2, false),
            ("c", Rung::Full, 1, false),
        ];
        assert_eq!(target(&loaded, &b_in_flight).as_deref(), Some("c"));
        // Never to a replica that downgrades itself, failed lately or has not loaded the
        // placement.
        let others_down = [
            a_low,
            ("b", Rung::LowWeights, 0, false),
            ("c", Rung::Full, 0, true),
        ];
        assert_eq!(target(&loaded, &others_down), None);
        let loading = nodes(&[("a", 2), ("b", 1), ("c", 1)]);
        assert_eq!(target(&loading, &[a_low]), None);
    }

    #[test]
    fn unimportance_is_the_normalised_mass_of_heavier_experts() {
        let routes = [
            Route {
                experts: vec![3, 1],
                weights: vec![0.6, 0.2],
            },
            Route {
                experts: vec![1],
                weights: vec![1.0],
            },
        ];
        let pairs = pairs_by_expert(&routes);
        let of = |e: usize| -> Vec<(usize, f32, f32)> {
            pairs[&e]
                .iter()
                .map(|p| (p.token, p.weight, p.unimportance))
                .collect()
        };
        assert_eq!(of(3), [(0, 0.6, 0.0)]);
        assert_eq!(of(1), [(0, 0.2, 0.75), (1, 1.0, 0.0)]);
    }

    #[test]
    fn a_request_carries_each_needed_row_once() {
        let hidden = 2;
        let h: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let a = [
            Pair {
                token: 3,
                weight: 0.5,
                unimportance: 0.0,
            },
            Pair {
                token: 1,
                weight: 0.25,
                unimportance: 0.5,
            },
        ];
        let b = [Pair {
            token: 3,
            weight: 0.75,
            unimportance: 0.25,
        }];
        let full = (Rung::Full, Thresholds::default());
        let (req, tokens, planned) = request(4, 9, &h, hidden, &[(5, &a), (6, &b)], true, full);
        assert_eq!(planned, [3, 0, 0]);
        assert!(req.per_pair);
        assert_eq!(req.reply_dtype, WireDtype::F32.proto() as i32);
        assert_eq!(tokens, [1, 3]);
        assert_eq!((req.layer, req.epoch), (4, 9));
        let rows =
            tensor::decode(req.tokens.as_ref().unwrap(), hidden, &Limits::default()).unwrap();
        assert_eq!(rows.data, [2.0, 3.0, 6.0, 7.0]);
        assert_eq!(req.experts[0].rows, [1, 0]);
        assert_eq!(req.experts[1].rows, [1]);
        assert!(req.experts[0].unimportance.is_empty(), "exact: no scores");
        let (req, _, _) = request(4, 9, &h, hidden, &[(5, &a), (6, &b)], false, full);
        assert_eq!(req.experts[0].unimportance, [0.0, 0.5]);
    }

    #[test]
    fn an_expert_is_staged_low_only_when_every_predicted_pair_would_run_low() {
        let pair = |unimportance| Pair {
            token: 0,
            weight: 0.5,
            unimportance,
        };
        let t = Thresholds::default();
        let unimportant = [pair(0.7), pair(0.8)];
        assert_eq!(
            hint_precision(&unimportant, Rung::LowWeights, t),
            WirePrecision::Low
        );
        assert_eq!(
            hint_precision(&unimportant, Rung::Int8Wire, t),
            WirePrecision::High
        );
        let mixed = [pair(0.7), pair(0.0)];
        assert_eq!(hint_precision(&mixed, Rung::Skip, t), WirePrecision::High);
    }

    #[test]
    fn a_links_rung_sets_the_wire_dtype_and_each_pairs_precision() {
        let hidden = 4;
        let h: Vec<f32> = (0..12).map(|v| v as f32 - 5.0).collect();
        let pair = |token, unimportance| Pair {
            token,
            weight: 0.5,
            unimportance,
        };
        let a = [pair(0, 0.0), pair(1, 0.7)];
        let b = [pair(2, 0.95)];
        let thresholds = Thresholds::default();
        let high = WirePrecision::High as i32;
        let low = WirePrecision::Low as i32;
        let work: [(usize, &[Pair]); 2] = [(0, &a), (1, &b)];

        let (req, tokens, planned) =
            request(0, 1, &h, hidden, &work, false, (Rung::Int8Wire, thresholds));
        assert_eq!(planned, [3, 0, 0]);
        assert_eq!(tokens, [0, 1, 2]);
        let rows = req.tokens.as_ref().unwrap();
        assert_eq!(rows.dtype, WireDtype::I8RowScaled.proto() as i32);
        assert_eq!(req.reply_dtype, WireDtype::I8RowScaled.proto() as i32);
        let decoded = tensor::decode(rows, hidden, &Limits::default()).unwrap();
        for (got, want) in decoded.data.iter().zip(&h) {
            assert!((got - want).abs() <= 5.0 / 127.0, "{got} vs {want}");
        }
        assert_eq!(req.experts[0].precisions, [high, high]);

        let (req, _, planned) = request(
            0,
            1,
            &h,
            hidden,
            &work,
            false,
            (Rung::LowWeights, thresholds),
        );
        assert_eq!(planned, [1, 2, 0]);
        assert_eq!(req.experts[0].precisions, [high, low]);
        assert_eq!(req.experts[1].precisions, [low]);

        // Skipping leaves out expert 1 (its only pair) and token 2's row.
        let (req, tokens, planned) =
            request(0, 1, &h, hidden, &work, false, (Rung::Skip, thresholds));
        assert_eq!(planned, [1, 1, 1]);
        assert_eq!(tokens, [0, 1]);
        assert_eq!(req.experts.len(), 1);
        assert_eq!(req.experts[0].expert, 0);
    }
}
