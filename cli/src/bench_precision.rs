//! `moe bench-precision`: the link-aware precision study. Each expert node runs in its own
//! network namespace behind a veth link that `tc` limits to `--link-rate` each way (needs root
//! and iproute2). For each `--ladders` entry, a local cluster starts with the gateway's
//! `--precision-ladder` set to it, and `--streams` concurrent streams of `auto` completions run
//! to the end; then it reports aggregate tokens per second (and its ratio to `off`, the policy
//! turned off), inter-token latency p50/p99, the split of the pairs the gateway planned (high,
//! low, skipped) and the share of link time at each rung, from the gateway's metrics. Once per
//! run, with the links unshaped, `off` gives the throughput the links cost.
//!
//! With `--pre-calculate alternate` every gateway pre-calculates (DAOP) and the quality columns
//! are measured with it.
//!
//! Quality comes from `moe eval-quality`'s measurement of the ladder's top rung on the
//! checkpoint's held-out text (every layer call at that rung: the most it can cost, since a
//! link sits at a rung only while saturated): perplexity change, mean KL and top-1 agreement
//! against the exact path.
//!
//! Prints a table, then one JSON object as the last line.

use std::path::PathBuf;
use std::time::Duration;

use moe_expert_node::work::PrecisionPair;
use moe_gateway::exposition::Exposition;
use moe_gateway::metric_names as names;
use moe_gateway::policy::{PairPlan, Rung, Thresholds};
use moe_launch::{ClusterSpec, LocalCluster, default_dir};
use moe_service::netns::Namespace;

use crate::bench_cluster::{
    Load, inter_token_latencies, percentile, prompt, scrape_metrics, stream_completion,
};
use crate::eval_quality::{Setup, ThresholdArgs, measure};
use crate::status::waiting_on;
use moe_gateway::precalculation::PreCalculate;

/// Options of `moe bench-precision`.
#[derive(clap::Args, Debug)]
pub struct BenchPrecisionArgs {
    /// HuggingFace checkpoint directory (with `heldout.py` for the quality columns, or --text).
    #[arg(long, env = "MOE_MODEL")]
    model: PathBuf,
    /// Expert nodes, each in its own network namespace.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Each node link's rate each way, in tc's spelling.
    #[arg(long, default_value = "4mbit")]
    link_rate: String,
    /// The most a shaped link queues before it drops, in milliseconds.
    #[arg(long, default_value_t = 50)]
    link_latency_ms: u32,
    /// Comma-separated ladder tops to compare: off, int8-wire, low-weights, skip (with `off`
    /// first, the ratios are to it).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "off,int8-wire,low-weights,skip"
    )]
    ladders: Vec<Rung>,
    /// Concurrent streams.
    #[arg(long, default_value_t = 16)]
    streams: usize,
    /// The gateways' pre-calculation (`off` or `alternate`), for every setting and for the
    /// quality columns alike.
    #[arg(long, default_value = "off")]
    pre_calculate: PreCalculate,
    /// Prompt tokens per request.
    #[arg(long, default_value_t = 32)]
    prompt_tokens: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    // For the gateways and the quality measurement.
    #[command(flatten)]
    thresholds: ThresholdArgs,
    /// The held-out text for the quality columns (default: `heldout.py` in the checkpoint).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Held-out tokens the quality columns are measured on.
    #[arg(long, default_value_t = 8192)]
    quality_tokens: usize,
    /// Kernel threads of each process (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where shards, etcd's data and the logs go.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One setting's throughput and latency, and what the gateway planned.
struct Run {
    tokens: usize,
    seconds: f64,
    itl_p50: f64,
    itl_p99: f64,
    /// Pairs planned at each precision, summed over nodes.
    pairs: [f64; 3],
    /// Seconds at each rung, summed over nodes.
    rung_seconds: [f64; 4],
}

