//! The node's experts on the RAM disk: each selected expert at both formats of the node's
//! precision pair has a checked shard file — mapped from the shard directory, or, when the shard
//! is missing, corrupt or stale, quantized from the HF checkpoint once and written for the next
//! start. The `Catalog` lists them and reads one back on demand; the initial hot set (see
//! `hot_set`) is read into memory while the shards are checked.

use moe_service::progress::{Progress, Unit};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use moe_kernels::Fit;
use moe_model::checkpoint::Checkpoint;
use moe_model::config::config_path;
use moe_model::layout::Layout;
use moe_model::moe::{Expert, ExpertShape};
use moe_model::{ModelConfig, ModelError};
use rayon::prelude::*;

use crate::hot_set::{self, Budget, Candidate};
use crate::selection::ExpertSelection;
use crate::shard::{self, ExpertDims, Fingerprint, ShardError, ShardKey};
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
    /// Shards that could be neither read nor built, with why.
    pub failed: Vec<Failed>,
    pub elapsed: Duration,
}

/// A shard that could be neither read nor built.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed {
    pub key: ShardKey,
    /// Why, e.g. `/dev/shm/moe/node-0: No space left on device (os error 28)`.
    pub cause: String,
    /// The shard directory had no room for it.
    pub no_room: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error("--experts: {0}")]
    Selection(String),
    #[error("layer {layer} expert {expert} is not an expert of this model")]
    NotAnExpert { layer: u32, expert: u32 },
    #[error("cannot load an expert: {0}")]
    Unloadable(String),
    #[error("{path}: {source}")]
    ShardDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The checked shard files of the experts a node holds, by (layer, expert, format).
#[derive(Debug, Clone)]
pub struct Catalog {
    dir: PathBuf,
    fingerprint: Fingerprint,
    dims: ExpertDims,
    /// Decoder layers of the model (held or not).
    layers: usize,
    /// Bytes of each expert's weights (its shard's payload).
    experts: BTreeMap<ShardKey, u64>,
}

impl Catalog {
    /// Reads the expert `key` from its shard, checking it again.
    pub fn read(&self, key: ShardKey) -> Result<Expert, ShardError> {
        shard::read(&self.dir, key, self.fingerprint, self.dims)
    }

    pub fn contains(&self, key: ShardKey) -> bool {
        self.experts.contains_key(&key)
    }

