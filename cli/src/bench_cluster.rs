//! `moe bench-cluster`: the whole cluster on this machine against the single-process model, in
//! one run. Starts a local cluster (etcd, a coordinator, `--nodes` expert nodes, a gateway, as
//! `moe up` does), then measures greedy decoding of the same prompts:
//!
//! * single stream: decode tokens per second of the single-process model (in this process) and
//!   of the cluster (streamed over HTTP, after one warm-up request), and their ratio;
//! * at each `--concurrency`: aggregate generated tokens per second, time to first token and
//!   inter-token latency (p50 and p99), from the arrival times of the streamed chunks; the
//!   protobuf bytes sent to and received from the nodes per generated token, the share of the
//!   gateway's step time spent waiting for the experts, and how the nodes' round trips split into
//!   the nodes' compute, their queue and the rest (network and (de)serialisation), from the
//!   gateway's per-node series (all from its `/metrics`).
//!
//! Prints a table, then one JSON object as the last line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use moe_gateway::exposition::Exposition;
use moe_gateway::metric_names as names;
use moe_kernels::Pool;
use moe_launch::http::{CompletionStream, Request, blocking, completion};
use moe_launch::{ClusterSpec, LocalCluster, default_dir};
use moe_model::{GenerateParams, LoadOptions, Model, generate};
use moe_service::progress::{Progress, Unit};

use crate::status::waiting_on;

/// Options of `moe bench-cluster`.
#[derive(clap::Args, Debug)]
pub struct BenchClusterArgs {
    /// HuggingFace checkpoint directory.
    #[arg(long, env = "MOE_MODEL")]
    model: PathBuf,
    /// Expert nodes to start.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Comma-separated numbers of concurrent streams.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    concurrency: Vec<usize>,
    /// Prompt tokens per request.
    #[arg(long, default_value_t = 32)]
    prompt_tokens: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
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

/// One streamed completion: when each chunk with text arrived, from the request's start.
pub struct Streamed {
    pub chunk_times: Vec<Duration>,
    pub total: Duration,
}

/// One streamed greedy completion of `prompt` at `precision` (`exact` or `auto`) from the
/// gateway at `address`.
pub fn stream_completion(
    address: &str,
    model: &str,
    prompt: &[u32],
    max_tokens: usize,
    precision: &str,
) -> anyhow::Result<Streamed> {
    let body = serde_json::json!({
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "stream": true, "precision": precision,
    });
    stream_body(address, &body)
}

/// One streamed completion of `body` (a completions request with `stream` set) from the
/// gateway at `address`.
pub fn stream_body(address: &str, body: &serde_json::Value) -> anyhow::Result<Streamed> {
    let start = Instant::now();
    let (request, within) = (completion(body), Duration::from_secs(600));
    let streamed = blocking::exchange(address, &request, within, CompletionStream::default())
        .context("a streamed completion")?;
    Ok(Streamed {
        chunk_times: streamed.tokens.iter().map(|at| *at - start).collect(),
        total: start.elapsed(),
    })
}

/// Concurrent streamed completions against a gateway: stream `i` sends prompt `i + 1`.
pub struct Load<'a> {
    pub gateway: &'a str,
    pub model: &'a str,
    pub prompt_tokens: usize,
    pub max_tokens: usize,
    pub vocab: usize,
    pub precision: &'a str,
}

impl Load<'_> {
    /// Runs `streams` completions at once, each on its own thread, counting them on stderr as
    /// they finish; their results and the wall time, in seconds, until the last finished.
    pub fn run(&self, streams: usize) -> anyhow::Result<(Vec<Streamed>, f64)> {
        let start = Instant::now();
        let (done, finished) = std::sync::mpsc::channel();
        let handles: Vec<_> = (0..streams)
            .map(|i| {
                let (address, model) = (self.gateway.to_string(), self.model.to_string());
                let p = prompt(self.prompt_tokens, i + 1, self.vocab);
                let (max, precision) = (self.max_tokens, self.precision.to_string());
                let done = done.clone();
                std::thread::spawn(move || {
                    let result = stream_completion(&address, &model, &p, max, &precision);
                    let _ = done.send(());
                    result
                })
            })
            .collect();
        drop(done);
        let what = format!("{streams} streams");
        let mut progress = Progress::new(what, Unit::Items("requests"), streams as u64);
        for () in finished.iter() {
            progress.inc(1);
        }
        progress.finish();
        let mut results = Vec::new();
        for h in handles {
            results.push(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))??,
            );
        }
        Ok((results, start.elapsed().as_secs_f64()))
    }
}

