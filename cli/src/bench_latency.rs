//! `moe bench-latency`: what a link's latency costs a single stream, and what DAOP's
//! pre-calculation buys back. For each `--latencies-ms` entry (added each way to every node's
//! link by a delaying proxy in front of the node) and each `--settings` entry (the gateway's
//! `--pre-calculate`), a local cluster starts and runs `--rounds` single-stream `auto`
//! completions one after another; the decode rate of each (tokens after the first, per second
//! after the first) is reported, with its median and its ratio to `off` at the same latency.
//! Settings alternate within a latency, so the machine's drift hits them alike.
//!
//! Quality, once per setting on a cluster without added latency: the checkpoint's held-out text
//! scored through the gateway (`echo` with `logprobs`, `moe eval-quality --gateway`), `auto`
//! against `exact` (which is never pre-calculated), so a setting's perplexity change is what it
//! costs; and in process (`moe eval-quality --pre-calculate`), the mean KL and top-1 agreement
//! of its next-token distributions against the exact path, with the share of the routers'
//! choices in pre-calculated layers that had been pre-calculated.
//!
//! Prints a table, then one JSON object as the last line.

use std::path::PathBuf;
use std::time::Duration;

use moe_expert_node::work::PrecisionPair;
use moe_gateway::exposition::Exposition;
use moe_gateway::metric_names as names;
use moe_gateway::policy::Rung;
use moe_gateway::precalculation::PreCalculate;
use moe_launch::{ClusterSpec, LocalCluster, default_dir};

use crate::bench_cluster::{Streamed, prompt, scrape_metrics, stream_body};
use crate::eval_quality::{RemoteQuality, Setup, measure, score_through};
use crate::status::waiting_on;

/// Options of `moe bench-latency`.
#[derive(clap::Args, Debug)]
pub struct BenchLatencyArgs {
    /// HuggingFace checkpoint directory (with `heldout.py` for the quality columns, or --text).
    #[arg(long, env = "MOE_MODEL")]
    model: PathBuf,
    /// Expert nodes.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Comma-separated latencies added to each node link, each way, in milliseconds.
    #[arg(long, value_delimiter = ',', default_value = "0,0.5,2,5")]
    latencies_ms: Vec<f64>,
    /// Comma-separated pre-calculation settings to compare (with `off` first, ratios are to it).
    #[arg(long, value_delimiter = ',', default_value = "off,alternate")]
    settings: Vec<PreCalculate>,
    /// Single-stream completions per (latency, setting).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Prompt tokens per request.
    #[arg(long, default_value_t = 32)]
    prompt_tokens: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// The held-out text for the quality columns (default: `heldout.py` in the checkpoint).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Held-out tokens the quality columns are measured on (0: no quality columns).
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

/// A setting at one latency: each round's decode rate, and what the gateway counted.
struct Run {
    latency_ms: f64,
    setting: PreCalculate,
    decode_tps: Vec<f64>,
    /// Layers answered from a pre-calculation, per generated token.
    saved_per_token: f64,
    /// Of the routers' choices in pre-calculated layers, the share pre-calculated.
    hit_rate: f64,
}

impl Run {
    fn median(&self) -> f64 {
        let mut sorted = self.decode_tps.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
    }
}

/// The decode rate of a streamed completion: tokens after the first per second after it.
fn decode_rate(streamed: &Streamed) -> f64 {
    let first = streamed.chunk_times.first().copied().unwrap_or_default();
    let after = (streamed.total - first).as_secs_f64();
    streamed.chunk_times.len().saturating_sub(1) as f64 / after.max(1e-9)
}

/// A local cluster whose gateway pre-calculates as `setting`, its node links delayed by
/// `latency_ms` each way.
fn start(
    args: &BenchLatencyArgs,
    setting: PreCalculate,
    latency_ms: f64,
) -> anyhow::Result<LocalCluster> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| default_dir("moe-bench-latency"));
    let threads = args.threads.to_string();
    let node_flags = ["--threads".to_string(), threads.clone()];
    // The links stay at full precision: the settings differ by the pre-calculation only.
    let gateway_flags = [
        "--threads",
        &threads,
        "--pre-calculate",
        setting.name(),
        "--precision-ladder",
        Rung::Full.flag(),
    ]
    .map(String::from);
    let delay = Duration::from_secs_f64(latency_ms / 1e3);
    let spec = ClusterSpec {
        node_flags: &node_flags,
        gateway_flags: &gateway_flags,
        link_delay: (latency_ms > 0.0).then_some(delay),
        ..ClusterSpec::on_loopback(&args.model, args.nodes, "latency", &dir)
    };
    Ok(LocalCluster::start(
        &spec,
        Duration::from_secs(600),
        &waiting_on,
    )?)
}

