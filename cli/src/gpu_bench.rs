//! `moe bench-gpu`: one MoE layer's expert batch on the GPU (`CudaExperts::run`: the index
//! arrays and activations uploaded, three launches per format, the result copied back and the
//! stream synchronised, as an expert node runs it) in every GPU weight format, against the
//! device's measured copy bandwidth and against the same batch on this machine's CPU kernels (the
//! single-process path). Prints a table, then one JSON object as the last line.
//!
//! A call sends `--experts` experts `p` tokens each, every token to every expert (`p` = 1 is a
//! decode step of one sequence with top-k = `--experts`). Calls take their experts from a rotating
//! window over enough copies to exceed the working set, so weights come from device (or host)
//! memory, not from a cache. The floor is the same call on 32 x 32 experts: what a call costs
//! whatever the weights (copies in and out, launches, synchronisation).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use moe_kernels::bandwidth::measure_read_bandwidth;
use moe_kernels::cuda::{CudaExperts, DeviceExpert, ExpertInput};
use moe_kernels::{ExpertPairs, Format, Matrix, Pool};
use moe_model::moe::Expert;

use crate::kernel_bench::weights;

/// Options of `moe bench-gpu`.
#[derive(clap::Args, Debug)]
pub struct GpuBenchArgs {
    /// GPU ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Comma-separated weight formats to measure.
    #[arg(long, default_value = "f16,fp8,q8,q4,mxfp4,q2")]
    formats: String,
    /// Model hidden size.
    #[arg(long, default_value_t = 2048)]
    hidden: usize,
    /// Expert intermediate size.
    #[arg(long, default_value_t = 1408)]
    intermediate: usize,
    /// Experts in one call.
    #[arg(long, default_value_t = 8)]
    experts: usize,
    /// Comma-separated tokens per expert of each case.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pairs: Vec<usize>,
    /// Seconds spent timing each case on each side.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Bytes of expert weights the GPU calls cycle through, in MiB.
    #[arg(long, default_value_t = 2048)]
    working_set_mib: usize,
    /// Bytes of expert weights the CPU calls cycle through, in MiB (also the bandwidth buffer).
    #[arg(long, default_value_t = 1024)]
    cpu_working_set_mib: usize,
    /// CPU worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where compiled kernels are cached (default: a temporary directory).
    #[arg(long)]
    kernel_cache: Option<PathBuf>,
    /// Also write the JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One measured case.
struct Case {
    format: Format,
    pairs: usize,
    weight_bytes: usize,
    gpu_seconds: f64,
    /// The same call on 32 x 32 experts: the per-call cost that does not scale with weights
    /// (copies in and out, launches, synchronisation).
    floor_seconds: f64,
    cpu_seconds: f64,
}

impl Case {
    /// The case as one element of the report's `results`, for `experts` experts per call.
    fn json(&self, experts: usize, copy_bandwidth: f64) -> serde_json::Value {
        serde_json::json!({
            "format": self.format.name(),
            "experts": experts,
            "tokens_per_expert": self.pairs,
            "weight_bytes": self.weight_bytes,
            "gpu_us": self.gpu_seconds * 1e6,
            "gpu_floor_us": self.floor_seconds * 1e6,
            "gpu_weight_gbps": self.gbps(),
            "gpu_fraction_of_copy_bandwidth": self.gbps() * 1e9 / copy_bandwidth,
            "above_floor_weight_gbps": self.kernel_gbps(),
            "above_floor_fraction_of_copy_bandwidth": self.kernel_gbps() * 1e9 / copy_bandwidth,
            "cpu_us": self.cpu_seconds * 1e6,
            "gpu_speedup_over_cpu": self.cpu_seconds / self.gpu_seconds,
        })
    }

    /// Weight bytes per second of the whole call.
    fn gbps(&self) -> f64 {
        self.weight_bytes as f64 / self.gpu_seconds / 1e9
    }

