//! One layer's dispatch in progress (with the later layer pre-calculated with it, if any): the
//! shares not answered yet, the nodes left out after they failed, those still loading, and what
//! the answers added up to so far. Pure: the dispatcher feeds it each attempt's answers.

use std::collections::{BTreeMap, BTreeSet};

use moe_proto::expert::LayerReply;
use moe_proto::tensor::Limits;
use moe_state::records::NodeId;
use tonic::Code;

use super::DispatchError;
use super::pairs::Pair;
use super::plan::Unit;
use super::wire::{LayerExpert, NodeWork, Sums, add_pair_outputs, merge_reply};
use crate::node_client::CallError;

pub(super) struct LayerRun {
    /// The layer run; a later layer pre-calculated with it has units of its own.
    pub(super) layer: usize,
    /// The shares of the layer's pairs not answered yet.
    pub(super) remaining: BTreeMap<Unit, Vec<Pair>>,
    /// Nodes that failed during this layer: no longer tried for it.
    pub(super) excluded: BTreeSet<NodeId>,
    /// Of those, the ones that did not hold an expert yet (still loading what a new placement
    /// gave them): tried again while the deadline allows.
    pub(super) loading: BTreeSet<NodeId>,
    /// The last failure, for the error when no replica is left.
    pub(super) last: String,
    /// Pairs are rerouted on the first attempt only; a retry sends each share where it can.
    pub(super) first_attempt: bool,
    /// `exact`: each pair's output comes back on its own.
    pub(super) per_pair: bool,
    sums: Sums,
}

/// The pairs of each expert of one layer.
pub(super) type ExpertPairs = BTreeMap<usize, Vec<Pair>>;

/// What one node's answer did to the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// Its shares are done.
    Merged,
    /// The node is ahead of this gateway's placement: read the placement again.
    Refresh,
    /// It failed in a way a replica may not: its shares go to their next replicas.
    Retry,
}

impl LayerRun {
    /// The run of layer `layer`'s pairs `all`, with a later layer's `ahead` (layer, pairs) on
    /// the same rows when it is pre-calculated; `values` is `n * hidden`.
    pub(super) fn new(
        (layer, all): (usize, &ExpertPairs),
        ahead: Option<(usize, &ExpertPairs)>,
        values: usize,
        per_pair: bool,
    ) -> LayerRun {
        let parts = std::iter::once((layer, all)).chain(ahead);
        let remaining = parts
            .flat_map(|(layer, all)| {
                all.iter().map(move |(&expert, pairs)| {
                    let unit = Unit {
                        layer,
                        expert,
                        rerouted: false,
                    };
                    (unit, pairs.clone())
                })
            })
            .collect();
        LayerRun {
            layer,
            remaining,
            excluded: BTreeSet::new(),
            loading: BTreeSet::new(),
            last: String::from("none"),
            first_attempt: !per_pair,
            per_pair,
            sums: Sums {
                now: vec![0.0; values],
                ahead: if ahead.is_some() {
                    vec![0.0; values]
                } else {
                    Vec::new()
                },
                outputs: BTreeMap::new(),
            },
        }
    }

    /// Each (layer, expert) of `units` with its pairs (an expert's shares sent to one node
    /// merged), in order.
    pub(super) fn work(&self, units: &[Unit]) -> Vec<(LayerExpert, Vec<Pair>)> {
        let mut merged: BTreeMap<LayerExpert, Vec<Pair>> = BTreeMap::new();
        for unit in units {
            merged
                .entry((unit.layer, unit.expert))
                .or_default()
                .extend_from_slice(&self.remaining[unit]);
        }
        merged.into_iter().collect()
    }

    /// Marks `units` done.
    pub(super) fn done(&mut self, units: &[Unit]) {
        for unit in units {
            self.remaining.remove(unit);
        }
    }

    /// Takes node `node`'s `reply` to its `units` (`work`, whose rows answer `tokens`).
    pub(super) fn answer(
        &mut self,
        (node, units): (&NodeId, &[Unit]),
        reply: Result<LayerReply, CallError>,
        (work, tokens): (&NodeWork, &[usize]),
        (hidden, limits): (usize, &Limits),
    ) -> Result<Answer, DispatchError> {
        let reply = match reply {
            Ok(reply) => reply,
            Err(CallError::Refused {
                code: Code::Aborted,
                ..
            }) => return Ok(Answer::Refresh),
            Err(e) if e.retryable() => {
                if let CallError::Refused {
                    code: Code::FailedPrecondition,
                    ..
                } = e
                {
                    self.loading.insert(node.clone());
                }
                self.last = e.to_string();
                self.excluded.insert(node.clone());
                return Ok(Answer::Retry);
            }
            Err(e) => return Err(e.into()),
        };
        let shape = (hidden, limits, self.per_pair);
        merge_reply(&reply, (self.layer, work, tokens), shape, &mut self.sums).map_err(
            |reason| DispatchError::BadReply {
                node: node.to_string(),
                reason,
            },
        )?;
        self.done(units);
        Ok(Answer::Merged)
    }

    /// Lets the nodes that were still loading be tried again.
    pub(super) fn retry_loading(&mut self) {
        self.excluded.retain(|n| !self.loading.contains(n));
        self.loading.clear();
    }

    /// The layer's output: per token, the gate-weighted sum of its experts' outputs; and the
    /// pre-calculated later layer's, when there was one.
    pub(super) fn finish(mut self, all: &ExpertPairs, hidden: usize) -> (Vec<f32>, Vec<f32>) {
        add_pair_outputs(all, &self.sums.outputs, hidden, &mut self.sums.now);
        (self.sums.now, self.sums.ahead)
    }
}
