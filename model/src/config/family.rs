//! What sets the architectures apart in `config.json` beyond the common shapes: DeepSeek-V3's
//! multi-head latent attention, the sigmoid group-limited routing DeepSeek-V3 and GLM-4.5 share,
//! their shared experts, the attention switches (biases, q/k norms) per family, gpt-oss's experts,
//! and fp8 or MXFP4 storage.

use serde_json::Value;

use super::{Keys, QkNorm, Quantization, bounds};
use crate::arch::Arch;
use crate::checkpoint::FP8_BLOCK;
use crate::error::Result;
use crate::expert::{Activation, ExpertShape};
use crate::mla::MlaDims;
use crate::router::{Grouped, Routing};

/// DeepSeek-V3's attention shape; `None` for the other architectures.
pub(super) fn mla(keys: &Keys<'_>, arch: Arch) -> Result<Option<MlaDims>> {
    if arch != Arch::DeepseekV3 {
        return Ok(None);
    }
    let dims = MlaDims {
        heads: keys.size(bounds::HEADS)?,
        q_lora_rank: keys.opt_size(bounds::Q_LORA_RANK)?.filter(|&r| r > 0),
        kv_lora_rank: keys.size(bounds::KV_LORA_RANK)?,
        qk_nope_head_dim: keys.size(bounds::QK_NOPE_HEAD_DIM)?,
        qk_rope_head_dim: keys.size(bounds::QK_ROPE_HEAD_DIM)?,
        v_head_dim: keys.size(bounds::V_HEAD_DIM)?,
    };
    if !dims.qk_rope_head_dim.is_multiple_of(2) {
        return Err(keys.error("qk_rope_head_dim", "must be even for rotary embeddings"));
    }
    if let Some(kv) = keys.opt_size(bounds::KV_HEADS)?
        && kv != dims.heads
    {
        let reason = format!(
            "{kv}: multi-head latent attention has one per head ({})",
            dims.heads
        );
        return Err(keys.error("num_key_value_heads", &reason));
    }
    Ok(Some(dims))
}

/// The router's rule: softmax, or DeepSeek-V3's and GLM-4.5's sigmoid with groups.
pub(super) fn routing(
    keys: &Keys<'_>,
    arch: Arch,
    normalize: bool,
    (experts, top_k): (usize, usize),
) -> Result<Routing> {
    if !matches!(arch, Arch::DeepseekV3 | Arch::Glm4Moe) {
        return Ok(Routing::Softmax { normalize });
    }
    let groups = keys.opt_size(bounds::GROUPS)?.unwrap_or(1).max(1);
    let kept_groups = keys.opt_size(bounds::KEPT_GROUPS)?.unwrap_or(1).max(1);
    let default_scaling = if arch == Arch::DeepseekV3 { 2.5 } else { 1.0 };
    let scaling = keys
        .opt_positive_f32("routed_scaling_factor")?
        .unwrap_or(default_scaling);
    if !experts.is_multiple_of(groups) || experts / groups < 2 {
        let reason = format!("{groups} groups of {experts} experts: each needs 2 or more, equal");
        return Err(keys.error("n_group", &reason));
    }
    if kept_groups > groups || top_k > kept_groups * (experts / groups) {
        let reason = format!(
            "{kept_groups} of {groups} groups cannot hold the {top_k} experts each token takes"
        );
        return Err(keys.error("topk_group", &reason));
    }
    Ok(Routing::SigmoidGrouped(Grouped {
        groups,
        kept_groups,
        normalize,
        scaling,
    }))
}

/// The width of the shared expert(s) every token runs: Qwen2-MoE's
/// `shared_expert_intermediate_size`, DeepSeek-V3's and GLM-4.5's `n_shared_experts` experts
/// (`moe_intermediate_size` each) as one.
pub(super) fn shared_expert_size(
    keys: &Keys<'_>,
    arch: Arch,
    moe_intermediate_size: usize,
) -> Result<Option<usize>> {
    match arch {
        Arch::Qwen2Moe => Ok(keys
            .opt_size(bounds::SHARED_EXPERT_INTERMEDIATE)?
            .filter(|&n| n > 0)),
        Arch::DeepseekV3 | Arch::Glm4Moe => {
            let shared = keys.opt_size(bounds::SHARED_EXPERTS)?.unwrap_or(1);
            Ok((shared > 0).then_some(shared * moe_intermediate_size))
        }
        _ => Ok(None),
    }
}