/// Every gap between consecutive chunks of every completion, in seconds, sorted.
pub fn inter_token_latencies(results: &[Streamed]) -> Vec<f64> {
    let mut itl: Vec<f64> = results
        .iter()
        .flat_map(|r| {
            r.chunk_times
                .windows(2)
                .map(|w| (w[1] - w[0]).as_secs_f64())
        })
        .collect();
    itl.sort_by(f64::total_cmp);
    itl
}

/// The gateway's counters that say where a step's time and bytes go.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    bytes_sent: f64,
    bytes_received: f64,
    expert_seconds: f64,
    step_seconds: f64,
    /// Summed over nodes: round trips of layer requests, and what the nodes report of them
    /// spent waiting for their compute thread and computing.
    node_rtt_seconds: f64,
    node_queue_seconds: f64,
    node_compute_seconds: f64,
}

impl Counters {
    fn scrape(address: &str) -> anyhow::Result<Counters> {
        let text = scrape_metrics(address)?;
        let e = Exposition::new(&text);
        Ok(Counters {
            bytes_sent: e.value(names::EXPERT_BYTES_SENT_TOTAL),
            bytes_received: e.value(names::EXPERT_BYTES_RECEIVED_TOTAL),
            expert_seconds: e.value(names::EXPERT_SECONDS_TOTAL),
            step_seconds: e.value(names::STEP_SECONDS_TOTAL),
            node_rtt_seconds: e.sum(names::EXPERT_NODE_RTT_SECONDS_TOTAL),
            node_queue_seconds: e.sum(names::EXPERT_NODE_QUEUE_SECONDS_TOTAL),
            node_compute_seconds: e.sum(names::EXPERT_NODE_COMPUTE_SECONDS_TOTAL),
        })
    }

    fn since(self, before: Counters) -> Counters {
        Counters {
            bytes_sent: self.bytes_sent - before.bytes_sent,
            bytes_received: self.bytes_received - before.bytes_received,
            expert_seconds: self.expert_seconds - before.expert_seconds,
            step_seconds: self.step_seconds - before.step_seconds,
            node_rtt_seconds: self.node_rtt_seconds - before.node_rtt_seconds,
            node_queue_seconds: self.node_queue_seconds - before.node_queue_seconds,
            node_compute_seconds: self.node_compute_seconds - before.node_compute_seconds,
        }
    }

    /// The shares of the nodes' round trips spent computing, queued on the node, and in the
    /// rest (network and both ends' (de)serialisation).
    fn round_trip_split(&self) -> (f64, f64, f64) {
        if self.node_rtt_seconds <= 0.0 {
            return (0.0, 0.0, 0.0);
        }
        let compute = self.node_compute_seconds / self.node_rtt_seconds;
        let queue = self.node_queue_seconds / self.node_rtt_seconds;
        (compute, queue, (1.0 - compute - queue).max(0.0))
    }
}

/// The gateway's `/metrics` text.
pub fn scrape_metrics(address: &str) -> anyhow::Result<String> {
    let metrics = Request::get("/metrics");
    let response = blocking::call(address, &metrics, Duration::from_secs(5));
    Ok(response.context("scraping /metrics")?.body)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// The distribution of `sorted`: its 0%, 5%, ..., 100% quantiles, as (fraction, value) pairs.
pub fn quantiles(sorted: &[f64]) -> Vec<(f64, f64)> {
    (0..=20)
        .map(|i| {
            let p = f64::from(i) / 20.0;
            (p, percentile(sorted, p))
        })
        .collect()
}

/// A prompt of `n` token ids, different for each `seed`.
pub fn prompt(n: usize, seed: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((seed * 7919 + i * 104_729) % (vocab - 3) + 3) as u32)
        .collect()
}

