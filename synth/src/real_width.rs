//! The `real-width` preset: each architecture's released widths — hidden size, heads, expert
//! count and width, vocabulary, MLA ranks — with 4 layers, so benchmarks see the matrix shapes
//! of the models people serve without their size. The models the widths come from:
//!
//! | arch | widths of | hidden | experts / top-k | expert width | vocab |
//! |---|---|---|---|---|---|
//! | `mixtral` | Mixtral-8x7B | 4096 | 8 / 2 | 14336 | 32000 |
//! | `qwen2-moe` | Qwen1.5-MoE-A2.7B | 2048 | 60 / 4 (+ shared 5632) | 1408 | 151936 |
//! | `qwen3-moe` | Qwen3-30B-A3B | 2048 | 128 / 8 | 768 | 151936 |
//! | `olmoe` | OLMoE-1B-7B | 2048 | 64 / 8 | 1024 | 50304 |
//! | `deepseek-v3` | DeepSeek-V3 / Kimi K2 | 7168 | 256 / 8 (+ 1 shared) | 2048 | 129280 |
//! | `glm4-moe` | GLM-4.5-Air | 4096 | 128 / 8 (+ 1 shared) | 1408 | 151552 |
//! | `gpt-oss` | gpt-oss-20b | 2880 | 32 / 4 | 2880 | 201088 |
//!
//! DeepSeek-V3's first layer is dense (the release has three; with four layers that would leave
//! one MoE layer) and GLM-4.5-Air's as released. A DeepSeek-V3 MoE layer at these widths holds
//! 11 billion parameters: `--set n_routed_experts=32` (or `--layers`) keeps a checkpoint to what
//! a machine can write.

use moe_model::Arch;
use serde_json::{Value, json};

/// Decoder layers of every real-width checkpoint.
pub const LAYERS: usize = 4;

/// The `config.json` keys that differ per architecture at real width (the common ones come from
/// `preset::config_json`).
pub(crate) fn keys(arch: Arch) -> Value {
    match arch {
        Arch::Mixtral => json!({
            "vocab_size": 32000, "hidden_size": 4096, "num_attention_heads": 32,
            "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
            "intermediate_size": 14336, "head_dim": null, "sliding_window": null,
            "router_jitter_noise": 0.0,
        }),
        Arch::Qwen2Moe => json!({
            "vocab_size": 151936, "hidden_size": 2048, "num_attention_heads": 16,
            "num_key_value_heads": 16, "num_experts": 60, "num_experts_per_tok": 4,
            "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
            "intermediate_size": 5632, "qkv_bias": true, "norm_topk_prob": false,
            "decoder_sparse_step": 1, "mlp_only_layers": [], "use_sliding_window": false,
            "sliding_window": null, "max_window_layers": LAYERS,
        }),
        Arch::Qwen3Moe => json!({
            "vocab_size": 151936, "hidden_size": 2048, "num_attention_heads": 32,
            "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
            "num_experts_per_tok": 8, "moe_intermediate_size": 768, "intermediate_size": 6144,
            "attention_bias": false, "norm_topk_prob": true, "decoder_sparse_step": 1,
            "mlp_only_layers": [], "use_sliding_window": false, "sliding_window": null,
            "max_window_layers": LAYERS,
        }),
        Arch::Olmoe => json!({
            "vocab_size": 50304, "hidden_size": 2048, "num_attention_heads": 16,
            "num_key_value_heads": 16, "num_experts": 64, "num_experts_per_tok": 8,
            "intermediate_size": 1024, "attention_bias": false, "clip_qkv": null,
            "norm_topk_prob": false,
        }),
        Arch::DeepseekV3 => json!({
            "vocab_size": 129280, "hidden_size": 7168, "num_attention_heads": 128,
            "num_key_value_heads": 128, "n_routed_experts": 256, "num_experts_per_tok": 8,
            "n_shared_experts": 1, "moe_intermediate_size": 2048, "intermediate_size": 18432,
            "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
            "qk_rope_head_dim": 64, "v_head_dim": 128, "n_group": 8, "topk_group": 4,
            "norm_topk_prob": true, "routed_scaling_factor": 2.5, "first_k_dense_replace": 1,
            "num_nextn_predict_layers": 0, "attention_bias": false,
        }),
        Arch::Glm4Moe => json!({
            "vocab_size": 151552, "hidden_size": 4096, "num_attention_heads": 96,
            "num_key_value_heads": 8, "head_dim": 128, "n_routed_experts": 128,
            "num_experts_per_tok": 8, "n_shared_experts": 1, "moe_intermediate_size": 1408,
            "intermediate_size": 10944, "partial_rotary_factor": 0.5, "attention_bias": true,
            "use_qk_norm": false, "n_group": 1, "topk_group": 1, "norm_topk_prob": true,
            "routed_scaling_factor": 1.0, "first_k_dense_replace": 1,
            "num_nextn_predict_layers": 0,
        }),
        Arch::GptOss => json!({
            "vocab_size": 201088, "hidden_size": 2880, "num_attention_heads": 64,
            "num_key_value_heads": 8, "head_dim": 64, "num_local_experts": 32,
            "num_experts_per_tok": 4, "intermediate_size": 2880,
            "max_position_embeddings": 131072,
        }),
    }
}
