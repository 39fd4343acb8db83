//! The largest value each size and count of `config.json` may take, and the totals a whole model
//! may reach. A config is checked against them while it is read, before anything is allocated per
//! layer, per expert or per position, so that a hostile or corrupt `config.json` (say
//! `"num_hidden_layers": 100000000000`) is refused at once with an error naming the key, its value
//! and the bound, instead of exhausting memory. Every bound is generous: far above the largest
//! model released so far, so that no real model, nor its larger successors, meets it.
//!
//! | key | at most | largest released model (for scale) |
//! |---|---|---|
//! | `num_hidden_layers` | 1,024 | 126 (Llama 3.1 405B, dense); 94 (Qwen3-235B-A22B) |
//! | `hidden_size` | 65,536 | 16,384 (Llama 3.1 405B); 7,168 (DeepSeek-V3, Kimi K2) |
//! | `intermediate_size` | 262,144 | 53,248 (Llama 3.1 405B); 18,432 (DeepSeek-V3) |
//! | `moe_intermediate_size` | 262,144 | 16,384 (Mixtral 8x22B's experts) |
//! | `shared_expert_intermediate_size` | 262,144 | 20,480 (Qwen2-57B-A14B) |
//! | `num_attention_heads` | 1,024 | 128 (DeepSeek-V3, Llama 3.1 405B) |
//! | `num_key_value_heads` | 1,024 (and a divisor of the heads) | 128 (DeepSeek-V3) |
//! | `head_dim` (given, or `hidden_size / num_attention_heads`) | 1,024 | 256 (Gemma) |
//! | `num_experts` / `num_local_experts` | 4,096 | 384 (Kimi K2); 256 (DeepSeek-V3) |
//! | `num_experts_per_tok` | the expert count | 8 (DeepSeek-V3, Qwen3) |
//! | `vocab_size` | 4,194,304 | 262,144 (Gemma 3); 151,936 (Qwen3); 129,280 (DeepSeek-V3) |
//! | `max_position_embeddings` | 67,108,864 | 10,485,760 (Llama 4 Scout) |
//! | `sliding_window` | 67,108,864 | 131,072 (Qwen2) |
//! | `max_window_layers`, `decoder_sparse_step` | 1,024 (the layer bound) | 94 |
//! | `mlp_only_layers` (entries) | 1,024 | none in released configs |
//! | `eos_token_id` (entries) | 256 | 3 (Llama 3) |
//! | `n_routed_experts`, `n_shared_experts`, `n_group`, `topk_group` | 4,096 | 384, 1, 8, 4 (Kimi K2, DeepSeek-V3) |
//! | `first_k_dense_replace`, `num_nextn_predict_layers` | 1,024 | 3, 1 (DeepSeek-V3) |
//! | `q_lora_rank`, `kv_lora_rank` | 65,536 | 1,536, 512 (DeepSeek-V3) |
//! | `qk_nope_head_dim`, `qk_rope_head_dim`, `v_head_dim` | 1,024 | 128, 64, 128 (DeepSeek-V3) |
//!
//! | total | at most | largest released model (for scale) |
//! |---|---|---|
//! | parameters, counted from the shapes | 2^45 (about 35 T) | about 1.04 T (Kimi K2) |
//! | KV-cache values per position (`layers * 2 * kv_heads * head_dim`; with MLA `layers * (kv_lora_rank + qk_rope_head_dim)`) | 2^24 (16.8 M) | 258,048 (Llama 3.1 405B) |
//!
//! The totals are counted with checked arithmetic, so a product that would overflow is refused
//! like one over its bound. What this module does not bound: the size of the files themselves,
//! token ids (any `u32`), and the floating-point keys (`rope_theta`, `rms_norm_eps`), which only
//! need to be positive and finite.

use crate::config::ModelConfig;
use crate::layout::Layout;

/// A size or count `config.json` declares, with the largest value it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// The key in `config.json`.
    pub key: &'static str,
    /// The largest value accepted.
    pub max: usize,
}

const fn size(key: &'static str, max: usize) -> Size {
    Size { key, max }
}

pub const MAX_LAYERS: usize = 1024;
pub const MAX_HIDDEN: usize = 65_536;
pub const MAX_INTERMEDIATE: usize = 262_144;
pub const MAX_HEADS: usize = 1024;
pub const MAX_HEAD_DIM: usize = 1024;
pub const MAX_EXPERTS: usize = 4096;
pub const MAX_VOCAB: usize = 1 << 22;
pub const MAX_POSITIONS: usize = 1 << 26;
pub const MAX_EOS_TOKENS: usize = 256;
/// Parameters a whole model may have, counted from its shapes.
pub const MAX_PARAMETERS: u64 = 1 << 45;
/// Keys and values one position of the KV cache may hold, over all layers.
pub const MAX_KV_PER_POSITION: u64 = 1 << 24;