pub fn run(args: &BenchClusterArgs) -> anyhow::Result<()> {
    let name = moe_model::config::served_name(&args.model);

    // The single-process model, at the nodes' high precision.
    let pool = Arc::new(Pool::new(args.threads)?);
    let options = LoadOptions::with_expert_format(Some(moe_kernels::Format::F16));
    let model = Model::load(&args.model, &options, pool).context("loading the model")?;
    let vocab = model.config().vocab_size;
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        ignore_eos: true,
        ..GenerateParams::default()
    };
    let single = generate(&model, None, &prompt(args.prompt_tokens, 0, vocab), &params)?;
    let single_tps = single.decode_tokens_per_second();
    drop(model);

    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| default_dir("moe-bench-cluster"));
    let threads = args.threads.to_string();
    let node_flags = ["--threads".to_string(), threads];
    let spec = ClusterSpec {
        node_flags: &node_flags,
        ..ClusterSpec::on_loopback(&args.model, args.nodes, "bench", &dir)
    };
    eprintln!(
        "starting a local cluster ({} nodes) in {}",
        args.nodes,
        dir.display()
    );
    let cluster = LocalCluster::start(&spec, Duration::from_secs(600), &waiting_on)?;
    // One short request first: connections to the nodes, first-touch page faults.
    stream_completion(
        &cluster.gateway,
        &name,
        &prompt(args.prompt_tokens, 0, vocab),
        2,
        "exact",
    )?;

    println!(
        "{:>7} {:>7} {:>9} {:>10} {:>10} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9} {:>7} {:>7}",
        "streams",
        "tokens",
        "tok/s",
        "ttft p50",
        "ttft p99",
        "itl p50",
        "itl p99",
        "KB/tok out",
        "KB/tok in",
        "experts %",
        "compute %",
        "queue %",
        "wire %"
    );
    let mut rows = Vec::new();
    let mut cluster_single = 0.0;
    for &c in &args.concurrency {
        let before = Counters::scrape(&cluster.gateway)?;
        let load = Load {
            gateway: &cluster.gateway,
            model: &name,
            prompt_tokens: args.prompt_tokens,
            max_tokens: args.max_tokens,
            vocab,
            precision: "exact",
        };
        let (results, wall) = load.run(c)?;
        let used = Counters::scrape(&cluster.gateway)?.since(before);
        let tokens: usize = results.iter().map(|r| r.chunk_times.len()).sum();
        let mut ttft: Vec<f64> = results
            .iter()
            .filter_map(|r| r.chunk_times.first())
            .map(|t| t.as_secs_f64())
            .collect();
        let itl = inter_token_latencies(&results);
        ttft.sort_by(f64::total_cmp);
        let tps = tokens as f64 / wall;
        if c == 1 {
            let r = &results[0];
            let decode = r.total - r.chunk_times.first().copied().unwrap_or_default();
            cluster_single = (r.chunk_times.len().saturating_sub(1)) as f64 / decode.as_secs_f64();
        }
        let per_token = |bytes: f64| bytes / tokens.max(1) as f64 / 1e3;
        let expert_share = if used.step_seconds > 0.0 {
            used.expert_seconds / used.step_seconds
        } else {
            0.0
        };
        let (compute, queue, wire) = used.round_trip_split();
        println!(
            "{c:>7} {tokens:>7} {tps:>9.1} {:>8.1}ms {:>8.1}ms {:>7.1}ms {:>7.1}ms {:>10.1} {:>10.1} {:>8.0}% {:>8.0}% {:>6.0}% {:>6.0}%",
            percentile(&ttft, 0.5) * 1e3,
            percentile(&ttft, 0.99) * 1e3,
            percentile(&itl, 0.5) * 1e3,
            percentile(&itl, 0.99) * 1e3,
            per_token(used.bytes_sent),
            per_token(used.bytes_received),
            expert_share * 100.0,
            compute * 100.0,
            queue * 100.0,
            wire * 100.0
        );
        rows.push(serde_json::json!({
            "streams": c, "tokens": tokens, "tokens_per_second": tps,
            "ttft_p50_s": percentile(&ttft, 0.5), "ttft_p99_s": percentile(&ttft, 0.99),
            "itl_p50_s": percentile(&itl, 0.5), "itl_p99_s": percentile(&itl, 0.99),
            "ttft_quantiles_s": quantiles(&ttft), "itl_quantiles_s": quantiles(&itl),
            "bytes_sent_per_token": per_token(used.bytes_sent) * 1e3,
            "bytes_received_per_token": per_token(used.bytes_received) * 1e3,
            "step_seconds": used.step_seconds, "expert_seconds": used.expert_seconds,
            "node_rtt_seconds": used.node_rtt_seconds, "node_queue_seconds": used.node_queue_seconds,
            "node_compute_seconds": used.node_compute_seconds,
            "round_trip_compute_share": compute, "round_trip_queue_share": queue,
            "round_trip_wire_share": wire,
        }));
    }
    drop(cluster);
    let ratio = if single_tps > 0.0 {
        cluster_single / single_tps
    } else {
        0.0
    };
    println!(
        "single stream decode: single-process {single_tps:.1} tok/s, cluster {cluster_single:.1} tok/s, ratio {ratio:.2}"
    );
    let report = serde_json::json!({
        "model": name, "nodes": args.nodes, "prompt_tokens": args.prompt_tokens,
        "max_tokens": args.max_tokens, "single_process_decode_tps": single_tps,
        "cluster_single_stream_decode_tps": cluster_single, "ratio": ratio, "concurrency": rows,
    });
    crate::report::emit(&report, args.json.as_deref())?;
    Ok(())
}
