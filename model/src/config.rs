//! `config.json` as HuggingFace writes it, read into one `ModelConfig` the way transformers reads it:
//! both the transformers-5 spelling (`rope_parameters`, `dtype`, `"head_dim": null`) and the older
//! one (`rope_theta`, `torch_dtype`, integer `head_dim`). Shapes and switches only; no tensors.
//! Every size and count is checked against its bound in [`bounds`] as it is read, before anything
//! is allocated per layer.

pub mod bounds;
mod family;
mod rope;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::arch::Arch;
use crate::error::{ModelError, Result};
use crate::expert::ExpertShape;
use crate::kv_cache::KvWidth;
use crate::mla::MlaDims;
use crate::rope::{RopeLayout, Yarn};
use crate::router::Routing;
use bounds::Size;

/// The rotary embedding of a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeSpec {
    pub theta: f32,
    /// Dimensions of each head rotated: its first `rotary_dim` (the whole head, or a part of it
    /// for GLM-4.5's `partial_rotary_factor`; DeepSeek-V3's `qk_rope_head_dim`).
    pub rotary_dim: usize,
    pub layout: RopeLayout,
    pub yarn: Option<Yarn>,
}

/// How q and k are normalised before RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// RMSNorm over each head's `head_dim` values (Qwen3-MoE).
    PerHead,
    /// RMSNorm over the whole q (resp. k) projection before the head split (OLMoE).
    Full,
}

/// What the feed-forward block of one decoder layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedForward {
    /// A routed mixture of experts (plus a shared expert where the config has one).
    Moe,
    /// A dense SwiGLU MLP (Qwen `mlp_only_layers` / `decoder_sparse_step`).
    Dense,
}

