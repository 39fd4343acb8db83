//! Command-line arguments shared by every subcommand that loads a model, and the loading itself.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use moe_kernels::{Format, Pool};
use moe_model::{LoadOptions, Model};
use moe_service::progress::{Unit, reporter};

#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// HuggingFace checkpoint directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long, env = "MOE_MODEL")]
    pub model: PathBuf,
    /// Format of the routed experts' weights: f32, f16, bf16, fp8, q8, q4, mxfp4 or q2 (default:
    /// as stored; fp8 and MXFP4 checkpoints keep theirs).
    #[arg(long, env = "MOE_EXPERT_PRECISION")]
    pub expert_precision: Option<Format>,
    /// Format of the dense weights (attention, dense MLPs, shared experts, output head): f32, f16,
    /// bf16, fp8, q8, q4, mxfp4 or q2 (default: as stored). Embeddings, norms and routers stay as stored.
    #[arg(long, env = "MOE_DENSE_PRECISION")]
    pub dense_precision: Option<Format>,
    /// Kernel threads (0 = one per core).
    #[arg(long, env = "MOE_THREADS", default_value_t = 0)]
    pub threads: usize,
}

impl ModelArgs {
    pub fn pool(&self) -> anyhow::Result<Arc<Pool>> {
        Ok(Arc::new(Pool::new(self.threads)?))
    }

    pub fn load(&self) -> anyhow::Result<Model> {
        let options = LoadOptions {
            expert_format: self.expert_precision,
            dense_format: self.dense_precision,
            ..LoadOptions::default()
        };
        let mut report = reporter("loading layers", Unit::Items("layers"));
        Model::load_counting(&self.model, &options, self.pool()?, &mut report)
            .with_context(|| format!("loading the model from {}", self.model.display()))
    }
}

/// Token ids given as `1,2,3` on the command line.
#[derive(Debug, Clone)]
pub struct TokenIds(pub Vec<u32>);

impl std::str::FromStr for TokenIds {
    type Err = String;

    fn from_str(s: &str) -> Result<TokenIds, String> {
        s.split(',')
            .map(|t| {
                t.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("`{t}` is not a token id"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TokenIds)
    }
}