/// `rounds` single-stream completions through `cluster`, after a warm-up.
fn run_setting(
    args: &BenchLatencyArgs,
    (setting, latency_ms): (PreCalculate, f64),
    cluster: &LocalCluster,
    vocab: usize,
) -> anyhow::Result<Run> {
    let name = moe_model::config::served_name(&args.model);
    let body = |seed: usize, max_tokens: usize| {
        serde_json::json!({
            "model": name, "prompt": prompt(args.prompt_tokens, seed, vocab),
            "max_tokens": max_tokens, "temperature": 0, "stream": true, "ignore_eos": true,
        })
    };
    stream_body(&cluster.gateway, &body(0, 2))?;
    let counted = |text: &str| {
        let e = Exposition::new(text);
        let layers = e.value(names::PRECALCULATED_LAYERS_TOTAL);
        let hits = e.value(names::PRECALCULATED_HITS_TOTAL);
        (
            layers,
            hits,
            e.value(names::PRECALCULATED_ROUTED_PAIRS_TOTAL),
        )
    };
    let before = counted(&scrape_metrics(&cluster.gateway)?);
    let mut decode_tps = Vec::new();
    let mut tokens = 0;
    for round in 0..args.rounds {
        let streamed = stream_body(&cluster.gateway, &body(round + 1, args.max_tokens))?;
        tokens += streamed.chunk_times.len();
        decode_tps.push(decode_rate(&streamed));
    }
    let after = counted(&scrape_metrics(&cluster.gateway)?);
    let routed = after.2 - before.2;
    Ok(Run {
        latency_ms,
        setting,
        decode_tps,
        saved_per_token: (after.0 - before.0) / tokens.max(1) as f64,
        hit_rate: if routed > 0.0 {
            (after.1 - before.1) / routed
        } else {
            1.0
        },
    })
}

/// One setting's quality: through the gateway, and in process.
struct SettingQuality {
    setting: PreCalculate,
    remote: RemoteQuality,
    mean_kl: f64,
    top1_agreement: f64,
    hit_rate: f64,
}

/// The quality of `setting` (module docs).
fn quality(args: &BenchLatencyArgs, setting: PreCalculate) -> anyhow::Result<SettingQuality> {
    let text = args
        .text
        .clone()
        .unwrap_or_else(|| args.model.join("heldout.py"));
    let served = moe_model::config::served_name(&args.model);
    let remote = {
        let cluster = start(args, setting, 0.0)?;
        eprintln!(
            "{}: scoring {} through the gateway",
            setting.name(),
            text.display()
        );
        let window = (256, args.quality_tokens);
        score_through(&cluster.gateway, (&args.model, &served), &text, window)?
    };
    let setup = Setup {
        model: &args.model,
        text: &text,
        window: 256,
        tokens: args.quality_tokens,
        thresholds: moe_gateway::policy::Thresholds::default(),
        pair: "f16+q4"
            .parse::<PrecisionPair>()
            .map_err(anyhow::Error::msg)?,
        threads: args.threads,
        pre_calculate: setting,
    };
    eprintln!("{}: the same text in process", setting.name());
    let local = measure(&setup, &[Rung::Full])?;
    let full = local.rungs.first().expect("one rung measured");
    Ok(SettingQuality {
        setting,
        remote,
        mean_kl: full.mean_kl,
        top1_agreement: full.top1_agreement,
        hit_rate: full.precalculated.hit_rate(),
    })
}

