//! DAOP's predictive pre-calculation for `auto` requests: at some MoE layers the next MoE
//! layer's router is applied to this layer's routed-expert input, and that layer's predicted
//! experts run on the same rows in the same messages to the nodes. When the next layer comes,
//! its output is the one computed early, and its own round trip is saved; its real routing only
//! scores the prediction. The accuracy cost is measured, not assumed (`moe eval-quality`
//! `--pre-calculate`). Pure: the dispatcher and the quality study run what it plans.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use moe_model::Model;
use moe_model::moe::Route;

use crate::metric_names as names;
use crate::metrics::header;

/// Which MoE layers are pre-calculated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PreCalculate {
    /// None: every MoE layer makes its own round trip.
    #[default]
    Off,
    /// Every other one: the 1st, 3rd, ... MoE layer of a forward pass carries the next MoE
    /// layer's predicted experts, halving the round trips.
    Alternate,
}

impl PreCalculate {
    pub const ALL: [PreCalculate; 2] = [PreCalculate::Off, PreCalculate::Alternate];

    pub fn name(self) -> &'static str {
        match self {
            PreCalculate::Off => "off",
            PreCalculate::Alternate => "alternate",
        }
    }

    /// The MoE layer whose experts are pre-calculated at MoE layer `layer`, given the model's
    /// MoE layers in order; `None` when `layer` carries none.
    pub fn ahead_of(self, moe_layers: &[usize], layer: usize) -> Option<usize> {
        let index = moe_layers.iter().position(|&l| l == layer)?;
        match self {
            PreCalculate::Off => None,
            PreCalculate::Alternate if index % 2 == 0 => moe_layers.get(index + 1).copied(),
            PreCalculate::Alternate => None,
        }
    }
}

impl std::str::FromStr for PreCalculate {
    type Err = String;

    fn from_str(s: &str) -> Result<PreCalculate, String> {
        PreCalculate::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("`{s}`: expected off or alternate"))
    }
}

/// How the pre-calculated layers went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Layers answered from a pre-calculation: round trips saved.
    pub layers: u64,
    /// (token, expert) pairs their routers chose.
    pub routed: u64,
    /// Of those, the pairs that were pre-calculated.
    pub hits: u64,
}

impl Tally {
    /// The tokens' tallies of one pre-calculated layer as that layer's: one round trip saved.
    pub fn of_layer(tokens: &[Tally]) -> Tally {
        let mut sum = Tally::default();
        tokens.iter().for_each(|t| sum.add(*t));
        sum.layers = u64::from(!tokens.is_empty());
        sum
    }

    /// One pre-calculated layer's per-token tallies split among the sequences of a pass, whose
    /// tokens are `sequences` long, in order: each sequence's as a layer of its own.
    pub fn per_sequence(tokens: &[Tally], sequences: &[usize]) -> Vec<Tally> {
        let mut start = 0;
        sequences
            .iter()
            .map(|n| {
                let end = (start + n).min(tokens.len());
                let of = Tally::of_layer(&tokens[start..end]);
                start = end;
                of
            })
            .collect()
    }

    pub fn add(&mut self, other: Tally) {
        self.layers += other.layers;
        self.routed += other.routed;
        self.hits += other.hits;
    }

    /// The share of the chosen pairs that were pre-calculated (1 with none).
    pub fn hit_rate(&self) -> f64 {
        if self.routed == 0 {
            1.0
        } else {
            self.hits as f64 / self.routed as f64
        }
    }
}

/// A layer's output, and the later layer's computed with it when there was one.
pub type LayerOutputs = (Vec<f32>, Option<Vec<f32>>);

/// A later layer's output computed early, waiting for its layer.
struct Pending {
    layer: usize,
    predicted: Vec<Route>,
    out: Vec<f32>,
}

