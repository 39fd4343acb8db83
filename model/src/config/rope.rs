//! The rotary embedding a config asks for: `rope_parameters` (transformers 5) or the older
//! top-level `rope_theta` and `rope_scaling`; the default embedding or YaRN; over the whole head,
//! its first `partial_rotary_factor` (GLM-4.5, 0.5 unless set) or DeepSeek-V3's rope part; in
//! transformers' `rotate_half` layout or DeepSeek-V3's interleaved one (`rope_interleave`, true
//! unless set).

use serde_json::{Map, Value};

use super::{Keys, RopeSpec};
use crate::arch::Arch;
use crate::error::Result;
use crate::rope::{RopeLayout, Yarn};

/// The rope parameters object, wherever the config keeps it, and the key it came from.
fn parameters<'a>(keys: &Keys<'a>) -> Result<Option<(&'a Map<String, Value>, &'static str)>> {
    for key in ["rope_parameters", "rope_scaling"] {
        match keys.get(key) {
            None => continue,
            Some(Value::Object(p)) => return Ok(Some((p, key))),
            Some(other) => {
                return Err(keys.error(key, &format!("expected an object, got {other}")));
            }
        }
    }
    Ok(None)
}

/// A number of the rope parameters, or of the config itself.
fn number(keys: &Keys<'_>, p: Option<&Map<String, Value>>, key: &str) -> Option<f64> {
    p.and_then(|p| p.get(key))
        .or_else(|| keys.get(key))
        .and_then(Value::as_f64)
}

/// gpt-oss's rotary embedding where its config sets none (transformers' `GptOssConfig`).
const GPT_OSS_YARN: Yarn = Yarn {
    factor: 32.0,
    original_max_position_embeddings: 4096,
    beta_fast: 32.0,
    beta_slow: 1.0,
    attention_factor: None,
    mscale: None,
    mscale_all_dim: None,
    truncate: false,
};

pub(super) fn spec(keys: &Keys<'_>, arch: Arch, head_dim: usize) -> Result<RopeSpec> {
    let found = parameters(keys)?;
    let (p, key) = (found.map(|f| f.0), found.map_or("rope_parameters", |f| f.1));
    let theta = match number(keys, p, "rope_theta").map(|t| t as f32) {
        None if arch == Arch::Mixtral => 1e6,
        None if arch == Arch::GptOss => 150000.0,
        None => 10000.0,
        Some(t) if t.is_finite() && t > 0.0 => t,
        Some(t) => {
            let reason = format!("expected a positive finite number, got {t}");
            return Err(keys.error("rope_theta", &reason));
        }
    };
    let rope_type = p
        .and_then(|p| p.get("rope_type").or_else(|| p.get("type")))
        .and_then(Value::as_str);
    let yarn = match rope_type {
        None if p.is_none() && arch == Arch::GptOss => Some(GPT_OSS_YARN),
        None | Some("default") => None,
        Some("yarn") => Some(yarn(keys, p, key)?),
        Some(other) => {
            let reason = format!("`{other}` is not supported (the default and yarn are)");
            return Err(keys.error(&format!("{key}.rope_type"), &reason));
        }
    };
    let partial = match arch {
        Arch::Glm4Moe => number(keys, p, "partial_rotary_factor").unwrap_or(0.5),
        _ => number(keys, p, "partial_rotary_factor").unwrap_or(1.0),
    };
    let rotary_dim = (head_dim as f64 * partial) as usize;
    if !(partial > 0.0 && partial <= 1.0) || rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
        let reason = format!("{partial} of head_dim {head_dim} is not an even, positive part");
        return Err(keys.error("partial_rotary_factor", &reason));
    }
    let layout = match arch {
        Arch::DeepseekV3 if keys.opt_bool("rope_interleave")?.unwrap_or(true) => {
            RopeLayout::Interleaved
        }
        _ => RopeLayout::Half,
    };
    Ok(RopeSpec {
        theta,
        rotary_dim,
        layout,
        yarn,
    })
}

/// YaRN's parameters, with transformers' defaults.
fn yarn(keys: &Keys<'_>, p: Option<&Map<String, Value>>, key: &str) -> Result<Yarn> {
    let get = |name: &str| number(keys, p, name).map(|v| v as f32);
    let original = number(keys, p, "original_max_position_embeddings")
        .map(|v| v as usize)
        .or(keys.opt_size(super::bounds::POSITIONS)?);
    let factor = match (get("factor"), original) {
        (Some(f), _) => f,
        (None, Some(o)) => {
            let max = keys.opt_size(super::bounds::POSITIONS)?.unwrap_or(o);
            max as f32 / o as f32
        }
        (None, None) => return Err(keys.error(&format!("{key}.factor"), "missing for yarn")),
    };
    let Some(original) = original.filter(|&o| o > 0) else {
        let reason = "missing for yarn";
        return Err(keys.error(&format!("{key}.original_max_position_embeddings"), reason));
    };
    if !(factor.is_finite() && factor > 0.0) {
        let reason = format!("expected a positive finite number, got {factor}");
        return Err(keys.error(&format!("{key}.factor"), &reason));
    }
    Ok(Yarn {
        factor,
        original_max_position_embeddings: original,
        beta_fast: get("beta_fast").filter(|&b| b != 0.0).unwrap_or(32.0),
        beta_slow: get("beta_slow").filter(|&b| b != 0.0).unwrap_or(1.0),
        attention_factor: get("attention_factor"),
        mscale: get("mscale"),
        mscale_all_dim: get("mscale_all_dim"),
        truncate: p
            .and_then(|p| p.get("truncate"))
            .and_then(Value::as_bool)
            .unwrap_or(true),
    })
}
