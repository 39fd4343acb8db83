//! `moe bench-kernels`: matvec / matmul throughput of every weight format against the machine's
//! measured memory read bandwidth. Prints an aligned table, then one JSON object as the last line.
//!
//! Each case cycles through enough copies of its matrix to exceed `--working-set-mib`, so the
//! weights come from DRAM as they do when decoding a real model, not from the last-level cache.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use moe_kernels::bandwidth::measure_read_bandwidth;
use moe_kernels::{Format, Isa, Matrix, Pool};

/// Options of `moe bench-kernels`.
#[derive(clap::Args, Debug)]
pub struct KernelBenchArgs {
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Comma-separated weight formats to measure.
    #[arg(long, default_value = "f32,f16,bf16,fp8,q8,q4,mxfp4,q2")]
    formats: String,
    /// Model hidden size (columns of gate/up, rows of down).
    #[arg(long, default_value_t = 1024)]
    hidden: usize,
    /// Expert intermediate size (rows of gate/up, columns of down).
    #[arg(long, default_value_t = 3584)]
    intermediate: usize,
    /// Seconds spent timing each case.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Also write the JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Bytes of weights each case cycles through, in MiB (also the bandwidth buffer size).
    #[arg(long, default_value_t = 1024)]
    working_set_mib: usize,
    /// Kernel instruction set (scalar, avx2, avx512, avx512-vnni); default: the best available.
    #[arg(long)]
    isa: Option<String>,
}

/// One measured case.
struct Case {
    format: Format,
    shape: [usize; 2],
    n: usize,
    seconds_per_call: f64,
    bytes: usize,
}

impl Case {
    fn gbps(&self) -> f64 {
        self.bytes as f64 / self.seconds_per_call / 1e9
    }

    fn gflops(&self) -> f64 {
        2.0 * (self.shape[0] * self.shape[1] * self.n) as f64 / self.seconds_per_call / 1e9
    }
}

/// Deterministic weights in roughly the range of trained ones.
pub(crate) fn weights(rows: usize, cols: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..rows * cols)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

fn measure(pool: &Pool, copies: &[Matrix], n: usize, seconds: f64) -> anyhow::Result<f64> {
    let (rows, cols) = (copies[0].rows(), copies[0].cols());
    let xs: Vec<f32> = (0..n * cols)
        .map(|i| ((i % 17) as f32 - 8.0) * 0.1)
        .collect();
    let mut ys = vec![0.0f32; n * rows];
    for m in copies {
        pool.matmul(m, &xs, n, &mut ys)?;
    }
    let start = Instant::now();
    let mut calls = 0usize;
    while start.elapsed().as_secs_f64() < seconds || calls < copies.len() {
        pool.matmul(&copies[calls % copies.len()], &xs, n, &mut ys)?;
        calls += 1;
    }
    std::hint::black_box(&ys);
    Ok(start.elapsed().as_secs_f64() / calls as f64)
}

/// Runs the benchmark and prints the table and the JSON line.
pub fn run(args: &KernelBenchArgs) -> anyhow::Result<()> {
    let isa = match &args.isa {
        Some(name) => name.parse::<Isa>()?,
        None => Isa::detect(),
    };
    let pool = Pool::with_isa(args.threads, isa)?;
    let formats = args
        .formats
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(str::parse::<Format>)
        .collect::<Result<Vec<_>, _>>()
        .context("--formats")?;
    let working_set = args.working_set_mib.max(1) << 20;
    let bandwidth = measure_read_bandwidth(&pool, working_set);
    println!(
        "read bandwidth: {:.1} GB/s with {} threads; kernels: {}",
        bandwidth / 1e9,
        pool.threads(),
        pool.isa()
    );
    println!(
        "{:<6} {:>12} {:>3} {:>10} {:>8} {:>9} {:>8}",
        "format", "shape", "n", "us/call", "GB/s", "GFLOP/s", "of bw"
    );
    let shapes = [
        [args.intermediate, args.hidden],
        [args.hidden, args.intermediate],
    ];
    let mut cases = Vec::new();
    for &format in &formats {
        for shape in shapes {
            let [rows, cols] = shape;
            let base = Matrix::from_f32(rows, cols, &weights(rows, cols), format)?;
            let count = working_set.div_ceil(base.nbytes().max(1)).max(1);
            let copies = vec![base; count];
            for n in [1, 8] {
                let seconds_per_call = measure(&pool, &copies, n, args.seconds)?;
                let case = Case {
                    format,
                    shape,
                    n,
                    seconds_per_call,
                    bytes: copies[0].nbytes(),
                };
                println!(
                    "{:<6} {:>12} {:>3} {:>10.1} {:>8.2} {:>9.2} {:>7.0}%",
                    format.name(),
                    format!("{rows}x{cols}"),
                    n,
                    seconds_per_call * 1e6,
                    case.gbps(),
                    case.gflops(),
                    100.0 * case.gbps() * 1e9 / bandwidth
                );
                cases.push(case);
            }
        }
    }
    let results: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            serde_json::json!({
                "format": c.format.name(),
                "shape": c.shape,
                "n": c.n,
                "us_per_call": c.seconds_per_call * 1e6,
                "gbps": c.gbps(),
                "gflops": c.gflops(),
                "fraction_of_bandwidth": c.gbps() * 1e9 / bandwidth,
            })
        })
        .collect();
    let report = serde_json::json!({
        "bandwidth_gbps": bandwidth / 1e9,
        "threads": pool.threads(),
        "isa": pool.isa().name(),
        "results": results,
    });
    crate::report::emit(&report, args.json.as_deref())?;
    Ok(())
}
