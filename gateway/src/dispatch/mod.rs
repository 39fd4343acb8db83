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
//!
//! The parts, each with one job: `pairs` (a layer's pairs and their unimportance), `plan` (the
//! replica of each share and the reroutes of one attempt), `wire` (the message per node and a
//! reply added into the output), `layer` (the retry state of one layer), `clients` (the streams
//! to the nodes), `popularity` (tokens routed per expert); this module runs the attempts.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moe_model::Model;
use moe_model::moe::{Route, RoutedExperts};
use moe_model::{ModelError, RoutedError};
use moe_proto::expert::PrefetchHint;
use moe_proto::tensor::Limits;
use moe_service::telemetry::traceparent;
use moe_state::records::{ExpertCount, NodeId, NodeRecord, Placement};
use moe_state::watch::Snapshot;
use prost::Message;
use tokio::sync::watch;
use tonic::transport::ClientTlsConfig;
use tracing::Instrument;

use crate::links::{Links, node_label};
use crate::metric_names as names;
use crate::metrics::header;
use crate::node_client::CallError;
use crate::policy::{LadderConfig, PairCounts, PairPlan, Rung, Thresholds};
use crate::precalculation::{PreCalculate, Precalculation, Tallies, Tally};
use crate::prediction::{Accuracy, Lookahead, MAX_DISTANCE};
use crate::readiness::{Readiness, unavailable};

mod clients;
mod layer;
mod pairs;
mod plan;
mod popularity;
mod table;
#[cfg(test)]
mod tests;
mod wire;

use clients::Clients;
use layer::{Answer, LayerRun};
use pairs::{Pair, hint_precision, pairs_by_expert};
use plan::{Attempt, Unit, assign, message_rung, replica, reroute_target, runs_low};
use popularity::Popularity;
use table::{Replicas, RoutingTable};
pub use wire::whole_layer_request;
use wire::{LayerExpert, request};

/// The routing tables of the last placement seen and of the one before it.
type Tables = (Option<Arc<RoutingTable>>, Option<Arc<RoutingTable>>);

/// How long a layer waits before trying replicas again that were still loading its experts.
const LOADING_RETRY: Duration = Duration::from_millis(20);

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

