//! The checkpoint shapes the generator offers (`tiny`, `small`, `medium`) and the `config.json` each
//! architecture gets for them, keyed as transformers 5 writes it. Shapes only; no weights.

use std::fmt;
use std::str::FromStr;

use moe_model::Arch;
use serde_json::{Value, json};

use crate::real_width;
use crate::tokenizer::{BOS_ID, EOS_ID, PAD_ID};

/// A checkpoint size. The table in the crate documentation gives each one's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Preset {
    /// A few hundred thousand parameters: for tests.
    Tiny,
    /// Tens of millions of parameters: for quick demos.
    Small,
    /// 740 to 830 million parameters (about 1.5 GB in f16): the shape performance figures use.
    Medium,
    /// The released models' widths with 4 layers (see `real_width`).
    RealWidth,
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::Tiny,
        Preset::Small,
        Preset::Medium,
        Preset::RealWidth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Small => "small",
            Preset::Medium => "medium",
            Preset::RealWidth => "real-width",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown preset `{s}` (expected tiny, small, medium or real-width)")
            })
    }
}

/// The shape every architecture shares at one preset.
struct Base {
    vocab: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    /// Mixtral's expert intermediate size; the others scale it.
    intermediate: usize,
}

fn base(preset: Preset) -> Base {
    match preset {
        Preset::Tiny => Base {
            vocab: 512,
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            intermediate: 128,
        },
        Preset::Small => Base {
            vocab: 4096,
            hidden: 512,
            layers: 4,
            heads: 8,
            kv_heads: 2,
            intermediate: 1024,
        },
        Preset::Medium => Base {
            vocab: 8192,
            hidden: 1024,
            layers: 8,
            heads: 16,
            kv_heads: 4,
            intermediate: 3584,
        },
        // Replaced key by key with the released widths (`real_width`); the layer count is its.
        Preset::RealWidth => Base {
            layers: real_width::LAYERS,
            ..base(Preset::Medium)
        },
    }
}

/// (experts, experts per token) of an architecture at a preset.
fn experts(arch: Arch, preset: Preset) -> (usize, usize) {
    match (arch, preset) {
        (Arch::Mixtral, _) => (8, 2),
        (Arch::Qwen2Moe | Arch::Qwen3Moe, Preset::Medium) => (16, 4),
        (Arch::Qwen2Moe | Arch::Qwen3Moe, _) => (8, 4),
        (Arch::Olmoe, Preset::Medium) => (32, 8),
        (Arch::Olmoe, _) => (16, 8),
        (Arch::DeepseekV3 | Arch::Glm4Moe, Preset::Medium) => (32, 8),
        (Arch::DeepseekV3 | Arch::Glm4Moe, _) => (8, 2),
        (Arch::GptOss, Preset::Medium) => (32, 4),
        (Arch::GptOss, _) => (8, 2),
    }
}

/// The HF `config.json` of `arch` at `preset`, with the token ids of [`crate::tokenizer_json`].
pub fn config_json(arch: Arch, preset: Preset) -> Value {
    let b = base(preset);
    let (num_experts, top_k) = experts(arch, preset);
    let (rope_theta, rms_norm_eps) = match arch {
        Arch::Mixtral => (1e6, 1e-5),
        Arch::Qwen2Moe | Arch::Qwen3Moe | Arch::DeepseekV3 => (1e6, 1e-6),
        Arch::Olmoe => (1e4, 1e-6),
        Arch::Glm4Moe => (1e6, 1e-5),
        Arch::GptOss => (150000.0, 1e-5),
    };
    let mut config = json!({
        "architectures": [arch.hf_class()],
        "model_type": arch.model_type(),
        "vocab_size": b.vocab,
        "hidden_size": b.hidden,
        "num_hidden_layers": b.layers,
        "num_attention_heads": b.heads,
        "num_key_value_heads": b.kv_heads,
        "num_experts_per_tok": top_k,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": rms_norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "output_router_logits": false,
        "router_aux_loss_coef": 0.001,
        "use_cache": true,
        "tie_word_embeddings": false,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "dtype": "float16",
    });
    let extra = match arch {
        Arch::Mixtral => json!({
            "num_local_experts": num_experts,
            "intermediate_size": b.intermediate,
            "head_dim": null,
            "sliding_window": null,
            "router_jitter_noise": 0.0,
        }),
        Arch::Qwen2Moe => json!({
            "num_experts": num_experts,
            "moe_intermediate_size": b.intermediate / 2,
            "shared_expert_intermediate_size": b.intermediate,
            "intermediate_size": b.intermediate,
            "qkv_bias": true,
            "norm_topk_prob": false,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "use_sliding_window": false,
            "sliding_window": null,
            "max_window_layers": b.layers,
        }),
        Arch::Qwen3Moe => json!({
            "num_experts": num_experts,
            "moe_intermediate_size": b.intermediate / 2,
            "intermediate_size": b.intermediate,
            "head_dim": 2 * b.hidden / b.heads,
            "attention_bias": false,
            "norm_topk_prob": true,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [],
            "use_sliding_window": false,
            "sliding_window": null,
            "max_window_layers": b.layers,
        }),
        Arch::Olmoe => json!({
            "num_experts": num_experts,
            "intermediate_size": b.intermediate / 4,
            "attention_bias": false,
            "clip_qkv": null,
            "norm_topk_prob": false,
        }),
        Arch::DeepseekV3 => deepseek_v3_extra(&b, num_experts),
        Arch::Glm4Moe => glm4_moe_extra(&b, num_experts),
        Arch::GptOss => gpt_oss_extra(&b, num_experts),
    };
    if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
        config.extend(extra);
    }
    if let (Preset::RealWidth, Some(config), Value::Object(real)) =
        (preset, config.as_object_mut(), real_width::keys(arch))
    {
        config.extend(real);
    }
    config
}