    /// Every held (layer, expert, format) with the bytes its weights take, in key order.
    pub fn experts(&self) -> impl Iterator<Item = (ShardKey, u64)> + '_ {
        self.experts.iter().map(|(&k, &b)| (k, b))
    }

    pub fn len(&self) -> usize {
        self.experts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.experts.is_empty()
    }

    /// The widths and shape of every expert of the model.
    pub fn dims(&self) -> ExpertDims {
        self.dims
    }

    pub fn hidden(&self) -> usize {
        self.dims.hidden
    }

    /// Columns of an expert's down matrix.
    pub fn intermediate(&self) -> usize {
        self.dims.intermediate
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The matrices of an expert stored in a wider format than `pair` asks for (their widths
    /// do not fit its blocks): (matrix, fit) for each format of the pair, gate/up then down.
    pub fn fallbacks(&self, pair: PrecisionPair) -> Vec<(&'static str, Fit)> {
        let mut formats = vec![pair.high];
        if pair.low != pair.high {
            formats.push(pair.low);
        }
        formats
            .into_iter()
            .flat_map(|f| {
                [
                    ("gate_up", f.fitting(self.dims.hidden)),
                    ("down", f.fitting(self.dims.intermediate)),
                ]
            })
            .filter(|(_, fit)| fit.fell_back())
            .collect()
    }

    /// Decoder layers of the model, including those this node holds no expert of.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Bytes of the shard files on the RAM disk.
    pub fn file_bytes(&self) -> u64 {
        let headers = (shard::HEADER_BYTES * self.experts.len()) as u64;
        headers + self.experts.values().sum::<u64>()
    }
}

/// Checks or builds the shards of the experts `selection` names from `model_dir` in `shard_dir`,
/// and reads the initial hot set — the experts that fit `budget` in key order — into memory.
pub fn open(
    model_dir: &Path,
    shard_dir: &Path,
    selection: &ExpertSelection,
    pair: PrecisionPair,
    budget: Budget,
) -> Result<(Catalog, ExpertSet, LoadReport), LoadError> {
    let start = Instant::now();
    let cfg = ModelConfig::from_file(&config_path(model_dir))?;
    std::fs::create_dir_all(shard_dir).map_err(|source| LoadError::ShardDir {
        path: shard_dir.to_path_buf(),
        source,
    })?;
    let moe_layers: Vec<u32> = cfg.moe_layers().map(|l| l as u32).collect();
    let selected = selection
        .resolve(&moe_layers, cfg.num_experts as u32)
        .map_err(LoadError::Selection)?;
    let empty = Catalog {
        dir: shard_dir.to_path_buf(),
        fingerprint: Fingerprint::of_checkpoint(model_dir)?,
        dims: ExpertDims::of(&cfg),
        layers: cfg.num_layers,
        experts: BTreeMap::new(),
    };
    let keys = shard_keys(&selected, pair);
    let candidates: Vec<Candidate> = keys
        .iter()
        .map(|&key| Candidate {
            key,
            bytes: empty.payload_bytes(key),
            uses: 0,
            pinned: false,
            resident: false,
        })
        .collect();
    let hot = hot_set::choose(&candidates, budget);
    let Provided {
        catalog,
        read,
        mut report,
    } = empty.provide(model_dir, &cfg, &keys, &hot)?;
    if let Some(failed) = report.failed.first() {
        return Err(LoadError::Unloadable(failed.cause.clone()));
    }
    let mut resident = ExpertSet::new(catalog.dims.hidden);
    for (key, weights) in read {
        resident.insert(key, weights);
    }
    report.elapsed = start.elapsed();
    Ok((catalog, resident, report))
}

/// Both formats of `pair` for every (layer, expert).
pub fn shard_keys(experts: &[(u32, u32)], pair: PrecisionPair) -> Vec<ShardKey> {
    let mut formats = vec![pair.high];
    if pair.low != pair.high {
        formats.push(pair.low);
    }
    let mut keys: Vec<ShardKey> = experts
        .iter()
        .flat_map(|&(layer, expert)| {
            formats.iter().map(move |&format| ShardKey {
                layer,
                expert,
                format,
            })
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

impl Catalog {
    fn payload_bytes(&self, key: ShardKey) -> u64 {
        shard::payload_bytes(key.format, self.dims.hidden, self.dims.intermediate) as u64
    }

    /// This catalog with `keys` added: their shards checked, or built from the checkpoint in
    /// `model_dir` when missing, corrupt or stale. Nothing is read into memory.
    pub fn extend(
        &self,
        model_dir: &Path,
        keys: &[ShardKey],
    ) -> Result<(Catalog, LoadReport), LoadError> {
        let start = Instant::now();
        let cfg = ModelConfig::from_file(&config_path(model_dir))?;
        let moe_layers: Vec<usize> = cfg.moe_layers().collect();
        if let Some(bad) = keys.iter().find(|k| {
            !moe_layers.contains(&(k.layer as usize)) || k.expert as usize >= cfg.num_experts
        }) {
            return Err(LoadError::NotAnExpert {
                layer: bad.layer,
                expert: bad.expert,
            });
        }
        let new: Vec<ShardKey> = keys
            .iter()
            .copied()
            .filter(|&k| !self.contains(k))
            .collect();
        let Provided {
            catalog,
            mut report,
            ..
        } = self.provide(model_dir, &cfg, &new, &std::collections::BTreeSet::new())?;
        report.elapsed = start.elapsed();
        Ok((catalog, report))
    }

    /// This catalog without `keys`; their shard files stay on the RAM disk for a later start or
    /// assignment.
    pub fn without(&self, keys: &[ShardKey]) -> Catalog {
        let mut catalog = self.clone();
        for key in keys {
            catalog.experts.remove(key);
        }
        catalog
    }

    /// Checks or builds the shards of `keys` and reads those in `hot` into memory; returns this
    /// catalog with the keys it could provide added, the experts read, and the keys it could not
    /// in the report's `failed`.
    fn provide(
        &self,
        model_dir: &Path,
        cfg: &ModelConfig,
        keys: &[ShardKey],
        hot: &std::collections::BTreeSet<ShardKey>,
    ) -> Result<Provided, LoadError> {
        let (shard_dir, fingerprint) = (&self.dir, self.fingerprint);
        let dims = self.dims;
        // Checking a shard reads all of it (the payload checksum): spread that over the cores.
        let checked: Vec<Result<Option<Expert>, ShardError>> = keys
            .par_iter()
            .map(|&key| {
                if hot.contains(&key) {
                    shard::read(shard_dir, key, fingerprint, dims).map(Some)
                } else {
                    shard::check(shard_dir, key, fingerprint, dims).map(|()| None)
                }
            })
            .collect();
        let to_build = checked
            .iter()
            .filter(|c| c.as_ref().is_err_and(needs_building))
            .count();
        let mut progress = (to_build > 0)
            .then(|| Progress::new("building shards", Unit::Items("shards"), to_build as u64));
        let mut builder = Builder {
            model_dir,
            layout: Layout::new(cfg),
            shape: cfg.expert_shape,
            checkpoint: None,
            shard_dir,
            fingerprint,
        };
        let mut catalog = self.clone();
        let mut read = Vec::new();
        let mut report = LoadReport::default();
        for (&key, found) in keys.iter().zip(checked) {
            let weights = match found {
                Ok(weights) => {
                    report.mapped += 1;
                    weights
                }
                Err(e) => {
                    if !needs_building(&e) {
                        report.failed.push(failed(key, shard_dir, &e.into()));
                        continue;
                    }
                    if !matches!(e, ShardError::Missing(_)) {
                        report.refused.push(e.to_string());
                    }
                    let built = builder.build(key);
                    if let Some(p) = &mut progress {
                        p.inc(1);
                    }
                    match built {
                        Ok(weights) => {
                            report.built += 1;
                            hot.contains(&key).then_some(weights)
                        }
                        Err(e) => {
                            report.failed.push(failed(key, shard_dir, &e));
                            continue;
                        }
                    }
                }
            };
            catalog.experts.insert(key, self.payload_bytes(key));
            if let Some(weights) = weights {
                read.push((key, weights));
            }
        }
        if let Some(p) = progress {
            p.finish();
        }
        Ok(Provided {
            catalog,
            read,
            report,
        })
    }
}

/// Whether a shard check's error means the shard must be built from the checkpoint.
fn needs_building(e: &ShardError) -> bool {
    matches!(
        e,
        ShardError::Missing(_) | ShardError::Corrupt { .. } | ShardError::Stale { .. }
    )
}

/// A shard that could not be provided: why, naming the shard directory rather than the file
/// when it had no room, so that one cause covers every shard it refused.
fn failed(key: ShardKey, shard_dir: &Path, e: &LoadError) -> Failed {
    let no_room = matches!(e, LoadError::Shard(s) if shard::is_no_room(s));
    let cause = match e {
        LoadError::Shard(ShardError::Io { source, .. }) if no_room => {
            format!("{}: {source}", shard_dir.display())
        }
        _ => e.to_string(),
    };
    Failed {
        key,
        cause,
        no_room,
    }
}

/// Builds shards from the checkpoint, opened on first use.
struct Builder<'a> {
    model_dir: &'a Path,
    layout: Layout<'a>,
    shape: ExpertShape,
    checkpoint: Option<Checkpoint>,
    shard_dir: &'a Path,
    fingerprint: Fingerprint,
}

impl Builder<'_> {
    /// Quantizes the expert `key` from the checkpoint and writes its shard.
    fn build(&mut self, key: ShardKey) -> Result<Expert, LoadError> {
        let ckpt = match &mut self.checkpoint {
            Some(c) => c,
            None => self.checkpoint.insert(Checkpoint::open(self.model_dir)?),
        };
        let tensors = self
            .layout
            .routed_expert(key.layer as usize, key.expert as usize);
        let weights = Expert::load_routed(ckpt, &tensors, self.shape, Some(key.format))?;
        shard::write(self.shard_dir, key, self.fingerprint, &weights)?;
        Ok(weights)
    }
}

/// What `Catalog::provide` did: the grown catalog, the experts it read, and how.
struct Provided {
    catalog: Catalog,
    read: Vec<(ShardKey, Expert)>,
    report: LoadReport,
}

/// Loads every expert `selection` names into memory, through shards in `shard_dir`.
pub fn load(
    model_dir: &Path,
    shard_dir: &Path,
    selection: &ExpertSelection,
    pair: PrecisionPair,
) -> Result<(ExpertSet, LoadReport), LoadError> {
    let (_, resident, report) = open(model_dir, shard_dir, selection, pair, Budget::Unlimited)?;
    Ok((resident, report))
}
