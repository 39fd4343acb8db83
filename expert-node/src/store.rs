//! Filling the node's `ExpertSet`: each selected expert at both formats of the node's precision
//! pair is memory-mapped from its shard file, or — when the shard is missing, corrupt or stale —
//! quantized from the HF checkpoint once and written as a shard for the next start.

use std::path::Path;
use std::time::{Duration, Instant};

use moe_model::checkpoint::Checkpoint;
use moe_model::config::config_path;
use moe_model::layout::{ExpertMatrix, Layout};
use moe_model::moe::Expert;
use moe_model::{ModelConfig, ModelError};

use crate::selection::ExpertSelection;
use crate::shard::{self, Fingerprint, ShardError, ShardKey};
use crate::work::{ExpertSet, PrecisionPair};

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Shards read from the shard directory.
    pub mapped: usize,
    /// Shards quantized from the checkpoint and written.
    pub built: usize,
    /// Why shards that were present could not be used (corrupt or stale), one line each.
    pub refused: Vec<String>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("--experts: {0}")]
    Selection(String),
    #[error("{path}: {source}")]
    ShardDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Loads the experts `selection` names from `model_dir`, through shards in `shard_dir`.
pub fn load(
    model_dir: &Path,
    shard_dir: &Path,
    selection: &ExpertSelection,
    pair: PrecisionPair,
) -> Result<(ExpertSet, LoadReport), LoadError> {
    let start = Instant::now();
    let cfg = ModelConfig::from_file(&config_path(model_dir))?;
    let fingerprint = Fingerprint::of_checkpoint(model_dir)?;
    std::fs::create_dir_all(shard_dir).map_err(|source| LoadError::ShardDir {
        path: shard_dir.to_path_buf(),
        source,
    })?;
    let moe_layers: Vec<u32> = cfg.moe_layers().map(|l| l as u32).collect();
    let selected = selection
        .resolve(&moe_layers, cfg.num_experts as u32)
        .map_err(LoadError::Selection)?;
    let mut formats = vec![pair.high];
    if pair.low != pair.high {
        formats.push(pair.low);
    }

    let layout = Layout::new(&cfg);
    let mut checkpoint: Option<Checkpoint> = None;
    let mut set = ExpertSet::new(cfg.hidden_size);
    let mut report = LoadReport::default();
    for (layer, expert) in selected {
        for &format in &formats {
            let key = ShardKey {
                layer,
                expert,
                format,
            };
            let weights = match shard::read(
                shard_dir,
                key,
                fingerprint,
                cfg.hidden_size,
                cfg.moe_intermediate_size,
            ) {
                Ok(weights) => {
                    report.mapped += 1;
                    weights
                }
                Err(
                    e @ (ShardError::Missing(_)
                    | ShardError::Corrupt { .. }
                    | ShardError::Stale { .. }),
                ) => {
                    if !matches!(e, ShardError::Missing(_)) {
                        report.refused.push(e.to_string());
                    }
                    let ckpt = match &mut checkpoint {
                        Some(c) => c,
                        None => checkpoint.insert(Checkpoint::open(model_dir)?),
                    };
                    let specs = ExpertMatrix::ALL
                        .map(|m| layout.expert(layer as usize, expert as usize, m));
                    let weights = Expert::load(ckpt, specs, Some(format))?;
                    shard::write(shard_dir, key, fingerprint, &weights)?;
                    report.built += 1;
                    weights
                }
                Err(e) => return Err(e.into()),
            };
            set.insert(layer, expert, weights);
        }
    }
    report.elapsed = start.elapsed();
    Ok((set, report))
}