/// One forward pass's pre-calculation: what `mode` plans at each MoE layer, the output waiting
/// for its layer, and the tally of the layers answered.
pub struct Precalculation {
    mode: PreCalculate,
    moe_layers: Vec<usize>,
    pending: Option<Pending>,
    pub tally: Tally,
}

impl Precalculation {
    pub fn new(mode: PreCalculate, model: &Model) -> Precalculation {
        Precalculation {
            mode,
            moe_layers: model.config().moe_layers().collect(),
            pending: None,
            tally: Tally::default(),
        }
    }

    /// Runs MoE layer `layer` (routed-expert input `h`, `[n, hidden]`, and `routes`) with
    /// `run`, which gets the later layer this mode pre-calculates here, if any, with its routes
    /// as its router predicts them from `h`, and returns that layer's output beside this one's;
    /// the later output is kept for its layer ([`Self::take`]).
    pub fn run(
        &mut self,
        model: &Model,
        (layer, h, routes): (usize, &[f32], &[Route]),
        run: impl FnOnce(Option<(usize, &[Route])>) -> moe_model::Result<LayerOutputs>,
    ) -> moe_model::Result<Vec<f32>> {
        let ahead = self.plan(model, layer, h, routes.len())?;
        let later = ahead
            .as_ref()
            .map(|(l, predicted)| (*l, predicted.as_slice()));
        let (out, early) = run(later)?;
        if let (Some((l, predicted)), Some(early)) = (ahead, early) {
            self.keep(l, predicted, early);
        }
        Ok(out)
    }

    /// The later MoE layer to pre-calculate at MoE layer `layer` and its predicted routes: its
    /// router applied to `h`, `layer`'s routed-expert input (`[n, hidden]`).
    fn plan(
        &self,
        model: &Model,
        layer: usize,
        h: &[f32],
        n: usize,
    ) -> moe_model::Result<Option<(usize, Vec<Route>)>> {
        let Some(ahead) = self.mode.ahead_of(&self.moe_layers, layer) else {
            return Ok(None);
        };
        let Some(block) = model.moe_block(ahead) else {
            return Ok(None);
        };
        Ok(Some((ahead, block.route(model.pool(), h, n)?)))
    }

    /// Keeps layer `layer`'s output `out`, computed early for its `predicted` routes.
    fn keep(&mut self, layer: usize, predicted: Vec<Route>, out: Vec<f32>) {
        self.pending = Some(Pending {
            layer,
            predicted,
            out,
        });
    }

    /// Layer `layer`'s output when it was computed early, with its prediction scored against
    /// the routes the layer chose, per token (a layer each; their sum is added to
    /// [`Self::tally`] as one layer); `None` when it must run now.
    pub fn take(&mut self, layer: usize, routes: &[Route]) -> Option<(Vec<f32>, Vec<Tally>)> {
        if self.pending.as_ref().is_none_or(|p| p.layer != layer) {
            return None;
        }
        let pending = self.pending.take()?;
        let per_token: Vec<Tally> = routes
            .iter()
            .zip(&pending.predicted)
            .map(|(route, guess)| Tally {
                layers: 1,
                routed: route.experts.len() as u64,
                hits: route
                    .experts
                    .iter()
                    .filter(|e| guess.experts.contains(e))
                    .count() as u64,
            })
            .collect();
        self.tally.add(Tally::of_layer(&per_token));
        Some((pending.out, per_token))
    }
}

/// The pre-calculated layers' tally since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct Tallies {
    layers: AtomicU64,
    routed: AtomicU64,
    hits: AtomicU64,
}

impl Tallies {
    pub fn add(&self, tally: Tally) {
        self.layers.fetch_add(tally.layers, Ordering::Relaxed);
        self.routed.fetch_add(tally.routed, Ordering::Relaxed);
        self.hits.fetch_add(tally.hits, Ordering::Relaxed);
    }

    pub fn get(&self) -> Tally {
        Tally {
            layers: self.layers.load(Ordering::Relaxed),
            routed: self.routed.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
        }
    }

