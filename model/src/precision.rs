//! The two copies of every expert an expert node holds — HOBBIT's high and low precision, written
//! `high+low` (`f16+q4`, `q8+q2`, `fp8+q4`) — and the pair a checkpoint is served at when none is
//! asked for: its experts as stored where the kernels serve that format as it is (fp8), else f16,
//! with q4 as the low copy.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use moe_kernels::Format;

use crate::config::{ModelConfig, Quantization, config_path};
use crate::error::ModelError;

/// A node's high and low precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrecisionPair {
    pub high: Format,
    pub low: Format,
}

impl PrecisionPair {
    /// The pair a node serves `cfg`'s experts at unless told otherwise: `fp8+q4` for an fp8
    /// checkpoint (its experts as stored, never widened), `f16+q4` otherwise.
    pub fn for_model(cfg: &ModelConfig) -> PrecisionPair {
        match cfg.quantization {
            Some(Quantization::Fp8) => PrecisionPair {
                high: Format::Fp8,
                low: Format::Q4,
            },
            Some(Quantization::Mxfp4) => PrecisionPair {
                high: Format::Mxfp4,
                low: Format::Q2,
            },
            None => PrecisionPair {
                high: Format::F16,
                low: Format::Q4,
            },
        }
    }
}

/// A `--precisions` flag, as the nodes, the coordinator and the tools read it: `auto` (the
/// checkpoint's, see [`PrecisionPair::for_model`]) or a pair such as `f16+q4`, `q8+q2` or
/// `fp8+q4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precisions(pub Option<PrecisionPair>);

impl FromStr for Precisions {
    type Err = String;

    fn from_str(s: &str) -> Result<Precisions, String> {
        match s {
            "auto" => Ok(Precisions(None)),
            pair => pair.parse().map(|p| Precisions(Some(p))),
        }
    }
}

impl Precisions {
    /// The pair asked for, or the checkpoint's in `model_dir` for `auto`.
    pub fn resolve(&self, model_dir: &Path) -> Result<PrecisionPair, ModelError> {
        match self.0 {
            Some(pair) => Ok(pair),
            None => {
                let cfg = ModelConfig::from_file(&config_path(model_dir))?;
                Ok(PrecisionPair::for_model(&cfg))
            }
        }
    }
}

impl fmt::Display for PrecisionPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.high, self.low)
    }
}

impl FromStr for PrecisionPair {
    type Err = String;

    /// `high+low`, two formats the low one no wider than the high one.
    fn from_str(s: &str) -> Result<PrecisionPair, String> {
        let (high, low) = s
            .split_once('+')
            .ok_or_else(|| format!("`{s}`: expected high+low, e.g. f16+q4, q8+q2 or fp8+q4"))?;
        let format = |f: &str| f.parse::<Format>().map_err(|e| format!("`{s}`: {e}"));
        let pair = PrecisionPair {
            high: format(high)?,
            low: format(low)?,
        };
        if pair.low.bits_per_weight() > pair.high.bits_per_weight() {
            return Err(format!(
                "`{s}`: the low precision ({}) is wider than the high one ({})",
                pair.low, pair.high
            ));
        }
        Ok(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_print_and_refuse_a_wider_low_copy() {
        for text in ["f16+q4", "q8+q2", "fp8+q4", "bf16+q8", "f16+f16"] {
            let pair: PrecisionPair = text.parse().unwrap();
            assert_eq!(pair.to_string(), text);
        }
        assert!(
            "q4+f16"
                .parse::<PrecisionPair>()
                .unwrap_err()
                .contains("wider")
        );
        assert!("f16".parse::<PrecisionPair>().is_err());
        assert!(
            "f16+q3"
                .parse::<PrecisionPair>()
                .unwrap_err()
                .contains("q3")
        );
    }
}
