//! Seeded random-weight MoE checkpoints in the exact HuggingFace layout (`config.json`,
//! `generation_config.json`, safetensors shards and index, `tokenizer.json`,
//! `tokenizer_config.json`), for benchmarks, demos and tests. The weights are random, not
//! trained: the text such a model writes is noise, but every shape, name and file is what a real
//! checkpoint of that architecture has. Tensor names and shapes come from `moe_model::layout`.
//!
//! # Presets
//!
//! | preset | vocab | hidden | layers | heads | kv heads | experts / top-k | expert intermediate |
//! |---|---|---|---|---|---|---|---|
//! | `tiny` | 512 | 64 | 2 | 4 | 2 | 8 / 2 | 128 |
//! | `small` | 4096 | 512 | 4 | 8 | 2 | 8 / 2 | 1024 |
//! | `medium` | 8192 | 1024 | 8 | 16 | 4 | 8 / 2 | 3584 |
//!
//! That is Mixtral's shape; the other architectures keep vocab, hidden, layers and heads and take
//! their own extras, with `I` the expert intermediate size above:
//!
//! | arch | experts / top-k (tiny, small; medium) | expert intermediate | extras |
//! |---|---|---|---|
//! | `mixtral` | 8 / 2; 8 / 2 | `I` | rms_norm_eps 1e-5 |
//! | `qwen2-moe` | 8 / 4; 16 / 4 | `I / 2` | shared expert of `I`, q/k/v bias, `norm_topk_prob` false |
//! | `qwen3-moe` | 8 / 4; 16 / 4 | `I / 2` | `head_dim` = 2 × hidden / heads, per-head q/k norm, `norm_topk_prob` true |
//! | `olmoe` | 16 / 8; 32 / 8 | `I / 4` | full q/k norm, no `clip_qkv`, `norm_topk_prob` false |
//! | `deepseek-v3` | 8 / 2; 32 / 8 | `I / 2` | MLA (q and kv ranks `hidden / 2`, rope part half a head), 4 groups of which 2 kept, sigmoid routing with a correction bias, `routed_scaling_factor` 2.5, one shared expert, layer 0 dense (`I`) |
//! | `glm4-moe` | 8 / 2; 32 / 8 | `I / 2` | `head_dim` = 2 × hidden / heads, half of it rotated, q/k/v bias, per-head q/k norm, sigmoid routing in one group, one shared expert, layer 0 dense (`I`) |
//!
//! `medium` is 740 to 830 million parameters (1.5 to 1.7 GB in f16, two shards) depending on the
//! architecture; `tiny` is 0.3 to 0.5 million (one `model.safetensors`). All configs use
//! `max_position_embeddings` 4096, untied embeddings, `dtype` float16, no sliding window, every
//! layer MoE (Qwen's dense `intermediate_size` is set to `I` but unused), RoPE theta 1e6 (OLMoE
//! 1e4), and the token ids of the tokenizer (`<pad>` 0, `<s>` 1, `</s>` 2).
//!
//! # Weights
//!
//! f16, each tensor from its own stream (the seed mixed with a hash of the tensor's name), drawn as
//! the table in the `init` module says: embeddings N(0, 0.5²), matrices N(0, 1/fan_in), router rows
//! N(0, 4/hidden), norm weights 1 + 0.05·N(0, 1), biases 0.02·N(0, 1). The generator is a
//! SplitMix64-seeded xoshiro256** with polar Box-Muller normals, all in this crate, so a seed writes
//! the same bytes on every platform and with every dependency version.

mod checkpoint;
mod error;
mod init;
mod preset;
mod real_width;
mod rng;
mod shard;
mod tokenizer;

pub use checkpoint::{
    MAX_SHARD_BYTES, Overrides, SynthReport, write_checkpoint, write_checkpoint_reporting,
};
pub use error::SynthError;
pub use preset::{Preset, config_json};
pub use tokenizer::{
    BOS_ID, EOS_ID, MIN_VOCAB_SIZE, PAD_ID, SPECIAL_TOKENS, tokenizer_config_json, tokenizer_json,
};