    pub fn render(&self, out: &mut String) {
        let tally = self.get();
        let series = [
            (
                names::PRECALCULATED_LAYERS_TOTAL,
                "MoE layers answered from an earlier layer's pre-calculation: round trips saved.",
                tally.layers,
            ),
            (
                names::PRECALCULATED_ROUTED_PAIRS_TOTAL,
                "(token, expert) pairs the routers of pre-calculated layers chose.",
                tally.routed,
            ),
            (
                names::PRECALCULATED_HITS_TOTAL,
                "Of those, the pairs that were pre-calculated.",
                tally.hits,
            ),
        ];
        for (name, help, value) in series {
            header(out, name, help, "counter");
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(experts: &[usize]) -> Route {
        Route {
            experts: experts.to_vec(),
            weights: vec![0.5; experts.len()],
        }
    }

    #[test]
    fn alternate_pre_calculates_every_other_moe_layer_from_the_first() {
        let moe = [1, 2, 4, 5, 6];
        let ahead: Vec<Option<usize>> = moe
            .iter()
            .map(|&l| PreCalculate::Alternate.ahead_of(&moe, l))
            .collect();
        assert_eq!(ahead, vec![Some(2), None, Some(5), None, None]);
        assert_eq!(
            PreCalculate::Alternate.ahead_of(&moe, 0),
            None,
            "a dense layer"
        );
        assert!(
            moe.iter()
                .all(|&l| PreCalculate::Off.ahead_of(&moe, l).is_none())
        );
        for mode in PreCalculate::ALL {
            assert_eq!(mode.name().parse::<PreCalculate>(), Ok(mode));
        }
        let refused = "sometimes".parse::<PreCalculate>().unwrap_err();
        assert!(refused.contains("sometimes") && refused.contains("alternate"));
    }

    #[test]
    fn a_kept_output_answers_its_layer_once_and_scores_the_prediction() {
        let mut tally = Tally::default();
        let mut pending = Pending {
            layer: 3,
            predicted: vec![route(&[0, 1]), route(&[2, 3])],
            out: vec![1.0, 2.0],
        };
        let mut pre = Precalculation {
            mode: PreCalculate::Alternate,
            moe_layers: vec![1, 3],
            pending: None,
            tally,
        };
        pre.keep(
            pending.layer,
            std::mem::take(&mut pending.predicted),
            pending.out,
        );
        let routes = [route(&[1, 4]), route(&[3, 2])];
        assert_eq!(pre.take(1, &routes), None, "another layer runs now");
        let expected = Tally {
            layers: 1,
            routed: 4,
            hits: 3,
        };
        let token = |hits| Tally {
            layers: 1,
            routed: 2,
            hits,
        };
        let (out, per_token) = pre.take(3, &routes).expect("layer 3 was computed early");
        assert_eq!(out, vec![1.0, 2.0]);
        assert_eq!(per_token, vec![token(1), token(2)]);
        assert_eq!(Tally::of_layer(&per_token), expected);
        let split = Tally::per_sequence(&per_token, &[1, 1]);
        assert_eq!(
            split,
            vec![token(1), token(2)],
            "a layer saved for each sequence"
        );
        let one = Tally::per_sequence(&per_token, &[2]);
        assert_eq!(one, vec![expected]);
        assert_eq!(pre.take(3, &routes), None, "answered once");
        tally.add(expected);
        assert_eq!(pre.tally, tally);
        assert_eq!(pre.tally.hit_rate(), 0.75);
        let tallies = Tallies::default();
        tallies.add(pre.tally);
        tallies.add(pre.tally);
        let mut text = String::new();
        tallies.render(&mut text);
        assert!(text.contains("moe:precalculated_layers_total 2"), "{text}");
        assert!(text.contains("moe:precalculated_hits_total 6"), "{text}");
    }
}
