//! How each tensor's values are drawn, and the per-tensor streams that draw them. Every value is
//! `mean + std * z` with `z` standard normal from the tensor's own stream (the seed mixed with a hash
//! of the tensor's name), rounded to f16:
//!
//! | tensor | mean | std |
//! |---|---|---|
//! | token embeddings | 0 | 0.5 |
//! | router (`gate`) rows | 0 | 2 / sqrt(hidden): decisive routing |
//! | other matrices (attention, experts, shared expert and its gate, `lm_head`) | 0 | 1 / sqrt(fan_in) |
//! | norm weights (layer, final, q/k) | 1 | 0.05 |
//! | biases, the routers' `e_score_correction_bias` | 0 | 0.02 |
//!
//! With every block behind an RMSNorm, `1 / sqrt(fan_in)` keeps each projection's outputs near unit
//! scale, so the residual stream grows slowly through the layers and the logits are spread (standard
//! deviation about 1) without any one token winning everywhere. Which tensor is which comes from
//! `moe_model::layout`; no tensor name is spelled here.

use std::collections::HashMap;

use half::f16;
use half::slice::HalfFloatSliceExt;
use moe_model::ModelConfig;
use moe_model::layout::{ExpertTensors, Layout, Projection, TensorSpec};

use crate::rng::{Normal, Xoshiro256};

pub(crate) const EMBEDDING_STD: f64 = 0.5;
pub(crate) const ROUTER_GAIN: f64 = 2.0;
pub(crate) const NORM_STD: f64 = 0.05;
pub(crate) const BIAS_STD: f64 = 0.02;

/// The distribution of one tensor's values: `mean + std * N(0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Init {
    pub mean: f64,
    pub std: f64,
}

impl Init {
    fn centred(std: f64) -> Init {
        Init { mean: 0.0, std }
    }
}

/// Assigns an [`Init`] to every tensor of one configuration.
pub(crate) struct InitPlan {
    /// Tensors whose rule is not read off their rank: embeddings, routers, biases.
    special: HashMap<String, Init>,
}

impl InitPlan {
    pub fn new(cfg: &ModelConfig) -> InitPlan {
        let layout = Layout::new(cfg);
        let hidden = cfg.hidden_size as f64;
        let mut special = HashMap::new();
        special.insert(layout.embed_tokens().name, Init::centred(EMBEDDING_STD));
        for layer in cfg.moe_layers() {
            special.insert(
                layout.router(layer).name,
                Init::centred(ROUTER_GAIN / hidden.sqrt()),
            );
            if let Some(bias) = layout.router_bias(layer) {
                special.insert(bias.name, Init::centred(BIAS_STD));
            }
            if let Some(bias) = layout.router_logit_bias(layer) {
                special.insert(bias.name, Init::centred(BIAS_STD));
            }
            if let ExpertTensors::Fused(f) = layout.routed_expert(layer, 0) {
                // `[experts, inputs, outputs]`: the fan-in is the middle dimension.
                for m in [f.gate_up, f.down] {
                    special.insert(m.name, Init::centred(1.0 / (m.shape[1] as f64).sqrt()));
                }
                for b in [f.gate_up_bias, f.down_bias] {
                    special.insert(b.name, Init::centred(BIAS_STD));
                }
            }
        }
        for layer in 0..cfg.num_layers {
            for p in Projection::ALL {
                if let Some(bias) = layout.projection_bias(layer, p) {
                    special.insert(bias.name, Init::centred(BIAS_STD));
                }
            }
        }
        InitPlan { special }
    }

    /// Special tensors by their rule; otherwise vectors are norm weights and matrices are
    /// projections scaled by their fan-in (the last dimension).
    pub fn init(&self, spec: &TensorSpec) -> Init {
        if let Some(init) = self.special.get(&spec.name) {
            return *init;
        }
        match spec.shape.as_slice() {
            [_] => Init {
                mean: 1.0,
                std: NORM_STD,
            },
            [.., fan_in] => Init::centred(1.0 / (*fan_in.max(&1) as f64).sqrt()),
            [] => Init::centred(1.0),
        }
    }
}

/// The values of one tensor, drawn in order, chunk by chunk.
pub(crate) struct Values {
    normal: Normal,
    init: Init,
    scratch: Vec<f32>,
}

