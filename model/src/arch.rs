//! The MoE architectures this crate understands, and their names in each place they appear
//! (HF `architectures`, HF `model_type`, the command line). Not their shapes: see `config`.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    Olmoe,
    DeepseekV3,
    Glm4Moe,
    GptOss,
}

impl Arch {
    pub const ALL: [Arch; 7] = [
        Arch::Mixtral,
        Arch::Qwen2Moe,
        Arch::Qwen3Moe,
        Arch::Olmoe,
        Arch::DeepseekV3,
        Arch::Glm4Moe,
        Arch::GptOss,
    ];
    pub const SUPPORTED: &'static str = "MixtralForCausalLM, Qwen2MoeForCausalLM, \
        Qwen3MoeForCausalLM, OlmoeForCausalLM, DeepseekV3ForCausalLM, Glm4MoeForCausalLM, GptOssForCausalLM";

    /// The class name HF writes into `architectures`.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Mixtral => "MixtralForCausalLM",
            Arch::Qwen2Moe => "Qwen2MoeForCausalLM",
            Arch::Qwen3Moe => "Qwen3MoeForCausalLM",
            Arch::Olmoe => "OlmoeForCausalLM",
            Arch::DeepseekV3 => "DeepseekV3ForCausalLM",
            Arch::Glm4Moe => "Glm4MoeForCausalLM",
            Arch::GptOss => "GptOssForCausalLM",
        }
    }

    /// The `model_type` HF writes into `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Mixtral => "mixtral",
            Arch::Qwen2Moe => "qwen2_moe",
            Arch::Qwen3Moe => "qwen3_moe",
            Arch::Olmoe => "olmoe",
            Arch::DeepseekV3 => "deepseek_v3",
            Arch::Glm4Moe => "glm4_moe",
            Arch::GptOss => "gpt_oss",
        }
    }

    /// The name used on the command line (`moe gen-model --arch ...`).
    pub fn cli_name(self) -> &'static str {
        match self {
            Arch::Mixtral => "mixtral",
            Arch::Qwen2Moe => "qwen2-moe",
            Arch::Qwen3Moe => "qwen3-moe",
            Arch::Olmoe => "olmoe",
            Arch::DeepseekV3 => "deepseek-v3",
            Arch::Glm4Moe => "glm4-moe",
            Arch::GptOss => "gpt-oss",
        }
    }

    /// Recognises an architecture by HF class name or `model_type`.
    pub fn from_hf(name: &str) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.hf_class() == name || a.model_type() == name)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_name())
    }
}

impl FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL
            .into_iter()
            .find(|a| a.cli_name() == s)
            .or_else(|| Arch::from_hf(s))
            .ok_or_else(|| {
                format!(
                    "unknown architecture `{s}` (expected mixtral, qwen2-moe, qwen3-moe, olmoe, \
                     deepseek-v3, glm4-moe or gpt-oss)"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.cli_name().parse::<Arch>(), Ok(a));
            assert_eq!(Arch::from_hf(a.hf_class()), Some(a));
            assert_eq!(Arch::from_hf(a.model_type()), Some(a));
        }
        assert!("llama".parse::<Arch>().is_err());
    }
}
