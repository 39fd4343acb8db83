//! `moe gen-model`: writes a seeded random-weight checkpoint in the HuggingFace layout (see
//! `moe_synth` for the presets and the weights), with its progress on stderr, then prints a
//! one-line summary.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use moe_service::progress::{Progress, Unit};

/// How a generated checkpoint stores its decoder matrices.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Storage {
    F16,
    Fp8,
    Mxfp4,
}

#[derive(clap::Args, Debug)]
pub struct GenModelArgs {
    /// Architecture: mixtral, qwen2-moe, qwen3-moe, olmoe, deepseek-v3, glm4-moe or gpt-oss.
    #[arg(long)]
    arch: moe_model::Arch,
    /// Shape: tiny (tests), small (demos), medium (benchmarks, about 1.5 GB) or real-width (the
    /// released model's widths with 4 layers).
    #[arg(long, default_value = "tiny")]
    preset: moe_synth::Preset,
    /// Decoder layers, in place of the preset's.
    #[arg(long)]
    layers: Option<usize>,
    /// Keys of the preset's config.json set to other values, as key=value (JSON values; several
    /// comma-separated or repeated), e.g. moe_intermediate_size=40.
    #[arg(long = "set")]
    overrides: Vec<moe_synth::Overrides>,
    /// How the decoder layers' matrices are stored: f16; fp8 (E4M3 with one scale per 128x128
    /// block, as DeepSeek-V3's release; embeddings, head and routers stay f16); or mxfp4
    /// (gpt-oss only: its fused experts as MXFP4 blocks and scales, as released).
    #[arg(long, default_value = "f16")]
    storage: Storage,
    /// Seed of the weights: the same seed writes the same bytes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory to write the checkpoint into (created if absent).
    #[arg(long)]
    out: PathBuf,
    /// Seconds between progress lines when stderr is not a terminal.
    #[arg(long, default_value_t = 5.0)]
    progress_seconds: f64,
}

pub fn run(args: &GenModelArgs) -> anyhow::Result<()> {
    if args.storage == Storage::Mxfp4 && args.arch != moe_model::Arch::GptOss {
        anyhow::bail!(
            "--storage mxfp4 is gpt-oss's (its fused experts); {} has none",
            args.arch
        );
    }
    let start = Instant::now();
    let mut progress: Option<Progress> = None;
    let mut written = |done: u64, total: u64| {
        let p = progress.get_or_insert_with(|| {
            Progress::new("writing the weights", Unit::Bytes, total)
                .every(Duration::from_secs_f64(args.progress_seconds.max(0.0)))
        });
        p.inc(done.saturating_sub(p.done()));
    };
    let layers = args
        .layers
        .map(|n| format!("num_hidden_layers={n}").parse());
    let overrides: moe_synth::Overrides = args
        .overrides
        .iter()
        .cloned()
        .chain(layers.transpose().map_err(anyhow::Error::msg)?)
        .chain((args.storage == Storage::Fp8).then(moe_synth::Overrides::fp8_storage))
        .chain((args.storage == Storage::Mxfp4).then(moe_synth::Overrides::mxfp4_storage))
        .collect();
    let written = moe_synth::write_checkpoint_reporting(
        args.arch,
        args.preset,
        &overrides,
        args.seed,
        &args.out,
        &mut written,
    );
    if let Some(p) = progress {
        p.finish();
    }
    let report = written.with_context(|| {
        format!(
            "writing the {} {} checkpoint to {}",
            args.arch,
            args.preset,
            args.out.display()
        )
    })?;
    println!(
        "wrote {} {} (seed {}) to {}: {} parameters, {} bytes in {} files, {:.1} s",
        args.arch,
        args.preset,
        args.seed,
        args.out.display(),
        report.parameters,
        report.bytes,
        report.files.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
