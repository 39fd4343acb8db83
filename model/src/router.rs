//! How a MoE layer's router turns one token's logits into its experts and their gate weights, as
//! transformers does it per architecture. Pure: no matrices here (the router's product is in
//! `moe`).

use crate::ops::{sigmoid, softmax};

/// One token's routing decision: expert ids with their gate weights, heaviest first (ties to the
/// lower id).
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub experts: Vec<usize>,
    pub weights: Vec<f32>,
}

/// A router's rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Routing {
    /// Softmax over every expert's logit, the `top_k` largest, renormalised to sum to one when
    /// `normalize` is set (Mixtral, Qwen2/3-MoE, OLMoE).
    Softmax { normalize: bool },
    /// DeepSeek-V3 and GLM-4.5 (`noaux_tc`), see [`Grouped`].
    SigmoidGrouped(Grouped),
}

impl Routing {
    /// The experts and weights of one token with router `logits`; `bias` is the layer's
    /// `e_score_correction_bias` (sigmoid routing only; zero when absent).
    pub fn route(&self, logits: &[f32], bias: Option<&[f32]>, top_k: usize) -> Route {
        match self {
            Routing::Softmax { normalize } => softmax_route(logits, top_k, *normalize),
            Routing::SigmoidGrouped(rule) => rule.route(logits, bias, top_k),
        }
    }
}

/// The `k` largest of `values` among `candidates`, largest first, ties to the lower index.
fn top(values: &[f32], candidates: impl Iterator<Item = usize>, k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = candidates.collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// Softmax over the router logits, the `top_k` largest (ties to the lower id), renormalised to sum
/// to one when `normalize` is set.
fn softmax_route(logits: &[f32], top_k: usize, normalize: bool) -> Route {
    let mut probs = logits.to_vec();
    softmax(&mut probs);
    let experts = top(&probs, 0..probs.len(), top_k);
    let mut weights: Vec<f32> = experts.iter().map(|&e| probs[e]).collect();
    if normalize {
        let sum: f32 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    Route { experts, weights }
}

/// Sigmoid routing with groups: a sigmoid score per expert; experts are chosen by their score
/// plus the layer's `e_score_correction_bias`, among the best `kept_groups` of `groups` equal
/// groups of experts (a group scored by the sum of its two best), and weighted by their unbiased
/// scores, renormalised when `normalize` is set, times `scaling` (`routed_scaling_factor`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grouped {
    pub groups: usize,
    pub kept_groups: usize,
    pub normalize: bool,
    pub scaling: f32,
}

impl Grouped {
    fn route(&self, logits: &[f32], bias: Option<&[f32]>, top_k: usize) -> Route {
        let scores: Vec<f32> = logits.iter().map(|&l| sigmoid(l)).collect();
        let choice: Vec<f32> = match bias {
            Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
            None => scores.clone(),
        };
        let per_group = choice.len() / self.groups.max(1);
        let group_scores: Vec<f32> = choice
            .chunks(per_group.max(1))
            .map(|g| top(g, 0..g.len(), 2).iter().map(|&i| g[i]).sum())
            .collect();
        let kept = top(&group_scores, 0..group_scores.len(), self.kept_groups);
        let candidates = kept
            .iter()
            .flat_map(|&g| g * per_group..(g + 1) * per_group);
        let chosen = top(&choice, candidates, top_k);
        let mut weights: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
        if self.normalize {
            let sum = weights.iter().sum::<f32>() + 1e-20;
            weights.iter_mut().for_each(|w| *w /= sum);
        }
        weights.iter_mut().for_each(|w| *w *= self.scaling);
        // Heaviest first by the weights used (the unbiased scores), ties to the lower id.
        let mut pairs: Vec<(usize, f32)> = chosen.into_iter().zip(weights).collect();
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let (experts, weights) = pairs.into_iter().unzip();
        Route { experts, weights }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_routing_picks_top_k_and_renormalises() {
        let r = softmax_route(&[0.0, 2.0, 1.0, -1.0], 2, true);
        assert_eq!(r.experts, vec![1, 2]);
        assert!((r.weights.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(r.weights[0] > r.weights[1]);
        let raw = softmax_route(&[0.0, 2.0, 1.0, -1.0], 2, false);
        assert!(raw.weights.iter().sum::<f32>() < 0.95);
        assert!((raw.weights[0] / raw.weights[1] - 1f32.exp()).abs() < 1e-4);
        assert_eq!(softmax_route(&[1.0, 1.0, 1.0], 2, true).experts, vec![0, 1]);
    }

    #[test]
    fn sigmoid_routing_keeps_the_best_groups_selects_by_bias_and_weighs_without_it() {
        let routing = Routing::SigmoidGrouped(Grouped {
            groups: 2,
            kept_groups: 1,
            normalize: true,
            scaling: 2.5,
        });
        // Group 0 = experts 0-3, group 1 = experts 4-7. Expert 7 has the best logit, but group 0
        // has the better two-best sum, so it is chosen; the bias lifts expert 3 above expert 1.
        let logits = [2.0, 1.0, -3.0, 0.9, -3.0, -3.0, -3.0, 3.0];
        let bias = [0.0, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0];
        let r = routing.route(&logits, Some(&bias), 2);
        assert_eq!(r.experts, vec![0, 3]);
        let (s0, s3) = (sigmoid(2.0), sigmoid(0.9));
        let want = [s0 / (s0 + s3 + 1e-20) * 2.5, s3 / (s0 + s3 + 1e-20) * 2.5];
        assert!(
            r.weights
                .iter()
                .zip(want)
                .all(|(a, b)| (a - b).abs() < 1e-6),
            "{r:?}"
        );
        let unbiased = routing.route(&logits, None, 2);
        assert_eq!(unbiased.experts, vec![0, 1]);

        let one_group = Routing::SigmoidGrouped(Grouped {
            groups: 1,
            kept_groups: 1,
            normalize: false,
            scaling: 1.0,
        });
        let r = one_group.route(&logits, None, 2);
        assert_eq!(r.experts, vec![7, 0]);
        assert!((r.weights[0] - sigmoid(3.0)).abs() < 1e-7);
    }
}
