//! Expert prediction by HOBBIT's stacked gating: at an MoE layer, the gate input goes through the
//! routers of the next `d` MoE layers as well (dense layers in between are not counted),
//! predicting which experts those layers will route each token to. The predictions become
//! prefetch hints for the nodes; when a predicted layer routes for real, they are scored: the
//! share of its (token, expert) pairs that were predicted, per distance.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use moe_model::moe::Route;

use crate::metric_names as names;
use crate::metrics::header;

/// The furthest layer ahead predicted.
pub const MAX_DISTANCE: usize = 3;

/// How well one distance's predictions for one layer matched its routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    pub distance: usize,
    /// Actual (token, expert) pairs that were predicted.
    pub hits: u64,
    /// Actual (token, expert) pairs.
    pub pairs: u64,
}

/// The predictions made at one distance for one layer: the distance and each token's experts.
type Prediction = (usize, Vec<Vec<usize>>);

/// One forward pass's predictions not yet scored, by target layer.
#[derive(Debug, Default)]
pub struct Lookahead {
    pending: BTreeMap<usize, Vec<Prediction>>,
}

impl Lookahead {
    /// Records `routes`, predicted for layer `target` from the MoE layer `distance` MoE layers
    /// before it.
    pub fn predict(&mut self, target: usize, distance: usize, routes: &[Route]) {
        let experts = routes.iter().map(|r| r.experts.clone()).collect();
        self.pending
            .entry(target)
            .or_default()
            .push((distance, experts));
    }

    /// Scores and forgets the predictions for `layer` against the routes it took. Predictions
    /// for a different number of tokens are dropped unscored.
    pub fn score(&mut self, layer: usize, actual: &[Route]) -> Vec<Score> {
        let Some(predictions) = self.pending.remove(&layer) else {
            return Vec::new();
        };
        predictions
            .into_iter()
            .filter(|(_, predicted)| predicted.len() == actual.len())
            .map(|(distance, predicted)| {
                let mut score = Score {
                    distance,
                    hits: 0,
                    pairs: 0,
                };
                for (route, guess) in actual.iter().zip(&predicted) {
                    score.pairs += route.experts.len() as u64;
                    score.hits += route.experts.iter().filter(|e| guess.contains(e)).count() as u64;
                }
                score
            })
            .collect()
    }
}

/// Scores summed per distance since start; Prometheus series labelled `distance="d"`.
#[derive(Debug, Default)]
pub struct Accuracy {
    hits: [AtomicU64; MAX_DISTANCE],
    pairs: [AtomicU64; MAX_DISTANCE],
}

impl Accuracy {
    pub fn add(&self, score: Score) {
        let Some(i) = score.distance.checked_sub(1).filter(|&i| i < MAX_DISTANCE) else {
            return;
        };
        self.hits[i].fetch_add(score.hits, Ordering::Relaxed);
        self.pairs[i].fetch_add(score.pairs, Ordering::Relaxed);
    }

    /// `(hits, pairs)` at `distance`.
    pub fn at(&self, distance: usize) -> (u64, u64) {
        let i = distance - 1;
        (
            self.hits[i].load(Ordering::Relaxed),
            self.pairs[i].load(Ordering::Relaxed),
        )
    }

    pub fn render(&self, out: &mut String) {
        let rows: Vec<(usize, u64, u64)> = (1..=MAX_DISTANCE)
            .map(|d| {
                let (hits, pairs) = self.at(d);
                (d, hits, pairs)
            })
            .filter(|&(_, _, pairs)| pairs > 0)
            .collect();
        type Value = fn(u64, u64) -> f64;
        let families: [(&str, &str, &str, Value); 3] = [
            (
                names::EXPERT_PREDICTION_PAIRS_TOTAL,
                "Routed (token, expert) pairs of layers that had been predicted, by distance.",
                "counter",
                |_, pairs| pairs as f64,
            ),
            (
                names::EXPERT_PREDICTION_HITS_TOTAL,
                "Of those, the pairs the prediction named.",
                "counter",
                |hits, _| hits as f64,
            ),
            (
                names::EXPERT_PREDICTION_ACCURACY,
                "Hits over pairs since start, by distance.",
                "gauge",
                |hits, pairs| hits as f64 / pairs as f64,
            ),
        ];
        for (name, help, kind, value) in families {
            header(out, name, help, kind);
            for &(d, hits, pairs) in &rows {
                let _ = writeln!(out, "{name}{{distance=\"{d}\"}} {}", value(hits, pairs));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(experts: &[&[usize]]) -> Vec<Route> {
        experts
            .iter()
            .map(|e| Route {
                experts: e.to_vec(),
                weights: vec![1.0 / e.len() as f32; e.len()],
            })
            .collect()
    }

    #[test]
    fn predictions_are_scored_once_against_the_layer_they_name() {
        let mut ahead = Lookahead::default();
        ahead.predict(1, 1, &routes(&[&[1, 2], &[3, 4]]));
        ahead.predict(2, 2, &routes(&[&[5, 6], &[7, 0]]));
        ahead.predict(2, 1, &routes(&[&[5, 1], &[7, 2]]));
        let actual1 = routes(&[&[2, 1], &[4, 5]]);
        assert_eq!(
            ahead.score(1, &actual1),
            [Score {
                distance: 1,
                hits: 3,
                pairs: 4
            }]
        );
        assert!(ahead.score(1, &actual1).is_empty(), "scored twice");
        let actual2 = routes(&[&[5, 6], &[7, 3]]);
        let mut scores = ahead.score(2, &actual2);
        scores.sort_by_key(|s| s.distance);
        assert_eq!(
            scores,
            [
                Score {
                    distance: 1,
                    hits: 2,
                    pairs: 4
                },
                Score {
                    distance: 2,
                    hits: 3,
                    pairs: 4
                },
            ]
        );
        ahead.predict(3, 1, &routes(&[&[1, 2]]));
        assert!(
            ahead.score(3, &actual2).is_empty(),
            "a different token count is not scored"
        );
    }

    #[test]
    fn accuracy_renders_the_distances_that_have_scores() {
        let accuracy = Accuracy::default();
        accuracy.add(Score {
            distance: 1,
            hits: 3,
            pairs: 4,
        });
        accuracy.add(Score {
            distance: 1,
            hits: 1,
            pairs: 4,
        });
        accuracy.add(Score {
            distance: 3,
            hits: 0,
            pairs: 2,
        });
        accuracy.add(Score {
            distance: 9,
            hits: 1,
            pairs: 1,
        });
        let mut text = String::new();
        accuracy.render(&mut text);
        for line in [
            "moe:expert_prediction_pairs_total{distance=\"1\"} 8",
            "moe:expert_prediction_hits_total{distance=\"1\"} 4",
            "moe:expert_prediction_accuracy{distance=\"1\"} 0.5",
            "moe:expert_prediction_accuracy{distance=\"3\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("distance=\"2\""), "{text}");
    }
}