impl Values {
    pub fn new(seed: u64, name: &str, init: Init) -> Values {
        Values {
            normal: Normal::new(Xoshiro256::for_name(seed, name)),
            init,
            scratch: Vec::new(),
        }
    }

    /// Fills `out` with the next `out.len()` values.
    pub fn fill(&mut self, out: &mut [f16]) {
        self.scratch.clear();
        let Init { mean, std } = self.init;
        self.scratch
            .extend((0..out.len()).map(|_| (mean + std * self.normal.sample()) as f32));
        out.convert_from_f32_slice(&self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::{Preset, config_json};
    use crate::rng::{Normal, Xoshiro256};
    use moe_model::Arch;
    use std::path::Path;

    fn stats(values: &[f16]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().map(|v| f64::from(v.to_f32())).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|v| (f64::from(v.to_f32()) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    #[test]
    fn every_tensor_gets_its_rule() {
        let cfg = ModelConfig::from_json(
            &config_json(Arch::Qwen2Moe, Preset::Tiny),
            Path::new("config.json"),
        )
        .unwrap();
        let layout = Layout::new(&cfg);
        let plan = InitPlan::new(&cfg);
        let hidden = cfg.hidden_size as f64;
        assert_eq!(plan.init(&layout.embed_tokens()).std, EMBEDDING_STD);
        assert_eq!(
            plan.init(&layout.router(0)).std,
            ROUTER_GAIN / hidden.sqrt()
        );
        let bias = layout.projection_bias(1, Projection::K).unwrap();
        assert_eq!(plan.init(&bias), Init::centred(BIAS_STD));
        assert_eq!(plan.init(&layout.final_norm()).mean, 1.0);
        let o = layout.projection(0, Projection::O);
        assert_eq!(plan.init(&o).std, 1.0 / (cfg.q_dim() as f64).sqrt());
        let down = layout
            .shared_expert(0, moe_model::layout::ExpertMatrix::Down)
            .unwrap();
        assert_eq!(plan.init(&down).std, 1.0 / 128f64.sqrt());
    }

    #[test]
    fn values_follow_the_init() {
        let init = Init {
            mean: 1.0,
            std: 0.05,
        };
        let mut whole = vec![f16::ZERO; 20_000];
        Values::new(3, "t", init).fill(&mut whole);
        let (mean, std) = stats(&whole);
        assert!(
            (mean - 1.0).abs() < 0.002 && (std - 0.05).abs() < 0.002,
            "{mean} {std}"
        );

        // Chunking does not change the values.
        let mut chunked = vec![f16::ZERO; 20_000];
        let mut values = Values::new(3, "t", init);
        for chunk in chunked.chunks_mut(777) {
            values.fill(chunk);
        }
        assert_eq!(whole, chunked);
    }

    #[test]
    fn values_are_pinned() {
        // Any change here changes every checkpoint this crate has ever written for a seed.
        let mut v = vec![f16::ZERO; 4];
        Values::new(0, "pinned", Init::centred(1.0)).fill(&mut v);
        let bits: Vec<u16> = v.iter().map(|h| h.to_bits()).collect();
        assert_eq!(bits, vec![47844, 47689, 16605, 45689]);
    }

    #[test]
    fn f16_rounding_matches_the_portable_path() {
        // The slice conversion may use F16C or NEON; it must round exactly as the software path
        // does, subnormals and ties included, or checkpoints would differ between machines.
        let mut normal = Normal::new(Xoshiro256::seed_from(5));
        let mut xs: Vec<f32> = (0..50_000)
            .map(|i| (normal.sample() * 10f64.powi(i % 9 - 6)) as f32)
            .collect();
        xs.extend([
            6.1e-5,
            5.96e-8,
            2.98e-8,
            65504.0,
            65520.0,
            1.0 + 1.0 / 2048.0,
            -0.0,
        ]);
        let mut fast = vec![f16::ZERO; xs.len()];
        fast.convert_from_f32_slice(&xs);
        for (x, h) in xs.iter().zip(&fast) {
            assert_eq!(h.to_bits(), f16::from_f32_const(*x).to_bits(), "{x}");
        }
    }
}
