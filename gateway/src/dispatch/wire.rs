//! What goes on the wire for a layer: the one message per node (the rows its experts need, once,
//! and each pair's precision at the link's rung), and a node's reply decoded and added into the
//! layer's output. Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use moe_model::moe::Route;
use moe_proto::expert::{ExpertWork, LayerReply, LayerRequest, Precision as WirePrecision};
use moe_proto::tensor::{self, Limits, WireDtype};

use super::pairs::{Pair, pairs_by_expert};
use crate::policy::{PairCounts, PairPlan, Rung, Thresholds};

/// The message for one node: the rows its experts need (in token order) and their work, each
/// pair as the thresholds plan it at the link's rung (skipped pairs left out, and experts left
/// with none), with the rung's activation dtype. Also the pairs planned at each precision.
pub(super) fn request(
    layer: usize,
    epoch: u64,
    h: &[f32],
    hidden: usize,
    experts: &[(usize, &[Pair])],
    per_pair: bool,
    policy: (Rung, Thresholds),
) -> (LayerRequest, Vec<usize>, PairCounts) {
    let (rung, thresholds) = policy;
    let mut planned = PairCounts::default();
    let experts: Vec<(usize, Vec<(&Pair, PairPlan)>)> = experts
        .iter()
        .map(|&(expert, pairs)| {
            let pairs: Vec<_> = pairs
                .iter()
                .map(|p| (p, thresholds.plan(p.unimportance, rung)))
                .inspect(|(_, plan)| planned[*plan] += 1)
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
) -> (LayerRequest, Vec<usize>, PairCounts) {
    let pairs = pairs_by_expert(routes);
    let work: Vec<(usize, &[Pair])> = pairs.iter().map(|(e, p)| (*e, p.as_slice())).collect();
    request(layer, 0, h, hidden, &work, false, policy)
}

/// A node's reply for `work` (its experts with their pairs), whose rows answer `tokens`: per
/// token sums added into `out` (`[n, hidden]`), or with `per_pair` each expert's unweighted
/// outputs, one row per pair, put in `outputs`. `Err` says what is malformed.
pub(super) fn merge_reply(
    reply: &LayerReply,
    (work, tokens): (&[(usize, Vec<Pair>)], &[usize]),
    (hidden, limits, per_pair): (usize, &Limits, bool),
    out: &mut [f32],
    outputs: &mut BTreeMap<usize, Vec<f32>>,
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
        for (expert, pairs) in work {
            let (mine, rest) = data.split_at(pairs.len() * hidden);
            outputs.insert(*expert, mine.to_vec());
            data = rest;
        }
    } else {
        for (row, &t) in rows.data.chunks_exact(hidden).zip(tokens) {
            for (o, v) in out[t * hidden..(t + 1) * hidden].iter_mut().zip(row) {
                *o += v;
            }
        }
    }
    Ok(())
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