/// DeepSeek-V3's keys at a base shape: MLA with half-width low ranks, a rope part of half a
/// head, four groups of experts of which two are kept, one dense lead layer.
fn deepseek_v3_extra(b: &Base, experts: usize) -> Value {
    let head = b.hidden / b.heads;
    json!({
        "num_key_value_heads": b.heads,
        "n_routed_experts": experts,
        "n_shared_experts": 1,
        "moe_intermediate_size": b.intermediate / 2,
        "intermediate_size": b.intermediate,
        "q_lora_rank": b.hidden / 2,
        "kv_lora_rank": b.hidden / 2,
        "qk_nope_head_dim": head,
        "qk_rope_head_dim": head / 2,
        "v_head_dim": head,
        "n_group": 4,
        "topk_group": 2,
        "norm_topk_prob": true,
        "routed_scaling_factor": 2.5,
        "first_k_dense_replace": 1,
        "num_nextn_predict_layers": 0,
        "attention_bias": false,
    })
}

/// GLM-4.5's keys at a base shape: q/k/v biases, q/k norms, half the head rotated, one group, one
/// dense lead layer.
fn glm4_moe_extra(b: &Base, experts: usize) -> Value {
    json!({
        "n_routed_experts": experts,
        "n_shared_experts": 1,
        "moe_intermediate_size": b.intermediate / 2,
        "intermediate_size": b.intermediate,
        "head_dim": 2 * b.hidden / b.heads,
        "partial_rotary_factor": 0.5,
        "attention_bias": true,
        "use_qk_norm": true,
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": true,
        "routed_scaling_factor": 1.0,
        "first_k_dense_replace": 1,
        "num_nextn_predict_layers": 0,
    })
}

