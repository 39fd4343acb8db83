//! `moe gen-model`: writes a seeded random-weight checkpoint in the HuggingFace layout (see
//! `moe_synth` for the presets and the weights), then prints a one-line summary.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct GenModelArgs {
    /// Architecture: mixtral, qwen2-moe, qwen3-moe or olmoe.
    #[arg(long)]
    arch: moe_model::Arch,
    /// Shape: tiny (tests), small (demos) or medium (benchmarks, about 1.5 GB).
    #[arg(long, default_value = "tiny")]
    preset: moe_synth::Preset,
    /// Seed of the weights: the same seed writes the same bytes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory to write the checkpoint into (created if absent).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: &GenModelArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let report = moe_synth::write_checkpoint(args.arch, args.preset, args.seed, &args.out)
        .with_context(|| {
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
