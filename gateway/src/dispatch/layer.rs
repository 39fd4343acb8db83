//! One layer's dispatch in progress: the shares not answered yet, the nodes left out after they
//! failed, those still loading, and what the answers added up to so far. Pure: the dispatcher
//! feeds it each attempt's answers.

use std::collections::{BTreeMap, BTreeSet};

use moe_proto::expert::LayerReply;
use moe_proto::tensor::Limits;
use moe_state::records::NodeId;
use tonic::Code;

use super::DispatchError;
use super::pairs::Pair;
use super::plan::Unit;
use super::wire::{add_pair_outputs, merge_reply};
use crate::node_client::CallError;

pub(super) struct LayerRun {
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
    /// Per token, the sum of its experts' weighted outputs (`[n, hidden]`).
    out: Vec<f32>,
    /// With per-pair replies: each expert's unweighted outputs, one row per pair.
    outputs: BTreeMap<usize, Vec<f32>>,
}

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
    pub(super) fn new(all: &BTreeMap<usize, Vec<Pair>>, values: usize, per_pair: bool) -> LayerRun {
        let remaining = all
            .iter()
            .map(|(&expert, pairs)| {
                let unit = Unit {
                    expert,
                    rerouted: false,
                };
                (unit, pairs.clone())
            })
            .collect();
        LayerRun {
            remaining,
            excluded: BTreeSet::new(),
            loading: BTreeSet::new(),
            last: String::from("none"),
            first_attempt: !per_pair,
            per_pair,
            out: vec![0.0; values],
            outputs: BTreeMap::new(),
        }
    }

    /// Each expert of `units` with its pairs (an expert's shares sent to one node merged), in
    /// expert order.
    pub(super) fn work(&self, units: &[Unit]) -> Vec<(usize, Vec<Pair>)> {
        let mut merged: BTreeMap<usize, Vec<Pair>> = BTreeMap::new();
        for unit in units {
            merged
                .entry(unit.expert)
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
        (work, tokens): (&[(usize, Vec<Pair>)], &[usize]),
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
        merge_reply(
            &reply,
            (work, tokens),
            shape,
            &mut self.out,
            &mut self.outputs,
        )
        .map_err(|reason| DispatchError::BadReply {
            node: node.to_string(),
            reason,
        })?;
        self.done(units);
        Ok(Answer::Merged)
    }

    /// Lets the nodes that were still loading be tried again.
    pub(super) fn retry_loading(&mut self) {
        self.excluded.retain(|n| !self.loading.contains(n));
        self.loading.clear();
    }

    /// The layer's output: per token, the gate-weighted sum of its experts' outputs.
    pub(super) fn finish(mut self, all: &BTreeMap<usize, Vec<Pair>>, hidden: usize) -> Vec<f32> {
        add_pair_outputs(all, &self.outputs, hidden, &mut self.out);
        self.out
    }
}