/// gpt-oss's keys at a base shape: attention biases and sinks, sliding (128) and full attention
/// alternating (`layer_types` left to its default, so `--layers` keeps it whole), YaRN as
/// released (factor 32 over 4096 positions, not truncated), the clamped SwiGLU at its released
/// limit.
fn gpt_oss_extra(b: &Base, experts: usize) -> Value {
    json!({
        "num_local_experts": experts,
        "intermediate_size": b.intermediate,
        "head_dim": b.hidden / b.heads,
        "sliding_window": 128,
        "attention_bias": true,
        "swiglu_limit": 7.0,
        "rope_parameters": {
            "rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
            "beta_slow": 1.0, "truncate": false, "original_max_position_embeddings": 4096,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use moe_model::ModelConfig;
    use moe_model::config::{FeedForward, QkNorm};
    use std::path::Path;

    fn parse(arch: Arch, preset: Preset) -> ModelConfig {
        ModelConfig::from_json(&config_json(arch, preset), Path::new("config.json"))
            .unwrap_or_else(|e| panic!("{arch} {preset}: {e}"))
    }

    #[test]
    fn names_round_trip() {
        for p in Preset::ALL {
            assert_eq!(p.to_string().parse::<Preset>(), Ok(p));
        }
        assert!("huge".parse::<Preset>().is_err());
    }

    #[test]
    fn every_config_parses() {
        for arch in Arch::ALL {
            for preset in Preset::ALL {
                let c = parse(arch, preset);
                assert_eq!(c.arch, arch);
                assert_eq!(c.bos_token_id, Some(BOS_ID));
                assert_eq!(c.eos_token_ids, vec![EOS_ID]);
                assert_eq!(c.dtype.as_deref(), Some("float16"));
                assert!(!c.tie_word_embeddings);
                let dense = matches!(arch, Arch::DeepseekV3 | Arch::Glm4Moe) as usize;
                assert!(
                    c.feed_forward[..dense]
                        .iter()
                        .all(|f| *f == FeedForward::Dense)
                );
                assert!(
                    c.feed_forward[dense..]
                        .iter()
                        .all(|f| *f == FeedForward::Moe)
                );
                let windowed = c.sliding_window.iter().filter(|w| w.is_some()).count();
                match arch {
                    Arch::GptOss => assert_eq!(windowed, c.num_layers.div_ceil(2)),
                    _ => assert_eq!(windowed, 0),
                }
            }
        }
    }

    #[test]
    fn medium_shapes() {
        let m = parse(Arch::Mixtral, Preset::Medium);
        assert_eq!((m.vocab_size, m.hidden_size, m.num_layers), (8192, 1024, 8));
        assert_eq!((m.num_heads, m.num_kv_heads, m.head_dim), (16, 4, 64));
        assert_eq!(
            (m.num_experts, m.top_k, m.moe_intermediate_size),
            (8, 2, 3584)
        );
        assert_eq!((m.rms_norm_eps, m.rope.theta), (1e-5, 1e6));

        let q2 = parse(Arch::Qwen2Moe, Preset::Medium);
        assert_eq!(
            (q2.num_experts, q2.top_k, q2.moe_intermediate_size),
            (16, 4, 1792)
        );
        assert_eq!(q2.shared_expert_intermediate_size, Some(3584));
        assert!(q2.qkv_bias && !q2.norm_topk_prob);

        let q3 = parse(Arch::Qwen3Moe, Preset::Medium);
        assert_eq!((q3.head_dim, q3.q_dim()), (128, 2048));
        assert_eq!(q3.qk_norm, QkNorm::PerHead);
        assert!(q3.norm_topk_prob && !q3.qkv_bias);

        let o = parse(Arch::Olmoe, Preset::Medium);
        assert_eq!(
            (o.num_experts, o.top_k, o.moe_intermediate_size),
            (32, 8, 896)
        );
        assert_eq!((o.qk_norm, o.clip_qkv), (QkNorm::Full, None));
    }

    #[test]
    fn real_width_shapes_are_the_released_models() {
        let d = parse(Arch::DeepseekV3, Preset::RealWidth);
        assert_eq!(
            (d.hidden_size, d.num_experts, d.top_k, d.num_layers),
            (7168, 256, 8, 4)
        );
        assert_eq!(d.moe_intermediate_size, 2048);
        let mla = d.mla.unwrap();
        assert_eq!(mla.latent_width().key, 576);
        assert_eq!((mla.q_lora_rank, mla.qk_head_dim()), (Some(1536), 192));
        let q3 = parse(Arch::Qwen3Moe, Preset::RealWidth);
        assert_eq!(
            (q3.hidden_size, q3.num_experts, q3.moe_intermediate_size),
            (2048, 128, 768)
        );
        assert_eq!(q3.vocab_size, 151936);
        let oss = parse(Arch::GptOss, Preset::RealWidth);
        assert_eq!(
            (
                oss.hidden_size,
                oss.num_experts,
                oss.top_k,
                oss.moe_intermediate_size
            ),
            (2880, 32, 4, 2880)
        );
        assert_eq!((oss.num_heads, oss.num_kv_heads, oss.head_dim), (64, 8, 64));
        assert!(oss.attention_sinks && oss.expert_shape.biased);
        let glm = parse(Arch::Glm4Moe, Preset::RealWidth);
        assert_eq!(
            (glm.num_heads, glm.num_kv_heads, glm.rope.rotary_dim),
            (96, 8, 64)
        );
    }

    #[test]
    fn tiny_and_small_shapes() {
        let t = parse(Arch::Olmoe, Preset::Tiny);
        assert_eq!(
            (t.vocab_size, t.hidden_size, t.num_layers, t.num_heads),
            (512, 64, 2, 4)
        );
        assert_eq!((t.num_experts, t.top_k), (16, 8));
        let s = parse(Arch::Qwen3Moe, Preset::Small);
        assert_eq!(
            (s.vocab_size, s.hidden_size, s.num_layers, s.num_kv_heads),
            (4096, 512, 4, 2)
        );
        assert_eq!((s.num_experts, s.top_k, s.head_dim), (8, 4, 128));
    }
}
