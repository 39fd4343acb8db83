//! What goes on the wire for a layer: the one message per node (the rows its experts need, once,
//! and each pair's precision at the link's rung), and a node's reply decoded and added into the
//! layer's output. Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use moe_model::moe::Route;
use moe_proto::expert::{
    AheadWork, ExpertWork, LayerReply, LayerRequest, Precision as WirePrecision,
};
use moe_proto::tensor::{self, Limits, WireDtype};

use super::pairs::{Pair, pairs_by_expert};
use crate::policy::{PairCounts, PairPlan, Rung, Thresholds};

/// An expert of a layer: `(layer, expert)`.
pub(super) type LayerExpert = (usize, usize);

/// One node's work in an attempt: each (layer, expert) with its pairs.
pub(super) type NodeWork = [(LayerExpert, Vec<Pair>)];

/// The message for one node: the rows its experts need (in token order) and their work, each
/// pair as the thresholds plan it at the link's rung (skipped pairs left out, and experts left
/// with none), with the rung's activation dtype. `work`'s experts of a layer other than `layer`
/// (a later one, pre-calculated on the same rows) travel as the request's ahead work. Also the
/// pairs planned at each precision.
pub(super) fn request(
    (layer, epoch): (usize, u64),
    h: &[f32],
    hidden: usize,
    work: &[(LayerExpert, &[Pair])],
    per_pair: bool,
    policy: (Rung, Thresholds),
) -> (LayerRequest, Vec<usize>, PairCounts) {
    let (rung, thresholds) = policy;
    let mut planned = PairCounts::default();
    let work: Vec<(LayerExpert, Vec<(&Pair, PairPlan)>)> = work
        .iter()
        .map(|&(key, pairs)| {
            let pairs: Vec<_> = pairs
                .iter()
                .map(|p| (p, thresholds.plan(p.unimportance, rung)))
                .inspect(|(_, plan)| planned[*plan] += 1)
                .filter(|(_, plan)| *plan != PairPlan::Skip)
                .collect();
            (key, pairs)
        })
        .filter(|(_, pairs)| !pairs.is_empty())
        .collect();
    let tokens: BTreeSet<usize> = work
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
    let expert_work = |(expert, pairs): &(usize, &Vec<(&Pair, PairPlan)>)| ExpertWork {
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
    };
    let mut experts = Vec::new();
    let mut ahead: Option<AheadWork> = None;
    for ((l, expert), pairs) in &work {
        let w = expert_work(&(*expert, pairs));
        if *l == layer {
            experts.push(w);
        } else {
            let part = ahead.get_or_insert_with(|| AheadWork {
                layer: *l as u32,
                experts: Vec::new(),
            });
            debug_assert_eq!(part.layer, *l as u32, "one later layer per request");
            part.experts.push(w);
        }
    }
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
        experts,
        reply_dtype: dtype.proto() as i32,
        per_pair,
        traceparent: String::new(),
        ahead,
    };
    (request, tokens, planned)
}

/// One MoE layer's request as an `auto` request sends it on a link at `rung`, for a single node
/// that holds every expert, with a later layer's predicted routes as its ahead work when
/// `ahead` gives them: what `moe eval-quality` runs in process to measure each rung's quality.
/// Also the token of each row of the reply, and the pairs planned at each precision.
pub fn whole_layer_request(
    layer: usize,
    h: &[f32],
    (routes, ahead): (&[Route], Option<(usize, &[Route])>),
    hidden: usize,
    policy: (Rung, Thresholds),
) -> (LayerRequest, Vec<usize>, PairCounts) {
    let now = std::iter::once((layer, pairs_by_expert(routes)));
    let parts: Vec<_> = now
        .chain(ahead.map(|(l, predicted)| (l, pairs_by_expert(predicted))))
        .collect();
    let work: Vec<(LayerExpert, &[Pair])> = parts
        .iter()
        .flat_map(|(l, pairs)| pairs.iter().map(|(e, p)| ((*l, *e), p.as_slice())))
        .collect();
    request((layer, 0), h, hidden, &work, false, policy)
}

/// Where a layer's answers add up: per token the sum of its experts' weighted outputs for the
/// layer (`now`) and for the later layer pre-calculated with it (`ahead`, empty when none), both
/// `[n, hidden]`; or, with per-pair replies, each expert's unweighted outputs, one row per pair.
#[derive(Debug, Default)]
pub(super) struct Sums {
    pub(super) now: Vec<f32>,
    pub(super) ahead: Vec<f32>,
    pub(super) outputs: BTreeMap<usize, Vec<f32>>,
}

/// A node's reply for `work` (its experts with their pairs; those of a layer other than `layer`
/// are its ahead work), whose rows answer `tokens`, added into `sums`. `Err` says what is
/// malformed.
pub(super) fn merge_reply(
    reply: &LayerReply,
    (layer, work, tokens): (usize, &NodeWork, &[usize]),
    (hidden, limits, per_pair): (usize, &Limits, bool),
    sums: &mut Sums,
) -> Result<(), String> {
    let output = reply.output.as_ref().ok_or("no output")?;
    let rows = tensor::decode(output, hidden, limits).map_err(|e| e.to_string())?;
    let expected = if per_pair {
        work.iter().map(|(_, pairs)| pairs.len()).sum()
    } else {
        tokens.len()
    };
    if rows.rows != expected {
        return Err(format!("{} rows, expected {expected}", rows.rows));
    }
    if per_pair {
        let mut data = rows.data.as_slice();
        for ((_, expert), pairs) in work {
            let (mine, rest) = data.split_at(pairs.len() * hidden);
            sums.outputs.insert(*expert, mine.to_vec());
            data = rest;
        }
        return Ok(());
    }
    add_rows(&rows.data, tokens, hidden, &mut sums.now);
    if work.iter().any(|((l, _), _)| *l != layer) {
        let ahead = reply.ahead_output.as_ref().ok_or("no ahead output")?;
        let rows = tensor::decode(ahead, hidden, limits).map_err(|e| e.to_string())?;
        if rows.rows != tokens.len() {
            let expected = tokens.len();
            return Err(format!("{} ahead rows, expected {expected}", rows.rows));
        }
        add_rows(&rows.data, tokens, hidden, &mut sums.ahead);
    }
    Ok(())
}

/// Adds reply rows, row `i` answering token `tokens[i]`, into `out` (`[n, hidden]`).
fn add_rows(data: &[f32], tokens: &[usize], hidden: usize, out: &mut [f32]) {
    for (row, &t) in data.chunks_exact(hidden).zip(tokens) {
        for (o, v) in out[t * hidden..(t + 1) * hidden].iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// Adds per-pair outputs into `out`, per token in expert order, weight times output, as the
/// single-process model adds them.
pub(super) fn add_pair_outputs(
    all: &BTreeMap<usize, Vec<Pair>>,
    outputs: &BTreeMap<usize, Vec<f32>>,
    hidden: usize,
    out: &mut [f32],
) {
    for (expert, pairs) in all {
        let Some(ys) = outputs.get(expert) else {
            continue;
        };
        for (p, y) in pairs.iter().zip(ys.chunks_exact(hidden)) {
            let o = &mut out[p.token * hidden..(p.token + 1) * hidden];
            o.iter_mut().zip(y).for_each(|(o, v)| *o += p.weight * v);
        }
    }
}