fn scrape(gateway: &str) -> anyhow::Result<([f64; 3], [f64; 4])> {
    let text = scrape_metrics(gateway)?;
    let e = Exposition::new(&text);
    let pairs =
        PairPlan::ALL.map(|p| e.sum_where(names::EXPERT_PAIRS_TOTAL, "precision", p.name()));
    let rungs =
        Rung::ALL.map(|r| e.sum_where(names::EXPERT_LINK_RUNG_SECONDS_TOTAL, "rung", r.name()));
    Ok((pairs, rungs))
}

/// Starts a cluster with the gateway at `ladder`, runs the streams once, stops the cluster.
fn run_setting(
    args: &BenchPrecisionArgs,
    nets: &[Namespace],
    ladder: Rung,
    thresholds: Thresholds,
    vocab: usize,
) -> anyhow::Result<Run> {
    let name = moe_model::config::served_name(&args.model);
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| default_dir("moe-bench-precision"));
    let threads = args.threads.to_string();
    let node_flags = ["--threads".to_string(), threads.clone()];
    let gateway_flags = [
        "--threads",
        &threads,
        "--precision-ladder",
        ladder.flag(),
        "--precision-t1",
        &thresholds.t1.to_string(),
        "--precision-t2",
        &thresholds.t2.to_string(),
        "--pre-calculate",
        args.pre_calculate.name(),
    ]
    .map(String::from);
    let spec = ClusterSpec {
        node_flags: &node_flags,
        gateway_flags: &gateway_flags,
        nets,
        ..ClusterSpec::on_loopback(&args.model, args.nodes, "precision", &dir)
    };
    let cluster = LocalCluster::start(&spec, Duration::from_secs(600), &waiting_on)?;
    stream_completion(
        &cluster.gateway,
        &name,
        &prompt(args.prompt_tokens, 0, vocab),
        2,
        "auto",
    )?;
    let (pairs_before, rungs_before) = scrape(&cluster.gateway)?;
    let load = Load {
        gateway: &cluster.gateway,
        model: &name,
        prompt_tokens: args.prompt_tokens,
        max_tokens: args.max_tokens,
        vocab,
        precision: "auto",
    };
    let (results, seconds) = load.run(args.streams)?;
    let (pairs, rungs) = scrape(&cluster.gateway)?;
    let itl = inter_token_latencies(&results);
    Ok(Run {
        tokens: results.iter().map(|r| r.chunk_times.len()).sum(),
        seconds,
        itl_p50: percentile(&itl, 0.5),
        itl_p99: percentile(&itl, 0.99),
        pairs: std::array::from_fn(|i| pairs[i] - pairs_before[i]),
        rung_seconds: std::array::from_fn(|i| rungs[i] - rungs_before[i]),
    })
}

