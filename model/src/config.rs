//! `config.json` as HuggingFace writes it, read into one `ModelConfig` the way transformers reads it:
//! both the transformers-5 spelling (`rope_parameters`, `dtype`, `"head_dim": null`) and the older
//! one (`rope_theta`, `torch_dtype`, integer `head_dim`). Shapes and switches only; no tensors.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::arch::Arch;
use crate::error::{ModelError, Result};

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
    pub rope_theta: f32,
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
    /// Per layer: routed experts or a dense MLP.
    pub feed_forward: Vec<FeedForward>,
    pub num_experts: usize,
    pub top_k: usize,
    /// Renormalise the selected top-k router probabilities to sum to one.
    pub norm_topk_prob: bool,
    pub moe_intermediate_size: usize,
    /// Intermediate size of dense MLP layers.
    pub intermediate_size: usize,
    /// Intermediate size of the shared expert (Qwen2-MoE), gated by a sigmoid.
    pub shared_expert_intermediate_size: Option<usize>,
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
        ModelConfig::from_json(&value, path)
    }

    /// Reads a parsed `config.json`; `path` names it in errors.
    pub fn from_json(value: &Value, path: &Path) -> Result<ModelConfig> {
        let keys = Keys::new(value, path)?;
        let arch = keys.arch()?;
        let hidden_size = keys.usize("hidden_size")?;
        let num_layers = keys.usize("num_hidden_layers")?;
        let num_heads = keys.usize("num_attention_heads")?;
        let num_kv_heads = keys.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
        let head_dim = match keys.opt_usize("head_dim")? {
            Some(d) => d,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(keys.error(
                        "head_dim",
                        "absent and hidden_size is not a multiple of num_attention_heads",
                    ));
                }
                hidden_size / num_heads
            }
        };
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(keys.error(
                "num_key_value_heads",
                &format!("{num_kv_heads} does not divide num_attention_heads {num_heads}"),
            ));
        }
        if head_dim % 2 != 0 {
            return Err(keys.error("head_dim", "must be even for rotary embeddings"));
        }

        let intermediate_size = keys.usize("intermediate_size")?;
        // Mixtral names the expert count `num_local_experts`, the others `num_experts`; transformers
        // maps one onto the other, so a saved config may carry either.
        let experts_key = match arch {
            Arch::Mixtral => ["num_local_experts", "num_experts"],
            _ => ["num_experts", "num_local_experts"],
        };
        let num_experts = match keys.opt_usize(experts_key[0])? {
            Some(n) => n,
            None => keys
                .usize(experts_key[1])
                .map_err(|_| keys.error(experts_key[0], "missing"))?,
        };
        let moe_intermediate_size = match arch {
            Arch::Mixtral | Arch::Olmoe => intermediate_size,
            Arch::Qwen2Moe | Arch::Qwen3Moe => keys.usize("moe_intermediate_size")?,
        };
        let top_k = keys.usize("num_experts_per_tok")?;
        if num_experts == 0 || top_k == 0 || top_k > num_experts {
            return Err(keys.error(
                "num_experts_per_tok",
                &format!("{top_k} must be between 1 and the expert count {num_experts}"),
            ));
        }
        let norm_topk_prob = match arch {
            Arch::Mixtral => true,
            _ => keys.opt_bool("norm_topk_prob")?.unwrap_or(false),
        };
        let feed_forward = (0..num_layers)
            .map(|layer| keys.feed_forward(arch, layer))
            .collect::<Result<Vec<_>>>()?;
        let shared_expert_intermediate_size = match arch {
            Arch::Qwen2Moe => keys
                .opt_usize("shared_expert_intermediate_size")?
                .filter(|&n| n > 0),
            _ => None,
        };

        let attention_bias = keys.opt_bool("attention_bias")?.unwrap_or(false);
        let (qkv_bias, o_bias) = match arch {
            Arch::Mixtral => (false, false),
            Arch::Qwen2Moe => (keys.opt_bool("qkv_bias")?.unwrap_or(true), false),
            Arch::Qwen3Moe | Arch::Olmoe => (attention_bias, attention_bias),
        };
        let qk_norm = match arch {
            Arch::Mixtral | Arch::Qwen2Moe => QkNorm::None,
            Arch::Qwen3Moe => QkNorm::PerHead,
            Arch::Olmoe => QkNorm::Full,
        };
        let clip_qkv = match arch {
            Arch::Olmoe => keys.opt_f32("clip_qkv")?,
            _ => None,
        };

        Ok(ModelConfig {
            arch,
            vocab_size: keys.usize("vocab_size")?,
            hidden_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: keys.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: keys.rope_theta(arch)?,
            max_position_embeddings: keys.opt_usize("max_position_embeddings")?.unwrap_or(4096),
            tie_word_embeddings: keys.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias,
            o_bias,
            qk_norm,
            clip_qkv,
            sliding_window: keys.sliding_windows(arch, num_layers)?,
            feed_forward,
            num_experts,
            top_k,
            norm_topk_prob,
            moe_intermediate_size,
            intermediate_size,
            shared_expert_intermediate_size,
            bos_token_id: keys.opt_u32("bos_token_id")?,
            eos_token_ids: keys.token_ids("eos_token_id")?,
            dtype: keys
                .opt_str("dtype")
                .or_else(|| keys.opt_str("torch_dtype")),
        })
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    pub fn moe_layers(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.num_layers).filter(|&l| self.feed_forward[l] == FeedForward::Moe)
    }
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

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.error(key, &format!("expected a non-negative integer, got {v}"))
                }),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        match self.opt_usize(key)? {
            Some(0) => Err(self.error(key, "must be positive")),
            Some(n) => Ok(n),
            None => Err(self.error(key, "missing")),
        }
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.opt_usize(key)?
            .map(|n| u32::try_from(n).map_err(|_| self.error(key, "does not fit in 32 bits")))
            .transpose()
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| self.error(key, &format!("expected a number, got {v}"))),
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

    /// `rope_parameters` (transformers 5) or top-level `rope_theta`/`rope_scaling` (older).
    fn rope_theta(&self, arch: Arch) -> Result<f32> {
        let default = match arch {
            Arch::Mixtral => 1e6,
            _ => 10000.0,
        };
        let (theta, rope_type) = match self.get("rope_parameters") {
            Some(Value::Object(p)) => (
                p.get("rope_theta").and_then(Value::as_f64),
                p.get("rope_type")
                    .or_else(|| p.get("type"))
                    .and_then(Value::as_str),
            ),
            Some(other) => {
                return Err(self.error(
                    "rope_parameters",
                    &format!("expected an object, got {other}"),
                ));
            }
            None => (
                self.opt_f32("rope_theta")?.map(f64::from),
                self.get("rope_scaling")
                    .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
                    .and_then(Value::as_str),
            ),
        };
        match rope_type {
            None | Some("default") => {}
            Some(other) => {
                return Err(self.error(
                    "rope_parameters.rope_type",
                    &format!("`{other}` is not supported (only the default rotary embedding is)"),
                ));
            }
        }
        Ok(theta.map_or(default, |t| t as f32))
    }

    /// The attention window per layer, the way transformers derives `layer_types`.
    fn sliding_windows(&self, arch: Arch, num_layers: usize) -> Result<Vec<Option<usize>>> {
        let window = self.opt_usize("sliding_window")?;
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
        let per_layer = |layer: usize| -> Result<Option<usize>> {
            match arch {
                Arch::Mixtral => Ok(window),
                Arch::Olmoe => Ok(None),
                Arch::Qwen2Moe | Arch::Qwen3Moe => {
                    let enabled = self.opt_bool("use_sliding_window")?.unwrap_or(false);
                    let first = self.opt_usize("max_window_layers")?.unwrap_or(num_layers);
                    Ok(window.filter(|_| enabled && layer >= first))
                }
            }
        };
        (0..num_layers).map(per_layer).collect()
    }

    /// Qwen's `mlp_only_layers` and `decoder_sparse_step` pick dense layers; others are all MoE.
    fn feed_forward(&self, arch: Arch, layer: usize) -> Result<FeedForward> {
        if !matches!(arch, Arch::Qwen2Moe | Arch::Qwen3Moe) {
            return Ok(FeedForward::Moe);
        }
        let dense_only: Vec<usize> = match self.get("mlp_only_layers") {
            None => Vec::new(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
                self.error(
                    "mlp_only_layers",
                    &format!("expected a list of layer indices, got {v}"),
                )
            })?,
        };
        let step = self.opt_usize("decoder_sparse_step")?.unwrap_or(1).max(1);
        let sparse = !dense_only.contains(&layer) && (layer + 1).is_multiple_of(step);
        Ok(if sparse {
            FeedForward::Moe
        } else {
            FeedForward::Dense
        })
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
        assert_eq!(c.rope_theta, 1e6);
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
        assert_eq!(c.rope_theta, 5000.0);
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
        v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        assert!(parse(v).unwrap_err().to_string().contains("yarn"));
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
