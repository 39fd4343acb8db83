//! `moe check-kernels`: compiles the CUDA expert kernels with NVRTC for each GPU architecture,
//! without a GPU, and reports what ptxas says about each kernel (registers, spills, stack,
//! shared memory). Prints a table, then one JSON object as the last line. Fails when NVRTC is
//! missing, when a kernel does not compile, or when an expected kernel is absent.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use moe_kernels::cuda::{self, Arch};

/// Options of `moe check-kernels`.
#[derive(clap::Args, Debug)]
pub struct CheckKernelsArgs {
    /// Comma-separated GPU architectures to compile for.
    #[arg(long, value_delimiter = ',', default_value = "sm_80,sm_86,sm_89,sm_90")]
    archs: Vec<String>,
    /// Also write the JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: &CheckKernelsArgs) -> anyhow::Result<()> {
    let archs = args
        .archs
        .iter()
        .map(|a| a.parse::<Arch>())
        .collect::<Result<Vec<_>, _>>()?;
    let (major, minor) = cuda::nvrtc_version()?;
    println!("NVRTC {major}.{minor}");
    println!(
        "{:<6} {:<16} {:>9} {:>12} {:>11} {:>11} {:>10}",
        "arch", "kernel", "registers", "spill st (B)", "spill ld (B)", "stack (B)", "smem (B)"
    );
    let mut reports = Vec::new();
    for arch in archs {
        let start = Instant::now();
        let cubin = cuda::compile(arch).with_context(|| format!("compiling for {arch}"))?;
        let compile_ms = start.elapsed().as_secs_f64() * 1e3;
        if cubin.kernels.is_empty() {
            bail!(
                "{arch}: NVRTC returned no ptxas report (it served the cubin from its cache); run again with CUDA_CACHE_DISABLE=1"
            );
        }
        for name in cuda::KERNELS {
            if !cubin.kernels.iter().any(|k| k.name == name) {
                bail!(
                    "{arch}: kernel {name} is missing from the ptxas report:\n{}",
                    cubin.log
                );
            }
        }
        for k in &cubin.kernels {
            println!(
                "{:<6} {:<16} {:>9} {:>12} {:>11} {:>11} {:>10}",
                arch.to_string(),
                k.name,
                k.registers,
                k.spill_store_bytes,
                k.spill_load_bytes,
                k.stack_bytes,
                k.shared_bytes
            );
        }
        println!(
            "{arch}: {} kernels, cubin {} bytes, compiled in {compile_ms:.0} ms",
            cubin.kernels.len(),
            cubin.image.len()
        );
        let kernels: Vec<serde_json::Value> = cubin
            .kernels
            .iter()
            .map(|k| {
                serde_json::json!({
                    "name": k.name,
                    "registers": k.registers,
                    "spill_store_bytes": k.spill_store_bytes,
                    "spill_load_bytes": k.spill_load_bytes,
                    "stack_bytes": k.stack_bytes,
                    "shared_bytes": k.shared_bytes,
                })
            })
            .collect();
        reports.push(serde_json::json!({
            "arch": arch.to_string(),
            "cubin_bytes": cubin.image.len(),
            "compile_ms": compile_ms,
            "kernels": kernels,
        }));
    }
    crate::report::emit(
        &serde_json::json!({ "nvrtc": format!("{major}.{minor}"), "archs": reports }),
        args.json.as_deref(),
    )?;
    Ok(())
}