/// How a checkpoint stores its quantized weights (`quantization_config.quant_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// DeepSeek-V3's: decoder-layer projections as `float8_e4m3fn` with 128x128 block scales.
    Fp8,
    /// gpt-oss's: routed experts as MXFP4 `_blocks` and `_scales`.
    Mxfp4,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope: RopeSpec,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    pub qk_norm: QkNorm,
    /// OLMoE's `clip_qkv`: q, k and v are clamped to [-c, c].
    pub clip_qkv: Option<f32>,
    /// Per layer: the attention window, or `None` for full causal attention.
    pub sliding_window: Vec<Option<usize>>,
    /// Each head has a learned sink logit that joins its softmax's denominator (gpt-oss).
    pub attention_sinks: bool,
    /// Per layer: routed experts or a dense MLP.
    pub feed_forward: Vec<FeedForward>,
    pub num_experts: usize,
    pub top_k: usize,
    /// Renormalise the selected top-k router probabilities to sum to one.
    pub norm_topk_prob: bool,
    pub moe_intermediate_size: usize,
    /// Intermediate size of dense MLP layers.
    pub intermediate_size: usize,
    /// How the router picks and weighs experts.
    pub routing: Routing,
    /// What every routed expert computes (activation, biases).
    pub expert_shape: ExpertShape,
    /// Intermediate size of the shared expert (Qwen2-MoE), or of DeepSeek-V3's and GLM-4.5's
    /// shared experts together (`n_shared_experts * moe_intermediate_size`).
    pub shared_expert_intermediate_size: Option<usize>,
    /// Whether the shared expert's output is scaled by the sigmoid of a one-row gate (Qwen2-MoE).
    pub shared_expert_gated: bool,
    /// Multi-head latent attention's shape (DeepSeek-V3); `None`: grouped-query attention.
    pub mla: Option<MlaDims>,
    /// Multi-token-prediction layers the checkpoint may carry after the last decoder layer
    /// (`num_nextn_predict_layers`); never loaded.
    pub num_mtp_layers: usize,
    /// How the checkpoint stores its quantized weights, if it does.
    pub quantization: Option<Quantization>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The stored dtype the config names (`dtype` or `torch_dtype`), informational.
    pub dtype: Option<String>,
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = ModelConfig::from_json(&value, path)?;
        let generation = path.with_file_name(GENERATION_CONFIG);
        if let Some(eos) = generation_eos(&generation)? {
            config.eos_token_ids = eos;
        }
        Ok(config)
    }

    /// Reads a parsed `config.json`; `path` names it in errors.
    pub fn from_json(value: &Value, path: &Path) -> Result<ModelConfig> {
        let keys = Keys::new(value, path)?;
        let arch = keys.arch()?;
        let hidden_size = keys.size(bounds::HIDDEN)?;
        let num_layers = keys.size(bounds::LAYERS)?;
        let mla = family::mla(&keys, arch)?;
        let (num_heads, num_kv_heads, head_dim) = match &mla {
            // transformers' DeepSeek-V3 config: as many kv heads as heads, `head_dim` the rope
            // part (what its rotary embedding is computed over).
            Some(d) => (d.heads, d.heads, d.qk_rope_head_dim),
            None => keys.attention_heads(hidden_size)?,
        };
        let intermediate_size = keys.size(bounds::INTERMEDIATE)?;
        let (num_experts, top_k, moe_intermediate_size) = keys.experts(arch, intermediate_size)?;
        let norm_topk_prob = match arch {
            // gpt-oss takes the softmax of the top-k logits: the same as renormalising.
            Arch::Mixtral | Arch::GptOss => true,
            Arch::DeepseekV3 | Arch::Glm4Moe => keys.opt_bool("norm_topk_prob")?.unwrap_or(true),
            _ => keys.opt_bool("norm_topk_prob")?.unwrap_or(false),
        };
        let routing = family::routing(&keys, arch, norm_topk_prob, (num_experts, top_k))?;
        let feed_forward = keys.feed_forward(arch, num_layers)?;
        let shared_expert_intermediate_size =
            family::shared_expert_size(&keys, arch, moe_intermediate_size)?;
        let (qkv_bias, o_bias, qk_norm) = family::attention_switches(&keys, arch)?;
        let clip_qkv = match arch {
            Arch::Olmoe => keys.opt_positive_f32("clip_qkv")?,
            _ => None,
        };

        let config = ModelConfig {
            arch,
            vocab_size: keys.size(bounds::VOCAB)?,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: keys
                .opt_positive_f32("rms_norm_eps")?
                .unwrap_or(family::default_rms_norm_eps(arch)),
            rope: rope::spec(&keys, arch, head_dim)?,
            max_position_embeddings: keys.opt_size(bounds::POSITIONS)?.unwrap_or(4096),
            tie_word_embeddings: keys.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias,
            o_bias,
            qk_norm,
            clip_qkv,
            sliding_window: keys.sliding_windows(arch, num_layers)?,
            attention_sinks: arch == Arch::GptOss,
            feed_forward,
            num_experts,
            top_k,
            norm_topk_prob,
            moe_intermediate_size,
            intermediate_size,
            routing,
            expert_shape: family::expert_shape(&keys, arch)?,
            shared_expert_intermediate_size,
            shared_expert_gated: arch == Arch::Qwen2Moe,
            mla,
            num_mtp_layers: keys.opt_size(bounds::MTP_LAYERS)?.unwrap_or(0),
            quantization: family::quantization(&keys)?,
            bos_token_id: keys.opt_u32("bos_token_id")?,
            eos_token_ids: keys.token_ids("eos_token_id")?,
            dtype: keys
                .opt_str("dtype")
                .or_else(|| keys.opt_str("torch_dtype")),
        };
        bounds::check_totals(&config).map_err(|exceeded| ModelError::ConfigTotal {
            path: path.to_path_buf(),
            exceeded,
        })?;
        Ok(config)
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// What the KV cache holds per position and layer: MLA's latent and rope key, or every kv
    /// head's key and value.
    pub fn kv_width(&self) -> KvWidth {
        match &self.mla {
            Some(d) => d.latent_width(),
            None => KvWidth::symmetric(self.kv_dim()),
        }
    }

    /// KV cache bytes per token over the layers that keep every position: as this model caches
    /// (MLA: the latent), and as it would with every head's keys and values expanded (the same
    /// without MLA). Sliding-window layers are not in it: see [`ModelConfig::kv_window_bytes`].
    pub fn kv_bytes_per_token(&self) -> (usize, usize) {
        let expanded = self
            .mla
            .as_ref()
            .map_or(self.kv_width(), |d| d.expanded_width());
        let full = self.sliding_window.iter().filter(|w| w.is_none()).count();
        (full * self.kv_width().bytes(), full * expanded.bytes())
    }

    /// The most KV cache bytes a sequence's sliding-window layers hold however long it grows:
    /// each window's positions (rounded up to whole cache blocks, plus the block being filled).
    pub fn kv_window_bytes(&self) -> usize {
        let block = crate::kv_cache::BLOCK_POSITIONS;
        self.sliding_window
            .iter()
            .flatten()
            .map(|w| (w.div_ceil(block) + 1) * block * self.kv_width().bytes())
            .sum()
    }

    pub fn moe_layers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.num_layers).filter(|&l| self.feed_forward[l] == FeedForward::Moe)
    }
}