/// The gateway's view of the expert nodes, and its streams to them.
pub struct Dispatcher {
    placement: watch::Receiver<Snapshot<Placement>>,
    /// The routing tables of the last placement seen and of the one before it, built once per
    /// epoch.
    seen: std::sync::Mutex<Tables>,
    nodes: watch::Receiver<Snapshot<NodeRecord>>,
    clients: Arc<Clients>,
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
    popularity: Popularity,
    /// Which MoE layers carry the next one's predicted experts for `auto` requests.
    pre_calculate: PreCalculate,
    precalculated: Tallies,
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
            clients: Arc::new(Clients::new(deadline, limits.max_bytes)),
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
            popularity: Popularity::default(),
            pre_calculate: PreCalculate::Off,
            precalculated: Tallies::default(),
        }
    }

    /// The tokens routed to each (layer, expert) since the last call: the gateway's popularity
    /// report for the coordinator.
    pub fn take_counts(&self) -> Vec<ExpertCount> {
        self.popularity.take()
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

    /// Pre-calculates the MoE layers `mode` names for `auto` requests (DAOP): their predicted
    /// experts run with an earlier layer's, in its messages ([`crate::precalculation`]).
    pub fn with_pre_calculate(mut self, mode: PreCalculate) -> Dispatcher {
        self.pre_calculate = mode;
        self
    }

    /// Talks to the nodes over TLS with `tls` (their certificates checked against its CA, its
    /// own certificate presented when it has one).
    pub fn with_tls(mut self, tls: ClientTlsConfig) -> Dispatcher {
        self.clients = Arc::new(self.clients.speaking_tls(tls));
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
        {
            let nodes = self.nodes.borrow();
            self.links.know(nodes.entries.keys().map(|id| id.as_str()));
        }
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
                let done = u8::from(record.has_reached(placement));
                let _ = writeln!(out, "{loaded}{{{}}} {done}", node_label(id));
            }
        }
        self.accuracy.render(out);
        self.precalculated.render(out);
        let hints = names::EXPERT_PREFETCH_HINTS_TOTAL;
        header(
            out,
            hints,
            "Prefetch hints sent to expert nodes.",
            "counter",
        );
        let _ = writeln!(out, "{hints} {}", self.hints());
        self.popularity.render(out);
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
        let mut by_node: BTreeMap<(NodeId, i32), Vec<u32>> = BTreeMap::new();
        {
            let nodes = self.nodes.borrow();
            let health = |n: &str| self.links.health(n);
            let none = BTreeSet::new();
            for (expert, pairs) in pairs_by_expert(predicted) {
                let placements = (&*placement, previous.as_deref());
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
        for ((node, precision), experts) in by_node {
            let hint = PrefetchHint {
                epoch: placement.epoch(),
                layer: layer as u32,
                experts,
                precision,
            };
            if self.clients.hint(&node, hint) {
                self.hints.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Per node: calls, bytes, round-trip times and the node's own queue and compute time.
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Node `id`'s address in its record, if it has one (see [`Clients::get`]).
    fn address(&self, id: &NodeId) -> Option<String> {
        self.nodes
            .borrow()
            .get(id.as_str())
            .map(|r| r.address.clone())
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

    /// The current placement's routing table, and the previous placement's when this gateway
    /// saw one; a table is built when its epoch is first seen, then shared.
    fn placement(&self) -> Result<(Arc<RoutingTable>, Option<Arc<RoutingTable>>), DispatchError> {
        let epoch = self
            .placement
            .borrow()
            .single()
            .map(|p| p.epoch)
            .ok_or(DispatchError::NoPlacement)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0.as_ref().map(|t| t.epoch()) != Some(epoch) {
            let current = self.placement.borrow().single().cloned();
            let current = current.ok_or(DispatchError::NoPlacement)?;
            seen.1 = seen.0.replace(Arc::new(RoutingTable::new(current)));
            let (now, before) = (seen.0.as_deref(), seen.1.as_deref());
            let named = |node: &NodeId| [now, before].into_iter().flatten().any(|t| t.names(node));
            self.clients.retain(named);
        }
        let current = seen.0.clone().expect("set above");
        Ok((current, seen.1.clone()))
    }

    /// Runs layer `layer`'s routed experts for `h` (`[n, hidden]`) and `routes` (one per token);
    /// returns per token the gate-weighted sum of its experts' outputs. With `ahead`, a later
    /// layer and its predicted routes, that layer's experts run on the same rows in the same
    /// messages and its sums come back too (`auto` only: an `exact` request ignores `ahead`).
    pub async fn run_layer(
        &self,
        layer: usize,
        h: &[f32],
        (routes, ahead): (&[Route], Option<(usize, &[Route])>),
        precision: Precision,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>), DispatchError> {
        let started = std::time::Instant::now();
        let ahead = ahead.filter(|_| precision == Precision::Auto);
        let span = tracing::info_span!(
            "layer",
            layer,
            tokens = routes.len(),
            ahead = ahead.map(|(l, _)| l),
            ?precision
        );
        let out = self
            .dispatch_layer(layer, h, (routes, ahead), precision)
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
        (routes, ahead): (&[Route], Option<(usize, &[Route])>),
        precision: Precision,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>), DispatchError> {
        let all = pairs_by_expert(routes);
        self.popularity.record(layer, &all);
        let ahead = ahead.map(|(l, predicted)| (l, pairs_by_expert(predicted)));
        if let Some((l, pairs)) = &ahead {
            self.popularity.record(*l, pairs);
        }
        let per_pair = precision == Precision::Exact;
        let values = routes.len() * self.hidden;
        let later = ahead.as_ref().map(|(l, pairs)| (*l, pairs));
        let mut run = LayerRun::new((layer, &all), later, values, per_pair);
        let (mut placement, mut previous) = self.placement()?;
        let started = Instant::now();
        while !run.remaining.is_empty() {
            let attempt = match self.plan(&mut run, (&placement, previous.as_deref())) {
                Ok(attempt) => attempt,
                Err(unit) => {
                    self.wait_for_replicas(unit, &placement, &run, started)?;
                    tokio::time::sleep(LOADING_RETRY).await;
                    run.retry_loading();
                    (placement, previous) = self.placement()?;
                    continue;
                }
            };
            run.first_attempt = false;
            for (from, pairs) in &attempt.rerouted {
                self.links.rerouted(from, *pairs);
            }
            if self
                .call_nodes(h, &mut run, &attempt, placement.epoch())
                .await?
            {
                (placement, previous) = self.placement()?;
            }
        }
        let (now, later) = run.finish(&all, self.hidden);
        Ok((now, ahead.map(|_| later)))
    }

    /// One attempt's routing table for the shares `run` has left, by the node records and the
    /// links' health now; `Err` is a share no replica can take.
    fn plan(
        &self,
        run: &mut LayerRun,
        (placement, previous): (&RoutingTable, Option<&RoutingTable>),
    ) -> Result<Attempt, Unit> {
        // The node records are read in a block of their own: the watch's lock must not be held
        // across an await (its writer, the watcher task, would block a runtime worker on it).
        let nodes = self.nodes.borrow();
        let health = |n: &str| self.links.health(n);
        let (excluded, first_attempt) = (&run.excluded, run.first_attempt);
        let choose = |&Unit { layer, expert, .. }: &Unit| {
            let node = replica(
                (placement, previous),
                &nodes,
                &health,
                layer,
                expert,
                excluded,
            )?;
            let reroute = first_attempt
                .then(|| {
                    reroute_target(placement, &nodes, &health, (layer, expert), &node, excluded)
                })
                .flatten()
                .cloned();
            Some((node, reroute))
        };
        let low = |p: &Pair, from: &str| runs_low(self.thresholds, p, self.links.rung(from));
        assign(&mut run.remaining, &choose, &low)
    }

    /// `Ok` when replicas of `unit`'s expert are still loading and the deadline leaves time to
    /// wait for them; otherwise why the layer fails: every node reported it cannot load the
    /// expert, or no replica is left.
    fn wait_for_replicas(
        &self,
        Unit { layer, expert, .. }: Unit,
        placement: &RoutingTable,
        run: &LayerRun,
        started: Instant,
    ) -> Result<(), DispatchError> {
        let unservable = {
            let nodes = self.nodes.borrow();
            unavailable(placement.placement(), &nodes, layer as u32, expert as u32)
        };
        if let Some(cause) = unservable {
            return Err(DispatchError::Unservable {
                layer,
                expert,
                cause,
            });
        }
        if !run.loading.is_empty() && started.elapsed() < self.deadline {
            return Ok(());
        }
        Err(DispatchError::NoReplica {
            layer,
            expert,
            last: run.last.clone(),
        })
    }

    /// Sends each node of `attempt` its one message for the layer, waits for every answer and
    /// takes them into `run`; whether the placement must be read again.
    async fn call_nodes(
        &self,
        h: &[f32],
        run: &mut LayerRun,
        attempt: &Attempt,
        epoch: u64,
    ) -> Result<bool, DispatchError> {
        let mut calls = tokio::task::JoinSet::new();
        let mut works = BTreeMap::new();
        for (node, units) in &attempt.by_node {
            let work = run.work(units);
            let slices: Vec<(LayerExpert, &[Pair])> =
                work.iter().map(|(e, p)| (*e, p.as_slice())).collect();
            let rung = match run.per_pair {
                true => Rung::Full,
                false => message_rung(self.links.rung(node), units),
            };
            let policy = (rung, self.thresholds);
            let (mut req, tokens, planned) = request(
                (run.layer, epoch),
                h,
                self.hidden,
                &slices,
                run.per_pair,
                policy,
            );
            self.links.planned(node, planned);
            let ahead: usize = slices
                .iter()
                .filter(|((l, _), _)| *l != run.layer)
                .map(|(_, p)| p.len())
                .sum();
            self.links.precalculated(node, ahead as u64);
            if req.experts.is_empty() && req.ahead.is_none() {
                // All of the node's pairs were skipped: nothing to send.
                run.done(units);
                continue;
            }
            let span = call_span(node, work.len(), tokens.len(), rung, planned);
            req.traceparent = traceparent(&span);
            let sent = req.encoded_len() as u64;
            self.links.started(node);
            let (id, deadline) = (node.clone(), self.deadline);
            let (clients, registered) = (Arc::clone(&self.clients), self.address(node));
            calls.spawn(
                async move {
                    let called = Instant::now();
                    let reply = match clients.get(&id, registered).await {
                        Ok(client) => client.call(req, deadline).await,
                        Err(e) => Err(e),
                    };
                    (id, sent, called.elapsed(), reply)
                }
                .instrument(span),
            );
            works.insert(node.clone(), (work, tokens));
        }
        // Every answer first, then taken in node-id order: the per-token sums are added in it.
        let mut answers = BTreeMap::new();
        while let Some(joined) = calls.join_next().await {
            let (node, sent, rtt, reply) = joined.expect("an expert call does not panic");
            match &reply {
                Ok(r) => {
                    let received = r.encoded_len() as u64;
                    self.links
                        .answered(&node, sent, received, rtt, r.timings.as_ref());
                }
                Err(_) => self.links.failed(&node, sent, rtt),
            }
            answers.insert(node, reply);
        }
        let mut refresh = false;
        for (node, reply) in answers {
            let (work, tokens) = &works[&node];
            let units = (&node, attempt.by_node[&node].as_slice());
            let shape = (self.hidden, &self.limits);
            match run.answer(units, reply, (work, tokens), shape)? {
                Answer::Merged => {}
                Answer::Refresh => refresh = true,
                Answer::Retry => {
                    let error = &run.last;
                    let layer = run.layer;
                    tracing::warn!(%node, layer, %error, "expert call failed; trying a replica");
                    self.retries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(refresh)
    }
}

/// The span of one node's expert call.
fn call_span(
    node: &str,
    experts: usize,
    rows: usize,
    rung: Rung,
    planned: PairCounts,
) -> tracing::Span {
    tracing::info_span!(
        "expert_call",
        node = %node,
        experts,
        rows,
        rung = rung.name(),
        high = planned[PairPlan::High],
        low = planned[PairPlan::Low],
        skipped = planned[PairPlan::Skip],
    )
}

/// A layer's routed experts run by the cluster: what `Model::forward_with` calls on a blocking
/// thread of `runtime` (it waits for the nodes there). With the dispatcher's prefetch layers on,
/// each layer first predicts the next layers' experts from its gate input with their routers
/// (`model` holds them), hints them to the nodes and scores the earlier predictions for itself.
/// With pre-calculation on (`auto` only), the layers it names run a later layer's predicted
/// experts in the same messages, and that layer is answered from them.
pub struct RemoteExperts<'a> {
    dispatcher: &'a Dispatcher,
    runtime: tokio::runtime::Handle,
    precision: Precision,
    model: &'a Model,
    lookahead: Lookahead,
    precalculation: Precalculation,
    /// The tokens of each sequence of the pass, in order, and each one's pre-calculated layers.
    sequences: Vec<usize>,
    precalculated: Vec<Tally>,
}

impl<'a> RemoteExperts<'a> {
    /// One forward pass's routed experts; `model` is the one whose forward pass this is, and
    /// `sequences` the tokens of each of its sequences, in the order they are fed.
    pub fn new(
        dispatcher: &'a Dispatcher,
        runtime: tokio::runtime::Handle,
        (precision, model): (Precision, &'a Model),
        sequences: &[usize],
    ) -> RemoteExperts<'a> {
        let mode = match precision {
            Precision::Auto => dispatcher.pre_calculate,
            Precision::Exact => PreCalculate::Off,
        };
        RemoteExperts {
            dispatcher,
            runtime,
            precision,
            model,
            lookahead: Lookahead::default(),
            precalculation: Precalculation::new(mode, model),
            sequences: sequences.to_vec(),
            precalculated: vec![Tally::default(); sequences.len()],
        }
    }

    /// Each sequence's layers answered from a pre-calculation in this pass so far, and how its
    /// tokens' routing matched.
    pub fn precalculated(&self) -> &[Tally] {
        &self.precalculated
    }

    /// Adds one pre-calculated layer's per-token tallies to the pass's sequences and the
    /// dispatcher's totals.
    fn count(&mut self, tokens: &[Tally]) {
        self.dispatcher.precalculated.add(Tally::of_layer(tokens));
        let layer = Tally::per_sequence(tokens, &self.sequences);
        for (sum, t) in self.precalculated.iter_mut().zip(layer) {
            sum.add(t);
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
        if let Some((out, tokens)) = self.precalculation.take(layer, routes) {
            self.count(&tokens);
            return Ok(out);
        }
        self.predict(layer, h, routes.len())?;
        let (dispatcher, runtime, precision) = (self.dispatcher, &self.runtime, self.precision);
        let run = |later: Option<(usize, &[Route])>| {
            let layer_run = dispatcher.run_layer(layer, h, (routes, later), precision);
            let outputs = runtime.block_on(layer_run);
            outputs.map_err(|e| ModelError::RoutedExperts(e.kind()))
        };
        self.precalculation.run(self.model, (layer, h, routes), run)
    }
}
