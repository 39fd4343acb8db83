//! A layer's (token, expert) pairs as the routes give them, with HOBBIT's unimportance of each,
//! and the precision a predicted expert is staged at. Pure.

use std::collections::BTreeMap;

use moe_model::moe::Route;
use moe_proto::expert::Precision as WirePrecision;

use crate::policy::{PairPlan, Rung, Thresholds};

/// One pair of a layer: a token row, its gate weight and unimportance.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pair {
    pub(super) token: usize,
    pub(super) weight: f32,
    pub(super) unimportance: f32,
}

/// The pairs of each expert, from the routes: HOBBIT's unimportance of a pair is the normalised
/// gate mass of the token's heavier experts (0 for its top expert).
pub(super) fn pairs_by_expert(routes: &[Route]) -> BTreeMap<usize, Vec<Pair>> {
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

/// The precision to stage an expert at for its predicted `pairs` on a link at `rung`: low only
/// when none of them would run at high precision.
pub(super) fn hint_precision(pairs: &[Pair], rung: Rung, thresholds: Thresholds) -> WirePrecision {
    let low = pairs
        .iter()
        .all(|p| thresholds.plan(p.unimportance, rung) != PairPlan::High);
    if low {
        WirePrecision::Low
    } else {
        WirePrecision::High
    }
}
