//! `moe`: the command-line tool. Each subcommand lives in its own module; this file only parses
//! the command line, sets up logging and maps errors to an exit status.

mod bench_cluster;
mod bench_decode;
mod bench_latency;
mod bench_node;
mod bench_overload;
mod bench_precision;
mod bench_soak;
mod chart;
#[cfg(feature = "cuda")]
mod check_kernels;
mod eval_quality;
mod gen_model;
#[cfg(feature = "cuda")]
mod gpu_bench;
mod kernel_bench;
mod model_args;
mod plot;
mod report;
mod run_model;
mod status;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "moe",
    version,
    about = "Run, inspect and benchmark Mixture-of-Experts models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a continuation of a prompt with the single-process model.
    Generate(run_model::GenerateArgs),
    /// Print the last position's logits for a prompt as JSON.
    Logits(run_model::LogitsArgs),
    /// Write a seeded random checkpoint in the HuggingFace layout.
    GenModel(gen_model::GenModelArgs),
    /// Measure prompt-processing and decode speed against the machine's memory bandwidth.
    BenchDecode(bench_decode::BenchDecodeArgs),
    /// Measure mat-vec throughput per weight format against the machine's memory bandwidth.
    BenchKernels(kernel_bench::KernelBenchArgs),
    /// Measure expert-node throughput in process and over loopback gRPC.
    BenchNode(bench_node::BenchNodeArgs),
    /// Start a whole cluster on this machine: etcd, a coordinator, expert nodes and a gateway.
    Up(up::UpArgs),
    /// Measure a local cluster against the single-process model: decode speed, throughput,
    /// time to first token and inter-token latency at several concurrencies.
    BenchCluster(bench_cluster::BenchClusterArgs),
    /// Measure what each rung of the link-aware precision ladder costs in quality on held-out
    /// text: perplexity, KL divergence and top-1 agreement against the exact path.
    EvalQuality(eval_quality::EvalQualityArgs),
    /// The link-aware precision study: nodes behind tc-shaped links in their own network
    /// namespaces, throughput and latency per ladder setting, with each setting's quality.
    BenchPrecision(bench_precision::BenchPrecisionArgs),
    /// What a link's latency costs a single stream, and what DAOP's pre-calculation buys back:
    /// decode speed per added latency and setting, with each setting's quality.
    BenchLatency(bench_latency::BenchLatencyArgs),
    /// Offer a local cluster more than it can serve: the sustainable rate, then several times
    /// it, then half; what is served and refused, latencies, and each process's memory.
    BenchOverload(bench_overload::BenchOverloadArgs),
    /// A long run under steady mixed load with a fault every minute (a node killed or hung, the
    /// coordinator killed, etcd hung): requests served and lost, latency by minute, and each
    /// process's memory at the start and the end.
    BenchSoak(bench_soak::BenchSoakArgs),
    /// Draw the benchmarks' JSON results as SVG charts.
    Plot(plot::PlotArgs),
    /// Show a cluster: nodes, placement coverage, the leader, gateways' load.
    Status(status::StatusArgs),
    /// Compile the CUDA expert kernels for GPU architectures (no GPU needed) and report
    /// registers and spills per kernel.
    #[cfg(feature = "cuda")]
    CheckKernels(check_kernels::CheckKernelsArgs),
    /// Measure one layer's expert batch on the GPU per weight format against the device's
    /// memory bandwidth and the CPU kernels.
    #[cfg(feature = "cuda")]
    BenchGpu(gpu_bench::GpuBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::Generate(args) => run_model::generate(args),
        Command::Logits(args) => run_model::logits(args),
        Command::GenModel(args) => gen_model::run(args),
        Command::BenchDecode(args) => bench_decode::run(args),
        Command::BenchKernels(args) => kernel_bench::run(args),
        Command::BenchNode(args) => bench_node::run(args),
        Command::Up(args) => up::run(args),
        Command::BenchCluster(args) => bench_cluster::run(args),
        Command::Status(args) => status::run(args),
        Command::EvalQuality(args) => eval_quality::run(args),
        Command::BenchPrecision(args) => bench_precision::run(args),
        Command::BenchLatency(args) => bench_latency::run(args),
        Command::BenchOverload(args) => bench_overload::run(args),
        Command::BenchSoak(args) => bench_soak::run(args),
        Command::Plot(args) => plot::run(args),
        #[cfg(feature = "cuda")]
        Command::CheckKernels(args) => check_kernels::run(args),
        #[cfg(feature = "cuda")]
        Command::BenchGpu(args) => gpu_bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
