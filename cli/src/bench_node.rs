//! `moe bench-node`: expert-node throughput — token-expert pairs per second and GB/s of expert
//! weights read — per precision and batch size, run in this process on the node's own core and
//! over loopback gRPC against a real `expert-node` process, so the protocol's cost shows as a
//! ratio. Prints a table, then one JSON object as the last line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use moe_expert_node::selection::ExpertSelection;
use moe_expert_node::{LayerWork, Precision, PrecisionPair, store};
use moe_kernels::Pool;
use moe_model::ModelConfig;
use moe_model::config::config_path;
use moe_proto::expert::expert_service_client::ExpertServiceClient;
use moe_proto::expert::{
    ClientMessage, ExpertWork, LayerRequest, Precision as WirePrecision, client_message,
    server_message,
};
use moe_proto::tensor::{self, WireDtype};
use serde_json::json;
use tokio_stream::wrappers::ReceiverStream;

#[derive(clap::Args, Debug)]
pub struct BenchNodeArgs {
    /// HuggingFace checkpoint directory.
    #[arg(long)]
    model: PathBuf,
    /// The node's precision pair: f16+q4 or q8+q2.
    #[arg(long, default_value = "f16+q4")]
    precisions: moe_expert_node::config::Precisions,
    /// Comma-separated batch sizes (tokens per layer request).
    #[arg(long, default_value = "1,8,64")]
    batches: String,
    /// Seconds per case.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Kernel threads, in this process and in the node (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Also write the JSON result to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A layer's work for `n` tokens on `layer`: token `t` goes to `top_k` experts round-robin.
fn work(cfg: &ModelConfig, layer: u32, n: usize, precision: Precision) -> LayerWork {
    let (k, e) = (cfg.top_k, cfg.num_experts);
    let pairs = (0..n)
        .flat_map(|t| (0..k).map(move |j| (t as u32, ((t * k + j) % e) as u32, 1.0 / k as f32)));
    let tokens = (0..n * cfg.hidden_size)
        .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 500.0)
        .collect();
    LayerWork::from_pairs(layer, n, tokens, pairs, precision)
}

fn wire(
    work: &LayerWork,
    batch_id: u64,
    precision: WirePrecision,
    hidden: usize,
) -> anyhow::Result<LayerRequest> {
    Ok(LayerRequest {
        batch_id,
        epoch: 0,
        reply_dtype: 0,
        per_pair: false,
        traceparent: String::new(),
        ahead: None,
        layer: work.layer,
        tokens: Some(tensor::encode(
            &work.tokens,
            work.n_tokens,
            hidden,
            WireDtype::F32,
        )?),
        experts: work
            .experts
            .iter()
            .map(|x| ExpertWork {
                expert: x.expert,
                rows: x.rows.clone(),
                weights: x.weights.clone(),
                precisions: vec![precision as i32],
                unimportance: Vec::new(),
            })
            .collect(),
    })
}

/// Runs `step` repeatedly for about `seconds`; returns calls per second.
fn rate(seconds: f64, mut step: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    step()?;
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        step()?;
        calls += 1;
    }
    Ok(calls as f64 / start.elapsed().as_secs_f64())
}

