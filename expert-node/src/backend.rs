//! Where experts run: the CUDA backend when asked for (`--backend cuda`), or with `auto` when the
//! driver, NVRTC and a GPU are all present; otherwise the CPU kernels. Choosing probes the
//! libraries before touching them, so a machine without CUDA gets the CPU and one log line.

use crate::config::{Backend, Config};
use crate::gpu::Accelerator;
use crate::store::Catalog;
use crate::work::PrecisionPair;

/// The outcome of choosing.
pub enum Chosen {
    /// The CPU kernels; `reason` says why not the GPU when `auto` looked for one.
    Cpu { reason: Option<String> },
    /// The GPU, with a description of it for the start-up line.
    Cuda {
        gpu: Box<dyn Accelerator>,
        device: String,
    },
}

impl Chosen {
    /// How the start-up line names the backend.
    pub fn describe(&self) -> String {
        match self {
            Chosen::Cpu { reason: None } => "cpu".into(),
            Chosen::Cpu {
                reason: Some(reason),
            } => format!("cpu (CUDA unavailable: {reason})"),
            Chosen::Cuda { device, .. } => format!("cuda ({device})"),
        }
    }
}

/// Opens the backend `config` asks for; `Err` only when `--backend cuda` cannot be honoured.
pub fn choose(config: &Config, catalog: &Catalog, pair: PrecisionPair) -> Result<Chosen, String> {
    if config.backend == Backend::Cpu {
        return Ok(Chosen::Cpu { reason: None });
    }
    match open_cuda(config, catalog, pair) {
        Ok(chosen) => Ok(chosen),
        Err(reason) if config.backend == Backend::Auto => Ok(Chosen::Cpu {
            reason: Some(reason),
        }),
        Err(reason) => Err(format!("--backend cuda: {reason}")),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(config: &Config, catalog: &Catalog, pair: PrecisionPair) -> Result<Chosen, String> {
    use moe_kernels::cuda::CudaExperts;

    use crate::cache_policy::{CacheConfig, TierBytes, Weights};
    use crate::gpu::Gpu;

    let device = CudaExperts::open(config.gpu_device, &config.shard_dir.join("kernels"))
        .map_err(|e| e.to_string())?;
    let (free, total) = device.memory().map_err(|e| e.to_string())?;
    let bytes = match config.gpu_memory {
        0 => free as u64 / 10 * 9,
        n => n,
    };
    // A quarter of the cache holds low-precision copies, the rest high-precision ones.
    let capacity = TierBytes {
        high: bytes - bytes / 4,
        low: bytes / 4,
    };
    let description = format!(
        "{}, {}, {} of {} MiB for experts",
        device.name(),
        device.arch(),
        bytes >> 20,
        total >> 20
    );
    let cache = CacheConfig {
        capacity,
        layers: catalog.layers() as u32,
        weights: Weights::default(),
        downgrade_above: config.downgrade_above,
    };
    let gpu = Gpu::new(
        device,
        cache,
        pair,
        catalog.experts(),
        config.pcie_backlog_bytes,
    )
    .map_err(|e| e.to_string())?;
    Ok(Chosen::Cuda {
        gpu: Box::new(gpu),
        device: description,
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_config: &Config, _catalog: &Catalog, _pair: PrecisionPair) -> Result<Chosen, String> {
    Err("this build has no CUDA backend (built without the `cuda` feature)".into())
}