pub fn run(args: &BenchPrecisionArgs) -> anyhow::Result<()> {
    let config = moe_model::ModelConfig::from_file(&args.model.join("config.json"))?;
    let thresholds = args.thresholds.resolve(&args.model)?;
    let nets = (0..args.nodes)
        .map(|i| Namespace::create("study", i as u8))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|why| anyhow::anyhow!("the study needs root and iproute2: {why}"))?;

    let text = args
        .text
        .clone()
        .unwrap_or_else(|| args.model.join("heldout.py"));
    let setup = Setup {
        model: &args.model,
        text: &text,
        window: 256,
        tokens: args.quality_tokens,
        thresholds,
        pair: "f16+q4"
            .parse::<PrecisionPair>()
            .map_err(anyhow::Error::msg)?,
        threads: args.threads,
        pre_calculate: args.pre_calculate,
    };
    eprintln!("quality of each ladder's top rung on {}", text.display());
    let quality = measure(&setup, &args.ladders)?;

    eprintln!("unshaped links, policy off");
    let unshaped = run_setting(args, &nets, Rung::Full, thresholds, config.vocab_size)?;
    for net in &nets {
        net.shape(&args.link_rate, args.link_latency_ms)
            .map_err(anyhow::Error::msg)?;
    }
    let mut runs = Vec::new();
    for &ladder in &args.ladders {
        eprintln!("links at {}, ladder {}", args.link_rate, ladder.flag());
        runs.push(run_setting(
            args,
            &nets,
            ladder,
            thresholds,
            config.vocab_size,
        )?);
    }

    println!(
        "{} nodes, links {} each way (tbf, {} ms queue), {} streams x {} tokens; T1 {} T2 {}",
        args.nodes,
        args.link_rate,
        args.link_latency_ms,
        args.streams,
        args.max_tokens,
        thresholds.t1,
        thresholds.t2
    );
    println!(
        "{:<12} {:>8} {:>7} {:>9} {:>9} {:>6} {:>6} {:>6} {:>24} {:>9} {:>9} {:>7}",
        "ladder",
        "tok/s",
        "x off",
        "itl p50",
        "itl p99",
        "high%",
        "low%",
        "skip%",
        "time at rung 0/1/2/3 %",
        "ppl +%",
        "mean KL",
        "top-1"
    );
    let tps = |r: &Run| r.tokens as f64 / r.seconds;
    println!(
        "{:<12} {:>8.1} {:>7} {:>7.1}ms {:>7.1}ms   (links unshaped)",
        "off",
        tps(&unshaped),
        "",
        unshaped.itl_p50 * 1e3,
        unshaped.itl_p99 * 1e3
    );
    let base = runs.first().map(tps).unwrap_or(1.0);
    let mut rows = Vec::new();
    for ((ladder, r), q) in args.ladders.iter().zip(&runs).zip(&quality.rungs) {
        let pairs = r.pairs.iter().sum::<f64>().max(1.0);
        let time = r.rung_seconds.iter().sum::<f64>().max(1e-9);
        let share: Vec<f64> = r.pairs.iter().map(|p| 100.0 * p / pairs).collect();
        let at: Vec<f64> = r.rung_seconds.iter().map(|t| 100.0 * t / time).collect();
        let at_text = at
            .iter()
            .map(|a| format!("{a:.0}"))
            .collect::<Vec<_>>()
            .join("/");
        println!(
            "{:<12} {:>8.1} {:>7.2} {:>7.1}ms {:>7.1}ms {:>6.1} {:>6.1} {:>6.1} {:>24} {:>+9.3} {:>9.2e} {:>7.4}",
            ladder.flag(),
            tps(r),
            tps(r) / base,
            r.itl_p50 * 1e3,
            r.itl_p99 * 1e3,
            share[0],
            share[1],
            share[2],
            at_text,
            q.change_percent,
            q.mean_kl,
            q.top1_agreement
        );
        rows.push(serde_json::json!({
            "ladder": ladder.flag(),
            "tokens_per_second": tps(r),
            "ratio_to_off": tps(r) / base,
            "itl_p50_ms": r.itl_p50 * 1e3,
            "itl_p99_ms": r.itl_p99 * 1e3,
            "pairs": {"high": r.pairs[0], "low": r.pairs[1], "skip": r.pairs[2]},
            "rung_time_percent": at,
            "quality": q.json(),
        }));
    }
    let result = serde_json::json!({
        "model": args.model.display().to_string(),
        "nodes": args.nodes,
        "link_rate": args.link_rate,
        "link_latency_ms": args.link_latency_ms,
        "streams": args.streams,
        "prompt_tokens": args.prompt_tokens,
        "max_tokens": args.max_tokens,
        "t1": thresholds.t1,
        "t2": thresholds.t2,
        "pre_calculate": args.pre_calculate.name(),
        "unshaped_off_tokens_per_second": tps(&unshaped),
        "quality_tokens": quality.tokens,
        "exact_perplexity": quality.exact_perplexity,
        "settings": rows,
    });
    crate::report::emit(&result, args.json.as_deref())
}