fn print_runs(runs: &[Run]) {
    println!(
        "{:>10} {:>10} {:>11} {:>8} {:>12} {:>9}  rounds",
        "latency", "setting", "decode tok/s", "vs off", "saved/token", "hit rate"
    );
    for r in runs {
        let off = runs
            .iter()
            .find(|o| o.latency_ms == r.latency_ms && o.setting == PreCalculate::Off)
            .map_or(0.0, Run::median);
        let rounds: Vec<String> = r.decode_tps.iter().map(|v| format!("{v:.1}")).collect();
        println!(
            "{:>8}ms {:>10} {:>12.1} {:>7.2}x {:>12.2} {:>9.3}  {}",
            r.latency_ms,
            r.setting.name(),
            r.median(),
            r.median() / off.max(1e-9),
            r.saved_per_token,
            r.hit_rate,
            rounds.join(" ")
        );
    }
}

fn print_quality(qualities: &[SettingQuality]) {
    println!(
        "{:>10} {:>7} {:>12} {:>12} {:>9} {:>10} {:>8} {:>9}",
        "setting", "tokens", "exact ppl", "auto ppl", "change %", "mean KL", "top-1", "hit rate"
    );
    for q in qualities {
        println!(
            "{:>10} {:>7} {:>12.4} {:>12.4} {:>+9.3} {:>10.2e} {:>8.4} {:>9.3}",
            q.setting.name(),
            q.remote.tokens,
            q.remote.exact_perplexity,
            q.remote.auto_perplexity,
            q.remote.change_percent(),
            q.mean_kl,
            q.top1_agreement,
            q.hit_rate
        );
    }
}

pub fn run(args: &BenchLatencyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let config = moe_model::ModelConfig::from_file(&args.model.join("config.json"))?;
    let mut runs = Vec::new();
    for &latency_ms in &args.latencies_ms {
        anyhow::ensure!(
            (0.0..=1000.0).contains(&latency_ms),
            "--latencies-ms: {latency_ms} is outside 0 to 1000"
        );
        for &setting in &args.settings {
            eprintln!(
                "{latency_ms} ms each way, pre-calculation {}",
                setting.name()
            );
            let cluster = start(args, setting, latency_ms)?;
            let run = run_setting(args, (setting, latency_ms), &cluster, config.vocab_size)?;
            runs.push(run);
        }
    }
    let qualities = if args.quality_tokens > 0 {
        args.settings
            .iter()
            .map(|&s| quality(args, s))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    println!(
        "{}: {} nodes, single stream, {} prompt + {} generated tokens, `auto`",
        args.model.display(),
        args.nodes,
        args.prompt_tokens,
        args.max_tokens
    );
    print_runs(&runs);
    if !qualities.is_empty() {
        print_quality(&qualities);
    }
    let result = serde_json::json!({
        "benchmark": "bench-latency",
        "model": args.model.display().to_string(),
        "nodes": args.nodes,
        "prompt_tokens": args.prompt_tokens,
        "max_tokens": args.max_tokens,
        "runs": runs.iter().map(|r| serde_json::json!({
            "latency_ms": r.latency_ms,
            "setting": r.setting.name(),
            "decode_tps": r.decode_tps,
            "decode_tps_median": r.median(),
            "saved_round_trips_per_token": r.saved_per_token,
            "hit_rate": r.hit_rate,
        })).collect::<Vec<_>>(),
        "quality": qualities.iter().map(|q| serde_json::json!({
            "setting": q.setting.name(),
            "tokens": q.remote.tokens,
            "exact_perplexity": q.remote.exact_perplexity,
            "auto_perplexity": q.remote.auto_perplexity,
            "perplexity_change_percent": q.remote.change_percent(),
            "remote_top1_agreement": q.remote.top1_agreement,
            "mean_kl": q.mean_kl,
            "top1_agreement": q.top1_agreement,
            "hit_rate": q.hit_rate,
        })).collect::<Vec<_>>(),
    });
    crate::report::emit(&result, args.json.as_deref())
}