    /// Weight bytes per second of the part of the call above the floor.
    fn kernel_gbps(&self) -> f64 {
        self.weight_bytes as f64 / (self.gpu_seconds - self.floor_seconds).max(1e-9) / 1e9
    }
}

/// Mean seconds per call of `call(i)` over at least `min_calls` calls and `seconds` of time,
/// after one warm-up call.
fn time_calls(
    seconds: f64,
    min_calls: usize,
    mut call: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    call(0)?;
    let start = Instant::now();
    let mut calls = 0;
    while calls < min_calls || start.elapsed().as_secs_f64() < seconds {
        call(calls)?;
        calls += 1;
    }
    Ok(start.elapsed().as_secs_f64() / calls as f64)
}

/// Runs the benchmark and prints the table and the JSON line.
pub fn run(args: &GpuBenchArgs) -> anyhow::Result<()> {
    let formats = args
        .formats
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(str::parse::<Format>)
        .collect::<Result<Vec<_>, _>>()
        .context("--formats")?;
    let scratch = tempfile::tempdir()?;
    let cache = args
        .kernel_cache
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let gpu = CudaExperts::open(args.device, &cache)
        .with_context(|| format!("opening GPU {}", args.device))?;
    let copy_bandwidth = gpu.copy_bandwidth(1 << 30, 20)?;
    let pool = Pool::new(args.threads)?;
    let cpu_set = args.cpu_working_set_mib.max(1) << 20;
    let cpu_bandwidth = measure_read_bandwidth(&pool, cpu_set);
    println!(
        "GPU {}: {} ({}), copy bandwidth {:.0} GB/s (read + written); CPU: {} threads, read bandwidth {:.1} GB/s",
        args.device,
        gpu.name(),
        gpu.arch(),
        copy_bandwidth / 1e9,
        pool.threads(),
        cpu_bandwidth / 1e9
    );
    println!(
        "{:<6} {:>7} {:>6} {:>8} {:>8} {:>9} {:>6} {:>11} {:>6} {:>9} {:>8}",
        "format",
        "experts",
        "tokens",
        "gpu us",
        "floor us",
        "gpu GB/s",
        "of bw",
        "above floor",
        "of bw",
        "cpu us",
        "gpu/cpu"
    );
    let (hidden, inter, n) = (args.hidden, args.intermediate, args.experts.max(1));
    let mut cases = Vec::new();
    for &format in &formats {
        let gate_up = Matrix::from_f32(2 * inter, hidden, &weights(2 * inter, hidden), format)?;
        let down = Matrix::from_f32(hidden, inter, &weights(hidden, inter), format)?;
        let expert_bytes = gate_up.nbytes() + down.nbytes();
        let windows = |set: usize| (set.div_ceil(expert_bytes * n)).max(2);
        let device: Vec<DeviceExpert> = (0..windows(args.working_set_mib.max(1) << 20) * n)
            .map(|_| gpu.upload(&gate_up, &down))
            .collect::<Result<_, _>>()?;
        let tiny_gate_up = Matrix::from_f32(64, 32, &weights(64, 32), format)?;
        let tiny_down = Matrix::from_f32(32, 32, &weights(32, 32), format)?;
        let tiny: Vec<DeviceExpert> = (0..2 * n)
            .map(|_| gpu.upload(&tiny_gate_up, &tiny_down))
            .collect::<Result<_, _>>()?;
        let host: Vec<Expert> = (0..windows(cpu_set) * n)
            .map(|_| Expert::from_parts(gate_up.clone(), down.clone()))
            .collect::<Result<_, _>>()?;
        for &p in &args.pairs {
            let p = p.max(1);
            let x: Vec<f32> = (0..p * hidden)
                .map(|i| ((i % 17) as f32 - 8.0) * 0.1)
                .collect();
            let rows: Vec<u32> = (0..p as u32).collect();
            let gate = vec![1.0 / n as f32; p];
            let pairs = ExpertPairs {
                rows: &rows,
                weights: &gate,
            };
            let time_gpu = |experts: &[DeviceExpert], x: &[f32], hidden: usize| {
                time_calls(args.seconds, experts.len() / n, |call| {
                    let window = call % (experts.len() / n);
                    let inputs: Vec<ExpertInput> = experts[window * n..(window + 1) * n]
                        .iter()
                        .map(|expert| ExpertInput { expert, pairs })
                        .collect();
                    std::hint::black_box(gpu.run(x, hidden, &inputs)?);
                    Ok(())
                })
            };
            let gpu_seconds = time_gpu(&device, &x, hidden)?;
            let floor_seconds = time_gpu(&tiny, &x[..p * 32], 32)?;
            let cpu_seconds = time_calls(args.seconds, host.len() / n, |call| {
                let window = call % (host.len() / n);
                let mut out = vec![0.0f32; p * hidden];
                for expert in &host[window * n..(window + 1) * n] {
                    let y = expert.forward(&pool, &x, p)?;
                    out.iter_mut().zip(&y).for_each(|(o, v)| *o += v / n as f32);
                }
                std::hint::black_box(out);
                Ok(())
            })?;
            let case = Case {
                format,
                pairs: p,
                weight_bytes: expert_bytes * n,
                gpu_seconds,
                floor_seconds,
                cpu_seconds,
            };
            println!(
                "{:<6} {:>7} {:>6} {:>8.1} {:>8.1} {:>9.0} {:>5.0}% {:>11.0} {:>5.0}% {:>9.1} {:>7.1}x",
                format.name(),
                n,
                p,
                gpu_seconds * 1e6,
                floor_seconds * 1e6,
                case.gbps(),
                100.0 * case.gbps() * 1e9 / copy_bandwidth,
                case.kernel_gbps(),
                100.0 * case.kernel_gbps() * 1e9 / copy_bandwidth,
                cpu_seconds * 1e6,
                cpu_seconds / gpu_seconds
            );
            cases.push(case);
        }
    }
    let results: Vec<serde_json::Value> = cases.iter().map(|c| c.json(n, copy_bandwidth)).collect();
    let report = serde_json::json!({
        "gpu": gpu.name(),
        "arch": gpu.arch().to_string(),
        "copy_bandwidth_gbps": copy_bandwidth / 1e9,
        "cpu_threads": pool.threads(),
        "cpu_read_bandwidth_gbps": cpu_bandwidth / 1e9,
        "hidden": hidden,
        "intermediate": inter,
        "results": results,
    });
    crate::report::emit(&report, args.json.as_deref())?;
    Ok(())
}