pub const LAYERS: Size = size("num_hidden_layers", MAX_LAYERS);
pub const HIDDEN: Size = size("hidden_size", MAX_HIDDEN);
pub const INTERMEDIATE: Size = size("intermediate_size", MAX_INTERMEDIATE);
pub const MOE_INTERMEDIATE: Size = size("moe_intermediate_size", MAX_INTERMEDIATE);
pub const SHARED_EXPERT_INTERMEDIATE: Size =
    size("shared_expert_intermediate_size", MAX_INTERMEDIATE);
pub const HEADS: Size = size("num_attention_heads", MAX_HEADS);
pub const KV_HEADS: Size = size("num_key_value_heads", MAX_HEADS);
pub const HEAD_DIM: Size = size("head_dim", MAX_HEAD_DIM);
pub const EXPERTS: Size = size("num_experts", MAX_EXPERTS);
pub const LOCAL_EXPERTS: Size = size("num_local_experts", MAX_EXPERTS);
pub const EXPERTS_PER_TOKEN: Size = size("num_experts_per_tok", MAX_EXPERTS);
pub const VOCAB: Size = size("vocab_size", MAX_VOCAB);
pub const POSITIONS: Size = size("max_position_embeddings", MAX_POSITIONS);
pub const SLIDING_WINDOW: Size = size("sliding_window", MAX_POSITIONS);
pub const MAX_WINDOW_LAYERS: Size = size("max_window_layers", MAX_LAYERS);
pub const DECODER_SPARSE_STEP: Size = size("decoder_sparse_step", MAX_LAYERS);
/// Entries of `mlp_only_layers`.
pub const MLP_ONLY_LAYERS: Size = size("mlp_only_layers", MAX_LAYERS);
/// Entries of `eos_token_id` when it is a list.
pub const EOS_TOKENS: Size = size("eos_token_id", MAX_EOS_TOKENS);
pub const ROUTED_EXPERTS: Size = size("n_routed_experts", MAX_EXPERTS);
pub const SHARED_EXPERTS: Size = size("n_shared_experts", MAX_EXPERTS);
pub const GROUPS: Size = size("n_group", MAX_EXPERTS);
pub const KEPT_GROUPS: Size = size("topk_group", MAX_EXPERTS);
pub const FIRST_DENSE: Size = size("first_k_dense_replace", MAX_LAYERS);
pub const MTP_LAYERS: Size = size("num_nextn_predict_layers", MAX_LAYERS);
pub const Q_LORA_RANK: Size = size("q_lora_rank", MAX_HIDDEN);
pub const KV_LORA_RANK: Size = size("kv_lora_rank", MAX_HIDDEN);
pub const QK_NOPE_HEAD_DIM: Size = size("qk_nope_head_dim", MAX_HEAD_DIM);
pub const QK_ROPE_HEAD_DIM: Size = size("qk_rope_head_dim", MAX_HEAD_DIM);
pub const V_HEAD_DIM: Size = size("v_head_dim", MAX_HEAD_DIM);

/// The sizes of the table, each once (for tests and documentation).
pub const ALL: [Size; 29] = [
    LAYERS,
    HIDDEN,
    INTERMEDIATE,
    MOE_INTERMEDIATE,
    SHARED_EXPERT_INTERMEDIATE,
    HEADS,
    KV_HEADS,
    HEAD_DIM,
    EXPERTS,
    LOCAL_EXPERTS,
    EXPERTS_PER_TOKEN,
    VOCAB,
    POSITIONS,
    SLIDING_WINDOW,
    MAX_WINDOW_LAYERS,
    DECODER_SPARSE_STEP,
    MLP_ONLY_LAYERS,
    EOS_TOKENS,
    ROUTED_EXPERTS,
    SHARED_EXPERTS,
    GROUPS,
    KEPT_GROUPS,
    FIRST_DENSE,
    MTP_LAYERS,
    Q_LORA_RANK,
    KV_LORA_RANK,
    QK_NOPE_HEAD_DIM,
    QK_ROPE_HEAD_DIM,
    V_HEAD_DIM,
];

/// A total of a whole model over its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotalExceeded {
    /// What was counted.
    pub what: &'static str,
    /// The count, or `None` where it overflowed 64 bits.
    pub count: Option<u64>,
    pub max: u64,
}

impl std::fmt::Display for TotalExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.count {
            Some(count) => write!(f, "{count} {}, above the bound of {}", self.what, self.max),
            None => write!(
                f,
                "more {} than 64 bits can count, above the bound of {}",
                self.what, self.max
            ),
        }
    }
}

/// Checks the totals of a config whose every size is already within its bound.
pub fn check_totals(cfg: &ModelConfig) -> Result<(), TotalExceeded> {
    let width = cfg.kv_width();
    let kv = (width.key as u64)
        .checked_add(width.value as u64)
        .and_then(|w| w.checked_mul(cfg.num_layers as u64));
    within("KV-cache values per position", kv, MAX_KV_PER_POSITION)?;
    within(
        "parameters",
        Layout::new(cfg).parameter_count(),
        MAX_PARAMETERS,
    )
}

fn within(what: &'static str, count: Option<u64>, max: u64) -> Result<(), TotalExceeded> {
    match count {
        Some(n) if n <= max => Ok(()),
        count => Err(TotalExceeded { what, count, max }),
    }
}