/// A spawned `expert-node` from the same build directory, killed on drop.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_node(
    args: &BenchNodeArgs,
    shards: &std::path::Path,
    selection: &str,
    precisions: &str,
) -> anyhow::Result<(NodeProcess, String)> {
    let binary = std::env::current_exe()?.with_file_name("expert-node");
    anyhow::ensure!(
        binary.exists(),
        "{} not found: build it next to moe (cargo build --release -p moe-expert-node)",
        binary.display()
    );
    let mut child = Command::new(&binary)
        .args([
            "--model",
            &args.model.to_string_lossy(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--shard-dir",
            &shards.to_string_lossy(),
            "--experts",
            selection,
            "--precisions",
            precisions,
        ])
        .args(["--threads", &args.threads.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("node stdout")?).lines();
    let node = NodeProcess(child);
    let first = lines.next().context("the node exited before listening")??;
    let address = first
        .strip_prefix("listening on ")
        .context("unexpected node output")?
        .to_string();
    let serving = lines.next().context("the node exited while loading")??;
    anyhow::ensure!(
        serving.starts_with("serving"),
        "unexpected node output: {serving}"
    );
    Ok((node, address))
}

pub fn run(args: &BenchNodeArgs) -> anyhow::Result<()> {
    let batches: Vec<usize> = args
        .batches
        .split(',')
        .map(|b| {
            b.trim()
                .parse::<usize>()
                .context("--batches takes numbers like 1,8,64")
        })
        .collect::<Result<_, _>>()?;
    let cfg = ModelConfig::from_file(&config_path(&args.model))?;
    let layer = cfg
        .moe_layers()
        .next()
        .context("the model has no MoE layer")? as u32;
    let selection = format!("{layer}:0-{}", cfg.num_experts - 1);
    let pair: PrecisionPair = args.precisions.resolve(&args.model)?;
    let precisions_flag = format!("{}+{}", pair.high, pair.low);
    let shards = tempfile::tempdir()?;
    let (set, _) = store::load(
        &args.model,
        shards.path(),
        &selection
            .parse::<ExpertSelection>()
            .map_err(anyhow::Error::msg)?,
        pair,
    )?;
    let pool = Pool::new(args.threads)?;
    let (_node, address) = spawn_node(args, shards.path(), &selection, &precisions_flag)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut client = runtime.block_on(ExpertServiceClient::connect(format!("http://{address}")))?;
    let (send, outbound) = tokio::sync::mpsc::channel(4);
    let mut replies = runtime
        .block_on(client.process(ReceiverStream::new(outbound)))?
        .into_inner();

    println!(
        "{:<6} {:>6} {:>14} {:>10} {:>14} {:>10} {:>8}",
        "format", "batch", "local pairs/s", "local GB/s", "gRPC pairs/s", "gRPC GB/s", "ratio"
    );
    let mut results = Vec::new();
    let mut batch_id = 0u64;
    for (precision, wire_precision, format) in [
        (Precision::High, WirePrecision::High, pair.high),
        (Precision::Low, WirePrecision::Low, pair.low),
    ] {
        for &n in &batches {
            let w = work(&cfg, layer, n, precision);
            let pairs: usize = w.experts.iter().map(|x| x.rows.len()).sum();
            let bytes: usize = w
                .experts
                .iter()
                .filter_map(|x| set.get(layer, x.expert, format))
                .map(moe_model::moe::Expert::weight_bytes)
                .sum();
            let local = rate(args.seconds, || {
                set.execute(&w, pair, &pool)?;
                Ok(())
            })?;
            let remote = rate(args.seconds, || {
                batch_id += 1;
                let request = wire(&w, batch_id, wire_precision, cfg.hidden_size)?;
                runtime.block_on(async {
                    send.send(ClientMessage {
                        kind: Some(client_message::Kind::Layer(request)),
                    })
                    .await?;
                    let reply = tokio::time::timeout(Duration::from_secs(30), replies.message())
                        .await
                        .context("no reply within 30 s")??
                        .context("the node closed the stream")?;
                    match reply.kind {
                        Some(server_message::Kind::Reply(_)) => Ok(()),
                        other => anyhow::bail!("the node refused the batch: {other:?}"),
                    }
                })
            })?;
            let (local_pairs, remote_pairs) = (local * pairs as f64, remote * pairs as f64);
            let (local_gbps, remote_gbps) =
                (local * bytes as f64 / 1e9, remote * bytes as f64 / 1e9);
            println!(
                "{format:<6} {n:>6} {local_pairs:>14.0} {local_gbps:>10.2} {remote_pairs:>14.0} {remote_gbps:>10.2} {:>8.3}",
                remote / local
            );
            results.push(json!({
                "format": format.to_string(), "batch": n, "pairs": pairs, "weight_bytes": bytes,
                "local_pairs_per_second": local_pairs, "local_gbps": local_gbps,
                "grpc_pairs_per_second": remote_pairs, "grpc_gbps": remote_gbps,
                "grpc_over_local": remote / local,
            }));
        }
    }
    let value = json!({
        "model": args.model, "layer": layer, "threads": pool.threads(),
        "precisions": precisions_flag, "results": results,
    });
    println!("{value}");
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{value:#}\n"))?;
    }
    Ok(())
}