/// `(q/k/v bias, o bias, q/k norm)` of the grouped-query attention.
pub(super) fn attention_switches(keys: &Keys<'_>, arch: Arch) -> Result<(bool, bool, QkNorm)> {
    let attention_bias = keys
        .opt_bool("attention_bias")?
        .unwrap_or(arch == Arch::GptOss);
    Ok(match arch {
        Arch::Mixtral | Arch::DeepseekV3 => (false, false, QkNorm::None),
        Arch::Qwen2Moe => (
            keys.opt_bool("qkv_bias")?.unwrap_or(true),
            false,
            QkNorm::None,
        ),
        Arch::Qwen3Moe => (attention_bias, attention_bias, QkNorm::PerHead),
        Arch::Olmoe => (attention_bias, attention_bias, QkNorm::Full),
        Arch::GptOss => (attention_bias, attention_bias, QkNorm::None),
        // GLM-4.5's o_proj has no bias whatever `attention_bias` says.
        Arch::Glm4Moe => {
            let norm = match keys.opt_bool("use_qk_norm")?.unwrap_or(false) {
                true => QkNorm::PerHead,
                false => QkNorm::None,
            };
            (attention_bias, false, norm)
        }
    })
}

/// `rms_norm_eps` where the config leaves it out, as each transformers config defaults it.
pub(super) fn default_rms_norm_eps(arch: Arch) -> f32 {
    match arch {
        Arch::GptOss => 1e-5,
        _ => 1e-6,
    }
}

/// What the routed experts compute: gpt-oss's clamped SwiGLU (`swiglu_alpha` 1.702 and
/// `swiglu_limit` 7 unless set) with biases, SwiGLU without for the others.
pub(super) fn expert_shape(keys: &Keys<'_>, arch: Arch) -> Result<ExpertShape> {
    if arch != Arch::GptOss {
        return Ok(ExpertShape::SWIGLU);
    }
    let activation = Activation::ClampedSwiglu {
        alpha: keys.opt_positive_f32("swiglu_alpha")?.unwrap_or(1.702),
        limit: keys.opt_positive_f32("swiglu_limit")?.unwrap_or(7.0),
    };
    Ok(ExpertShape {
        activation,
        biased: true,
    })
}

/// The checkpoint's quantized storage (`quantization_config.quant_method`): `fp8` with the
/// 128x128 blocks this crate reads, or `mxfp4`.
pub(super) fn quantization(keys: &Keys<'_>) -> Result<Option<Quantization>> {
    let Some(q) = keys.get("quantization_config") else {
        return Ok(None);
    };
    match q.get("quant_method").and_then(Value::as_str) {
        Some("mxfp4") => Ok(Some(Quantization::Mxfp4)),
        _ => fp8(keys, q).map(|()| Some(Quantization::Fp8)),
    }
}

/// Checks an fp8 `quantization_config`.
fn fp8(keys: &Keys<'_>, q: &Value) -> Result<()> {
    let method = q.get("quant_method").and_then(Value::as_str);
    match method {
        Some("fp8") => {}
        Some(other) => {
            let reason = format!("`{other}` is not supported (fp8 and mxfp4 are)");
            return Err(keys.error("quantization_config.quant_method", &reason));
        }
        None => return Err(keys.error("quantization_config.quant_method", "missing")),
    }
    let block = q.get("weight_block_size").and_then(Value::as_array);
    let edges: Option<Vec<u64>> = block.map(|b| b.iter().filter_map(Value::as_u64).collect());
    match edges.as_deref() {
        None => {}
        Some([r, c]) if *r == FP8_BLOCK as u64 && *c == FP8_BLOCK as u64 => {}
        Some(other) => {
            let reason = format!("{other:?}: only [{FP8_BLOCK}, {FP8_BLOCK}] blocks are read");
            return Err(keys.error("quantization_config.weight_block_size", &reason));
        }
    }
    match q.get("fmt").and_then(Value::as_str) {
        None | Some("e4m3") => Ok(()),
        Some(other) => Err(keys.error(
            "quantization_config.fmt",
            &format!("`{other}` is not supported (e4m3 is)"),
        )),
    }
}