/// The file beside `config.json` whose defaults `generate` uses.
const GENERATION_CONFIG: &str = "generation_config.json";

/// The stop tokens of `generation_config.json`, which `transformers`' `generate` takes over the
/// model config's (gpt-oss stops at `<|return|>`, `<|call|>` and `<|endoftext|>`, its config
/// names one); `None` when the file or its `eos_token_id` is absent.
fn generation_eos(path: &Path) -> Result<Option<Vec<u32>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let value: Value = serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let ids = Keys::new(&value, path)?.token_ids("eos_token_id")?;
    Ok((!ids.is_empty()).then_some(ids))
}

/// Typed access to the keys of one config object, with errors that name the file and key.
struct Keys<'a> {
    map: &'a Map<String, Value>,
    path: &'a Path,
}

impl<'a> Keys<'a> {
    fn new(value: &'a Value, path: &'a Path) -> Result<Keys<'a>> {
        match value.as_object() {
            Some(map) => Ok(Keys { map, path }),
            None => Err(ModelError::Config {
                path: path.to_path_buf(),
                key: "<root>".into(),
                reason: "expected a JSON object".into(),
            }),
        }
    }

    fn error(&self, key: &str, reason: &str) -> ModelError {
        ModelError::Config {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }

    /// The value of `key`, with JSON `null` read as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn arch(&self) -> Result<Arch> {
        let declared = self
            .get("architectures")
            .and_then(|v| v.as_array())
            .and_then(|a| a.first())
            .and_then(|v| v.as_str())
            .or_else(|| self.get("model_type").and_then(|v| v.as_str()));
        let Some(name) = declared else {
            return Err(self.error(
                "architectures",
                "neither `architectures` nor `model_type` is present",
            ));
        };
        Arch::from_hf(name).ok_or_else(|| ModelError::UnsupportedArchitecture {
            path: self.path.to_path_buf(),
            arch: name.to_string(),
            supported: Arch::SUPPORTED,
        })
    }

    /// `(num_attention_heads, num_key_value_heads, head_dim)`, checked against each other.
    fn attention_heads(&self, hidden_size: usize) -> Result<(usize, usize, usize)> {
        let num_heads = self.size(bounds::HEADS)?;
        let num_kv_heads = self.opt_size(bounds::KV_HEADS)?.unwrap_or(num_heads);
        let head_dim = match self.opt_size(bounds::HEAD_DIM)? {
            Some(d) => d,
            None => {
                if !hidden_size.is_multiple_of(num_heads) {
                    return Err(self.error(
                        "head_dim",
                        "absent and hidden_size is not a multiple of num_attention_heads",
                    ));
                }
                self.bounded(bounds::HEAD_DIM, (hidden_size / num_heads) as u64)?
            }
        };
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(self.error(
                "num_key_value_heads",
                &format!("{num_kv_heads} does not divide num_attention_heads {num_heads}"),
            ));
        }
        if head_dim % 2 != 0 {
            return Err(self.error("head_dim", "must be even for rotary embeddings"));
        }
        Ok((num_heads, num_kv_heads, head_dim))
    }

    /// `(experts, experts per token, expert intermediate size)`.
    fn experts(&self, arch: Arch, intermediate_size: usize) -> Result<(usize, usize, usize)> {
        // Mixtral names the expert count `num_local_experts`, the others `num_experts`;
        // transformers maps one onto the other, so a saved config may carry either.
        // DeepSeek-V3 and GLM-4.5 name it `n_routed_experts`.
        let experts_key = match arch {
            Arch::Mixtral | Arch::GptOss => [bounds::LOCAL_EXPERTS, bounds::EXPERTS],
            Arch::DeepseekV3 | Arch::Glm4Moe => [bounds::ROUTED_EXPERTS, bounds::LOCAL_EXPERTS],
            _ => [bounds::EXPERTS, bounds::LOCAL_EXPERTS],
        };
        let num_experts = match self.opt_size(experts_key[0])? {
            Some(n) => n,
            None => match self.opt_size(experts_key[1])? {
                Some(n) => n,
                None => return Err(self.error(experts_key[0].key, "missing")),
            },
        };
        let moe_intermediate_size = match arch {
            Arch::Mixtral | Arch::Olmoe | Arch::GptOss => intermediate_size,
            _ => self.size(bounds::MOE_INTERMEDIATE)?,
        };
        let top_k = self.size(bounds::EXPERTS_PER_TOKEN)?;
        if num_experts == 0 || top_k > num_experts {
            return Err(self.error(
                "num_experts_per_tok",
                &format!("{top_k} must be between 1 and the expert count {num_experts}"),
            ));
        }
        Ok((num_experts, top_k, moe_intermediate_size))
    }

    fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                self.error(key, &format!("expected a non-negative integer, got {v}"))
            }),
        }
    }

    /// `value` as the size `size` names, refused above its bound.
    fn bounded(&self, size: Size, value: u64) -> Result<usize> {
        match usize::try_from(value) {
            Ok(n) if n <= size.max => Ok(n),
            _ => Err(self.over_bound(size, value)),
        }
    }

    fn over_bound(&self, size: Size, value: u64) -> ModelError {
        ModelError::ConfigBound {
            path: self.path.to_path_buf(),
            key: size.key.to_string(),
            value,
            max: size.max,
        }
    }

    /// A size or count, checked against its bound.
    fn opt_size(&self, size: Size) -> Result<Option<usize>> {
        self.opt_u64(size.key)?
            .map(|n| self.bounded(size, n))
            .transpose()
    }

    /// A size or count that must be present and positive, checked against its bound.
    fn size(&self, size: Size) -> Result<usize> {
        match self.opt_size(size)? {
            Some(0) => Err(self.error(size.key, "must be positive")),
            Some(n) => Ok(n),
            None => Err(self.error(size.key, "missing")),
        }
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.opt_u64(key)?
            .map(|n| u32::try_from(n).map_err(|_| self.error(key, "does not fit in 32 bits")))
            .transpose()
    }

    /// A number that must be positive and finite (as an f32) where it is given.
    fn opt_positive_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64().map(|x| x as f32) {
                Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
                _ => Err(self.error(key, &format!("expected a positive finite number, got {v}"))),
            },
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.error(key, &format!("expected true or false, got {v}"))),
        }
    }

    fn opt_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| v.as_str()).map(str::to_string)
    }

    /// `eos_token_id` may be one id or a list of ids.
    fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) if items.len() > bounds::EOS_TOKENS.max => {
                Err(self.over_bound(bounds::EOS_TOKENS, items.len() as u64))
            }
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| self.error(key, &format!("expected token ids, got {v}")))
                })
                .collect(),
            Some(_) => Ok(self.opt_u32(key)?.into_iter().collect()),
        }
    }

    /// The attention window per layer, the way transformers derives `layer_types` (gpt-oss:
    /// sliding and full attention alternate, from a sliding first layer, 128 wide unless set).
    fn sliding_windows(&self, arch: Arch, num_layers: usize) -> Result<Vec<Option<usize>>> {
        let window = match (self.opt_size(bounds::SLIDING_WINDOW)?, arch) {
            (None, Arch::GptOss) => Some(128),
            (w, _) => w,
        };
        let first_windowed = self.opt_size(bounds::MAX_WINDOW_LAYERS)?;
        let windowed = self.opt_bool("use_sliding_window")?.unwrap_or(false);
        let layer_types = self.get("layer_types").and_then(Value::as_array);
        if let Some(types) = layer_types {
            if types.len() != num_layers {
                return Err(self.error(
                    "layer_types",
                    &format!("has {} entries for {num_layers} layers", types.len()),
                ));
            }
            return types
                .iter()
                .map(|t| match t.as_str() {
                    Some("full_attention") => Ok(None),
                    Some("sliding_attention") => window.map(Some).ok_or_else(|| {
                        self.error(
                            "sliding_window",
                            "layer_types asks for sliding attention but no window is set",
                        )
                    }),
                    _ => Err(self.error("layer_types", &format!("unknown layer type {t}"))),
                })
                .collect();
        }
        let first = first_windowed.unwrap_or(num_layers);
        let per_layer = |layer: usize| match arch {
            Arch::Mixtral => window,
            Arch::Olmoe | Arch::DeepseekV3 | Arch::Glm4Moe => None,
            Arch::GptOss => window.filter(|_| layer.is_multiple_of(2)),
            Arch::Qwen2Moe | Arch::Qwen3Moe => window.filter(|_| windowed && layer >= first),
        };
        Ok((0..num_layers).map(per_layer).collect())
    }

    /// Per layer, routed experts or a dense MLP: Qwen's `mlp_only_layers` and
    /// `decoder_sparse_step` pick dense layers, DeepSeek-V3's and GLM-4.5's first
    /// `first_k_dense_replace` layers are dense; other architectures are MoE throughout.
    fn feed_forward(&self, arch: Arch, num_layers: usize) -> Result<Vec<FeedForward>> {
        if matches!(arch, Arch::DeepseekV3 | Arch::Glm4Moe) {
            let dense = self.opt_size(bounds::FIRST_DENSE)?.unwrap_or(0);
            let kind = |l| match l < dense {
                true => FeedForward::Dense,
                false => FeedForward::Moe,
            };
            return Ok((0..num_layers).map(kind).collect());
        }
        if !matches!(arch, Arch::Qwen2Moe | Arch::Qwen3Moe) {
            return Ok(vec![FeedForward::Moe; num_layers]);
        }
        let dense_only: Vec<u64> = match self.get("mlp_only_layers") {
            None => Vec::new(),
            Some(Value::Array(items)) if items.len() > bounds::MLP_ONLY_LAYERS.max => {
                return Err(self.over_bound(bounds::MLP_ONLY_LAYERS, items.len() as u64));
            }
            Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
                self.error(
                    "mlp_only_layers",
                    &format!("expected a list of layer indices, got {v}"),
                )
            })?,
        };
        let step = self
            .opt_size(bounds::DECODER_SPARSE_STEP)?
            .unwrap_or(1)
            .max(1);
        Ok((0..num_layers)
            .map(|layer| {
                let sparse =
                    !dense_only.contains(&(layer as u64)) && (layer + 1).is_multiple_of(step);
                if sparse {
                    FeedForward::Moe
                } else {
                    FeedForward::Dense
                }
            })
            .collect())
    }
}

/// The path of `config.json` in a checkpoint directory.
pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("config.json")
}

/// The name a checkpoint directory is served under when none is given: its last path component,
/// or `model` when it has none.
pub fn served_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ModelConfig> {
        ModelConfig::from_json(&v, Path::new("config.json"))
    }

    fn mixtral() -> Value {
        json!({
            "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
            "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 8,
            "num_experts_per_tok": 2, "rope_theta": 1e6, "rms_norm_eps": 1e-5,
            "sliding_window": null, "torch_dtype": "bfloat16", "eos_token_id": 2, "bos_token_id": 1
        })
    }

    #[test]
    fn reads_older_mixtral_keys() {
        let c = parse(mixtral()).unwrap();
        assert_eq!(c.arch, Arch::Mixtral);
        assert_eq!(c.num_experts, 8);
        assert_eq!(c.moe_intermediate_size, 128);
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.rope.theta, 1e6);
        assert!(c.norm_topk_prob);
        assert_eq!(c.sliding_window, vec![None, None]);
        assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
        assert_eq!(c.eos_token_ids, vec![2]);
    }

    #[test]
    fn reads_transformers5_qwen3_keys() {
        let c = parse(json!({
            "architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 512, "hidden_size": 64,
            "intermediate_size": 96, "moe_intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "num_local_experts": 8,
            "num_experts_per_tok": 2, "norm_topk_prob": true, "dtype": "float32",
            "rope_parameters": {"rope_type": "default", "rope_theta": 5000.0},
            "use_sliding_window": false, "sliding_window": 64, "eos_token_id": [2, 3],
            "tie_word_embeddings": true
        }))
        .unwrap();
        assert_eq!(c.head_dim, 32);
        assert_eq!(c.q_dim(), 128);
        assert_eq!(c.rope.theta, 5000.0);
        assert_eq!(c.qk_norm, QkNorm::PerHead);
        assert_eq!(c.sliding_window, vec![None, None]);
        assert_eq!(c.eos_token_ids, vec![2, 3]);
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn qwen_dense_layers_and_windows() {
        let c = parse(json!({
            "architectures": ["Qwen2MoeForCausalLM"], "vocab_size": 512, "hidden_size": 64,
            "intermediate_size": 96, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_experts": 8, "num_experts_per_tok": 4,
            "mlp_only_layers": [1], "decoder_sparse_step": 1, "use_sliding_window": true,
            "sliding_window": 16, "max_window_layers": 2, "head_dim": null
        }))
        .unwrap();
        use FeedForward::*;
        assert_eq!(c.feed_forward, vec![Moe, Dense, Moe, Moe]);
        assert_eq!(c.sliding_window, vec![None, None, Some(16), Some(16)]);
        assert_eq!(c.shared_expert_intermediate_size, Some(64));
        assert!(c.qkv_bias && !c.o_bias);
        assert!(!c.norm_topk_prob);
        assert_eq!(c.moe_layers().collect::<Vec<_>>(), vec![0, 2, 3]);
    }

    #[test]
    fn clear_errors() {
        let mut v = mixtral();
        v["architectures"] = json!(["LlamaForCausalLM"]);
        let e = parse(v).unwrap_err().to_string();
        assert!(
            e.contains("LlamaForCausalLM") && e.contains("config.json"),
            "{e}"
        );

        let mut v = mixtral();
        v.as_object_mut().unwrap().remove("num_local_experts");
        let e = parse(v).unwrap_err().to_string();
        assert!(
            e.contains("num_local_experts") && e.contains("missing"),
            "{e}"
        );

        let mut v = mixtral();
        v["num_experts_per_tok"] = json!(9);
        assert!(parse(v).is_err());

        let mut v = mixtral();
        v["hidden_size"] = json!("64");
        assert!(parse(v).unwrap_err().to_string().contains("hidden_size"));

        let mut v = mixtral();
        v["rope_scaling"] = json!({"rope_type": "longrope", "factor": 4.0});
        assert!(parse(v).unwrap_err().to_string().contains("longrope"));
    }

    #[test]
    fn generation_config_stop_tokens_take_over_the_configs() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, mixtral().to_string()).unwrap();
        assert_eq!(
            ModelConfig::from_file(&config).unwrap().eos_token_ids,
            vec![2]
        );
        let generation = dir.path().join(GENERATION_CONFIG);
        std::fs::write(&generation, r#"{"eos_token_id": [7, 2, 9]}"#).unwrap();
        assert_eq!(
            ModelConfig::from_file(&config).unwrap().eos_token_ids,
            vec![7, 2, 9]
        );
        std::fs::write(&generation, r#"{"eos_token_id": "x"}"#).unwrap();
        let e = ModelConfig::from_file(&config).unwrap_err().to_string();
        assert!(
            e.contains("generation_config.json") && e.contains("eos_token_id"),
            "{e}"
        );
    }

    #[test]
    fn a_checkpoint_is_served_under_its_directory_name() {
        assert_eq!(
            served_name(Path::new("/models/mixtral-small")),
            "mixtral-small"
        );
        assert_eq!(served_name(Path::new("/")), "model");
    }
}
