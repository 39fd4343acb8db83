//! `moe bench-decode`: prompt-processing and decode speed of the single-process model, next to the
//! machine's measured read bandwidth and the decode bound it implies (bandwidth / bytes of active
//! weights per token). Prints a table, then one JSON object as the last line.

use std::path::PathBuf;
use std::time::Instant;

use moe_kernels::bandwidth::measure_read_bandwidth;
use moe_model::rng::Rng;
use moe_model::{Logits, Model};
use serde_json::json;

use crate::model_args::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct BenchDecodeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt length for the prompt-processing measurement.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Decode steps to time (after one untimed warm-up step).
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Repetitions; the best run counts.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also write the JSON result to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

struct Run {
    prefill_tps: f64,
    decode_tps: f64,
}

fn run_once(model: &Model, prompt: &[u32], decode_tokens: usize) -> anyhow::Result<Run> {
    let mut cache = model.new_cache();
    let start = Instant::now();
    let mut logits = model.forward(prompt, &mut cache, Logits::Last)?;
    let prefill = start.elapsed().as_secs_f64();
    let mut next = moe_model::ops::argmax(&logits).unwrap_or(0) as u32;
    logits = model.forward(&[next], &mut cache, Logits::Last)?;
    let start = Instant::now();
    for _ in 0..decode_tokens {
        next = moe_model::ops::argmax(&logits).unwrap_or(0) as u32;
        logits = model.forward(&[next], &mut cache, Logits::Last)?;
    }
    let decode = start.elapsed().as_secs_f64();
    Ok(Run {
        prefill_tps: prompt.len() as f64 / prefill,
        decode_tps: decode_tokens as f64 / decode,
    })
}

pub fn run(args: &BenchDecodeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.prompt_tokens > 0 && args.decode_tokens > 0 && args.runs > 0,
        "counts must be positive"
    );
    let model = args.model.load()?;
    let cfg = model.config();
    anyhow::ensure!(
        args.prompt_tokens + args.decode_tokens < model.max_context(),
        "prompt + decode tokens exceed the model context of {}",
        model.max_context()
    );
    let mut rng = Rng::new(1);
    let prompt: Vec<u32> = (0..args.prompt_tokens)
        .map(|_| (rng.next_u64() % cfg.vocab_size as u64) as u32)
        .collect();
    let bandwidth = measure_read_bandwidth(model.pool(), 1 << 30);
    let mut best = Run {
        prefill_tps: 0.0,
        decode_tps: 0.0,
    };
    for _ in 0..args.runs {
        let r = run_once(&model, &prompt, args.decode_tokens)?;
        best.prefill_tps = best.prefill_tps.max(r.prefill_tps);
        best.decode_tps = best.decode_tps.max(r.decode_tps);
    }
    let bytes = model.active_weight_bytes() as f64;
    let bound = bandwidth / bytes;
    let name =
        |f: Option<moe_kernels::Format>| f.map_or_else(|| "stored".to_string(), |f| f.to_string());
    let precision = name(args.model.expert_precision);
    let dense = name(args.model.dense_precision);
    println!("{:<28} {:>14}", "model", args.model.model.display());
    println!("{:<28} {:>14}", "expert precision", precision);
    println!("{:<28} {:>14}", "dense precision", dense);
    println!("{:<28} {:>14}", "threads", model.pool().threads());
    println!("{:<28} {:>14.1}", "read bandwidth (GB/s)", bandwidth / 1e9);
    println!("{:<28} {:>14.1}", "active weights/token (MB)", bytes / 1e6);
    let (kv_bytes, kv_expanded) = cfg.kv_bytes_per_token();
    println!(
        "{:<28} {:>14.1}",
        "KV cache/token (KB)",
        kv_bytes as f64 / 1e3
    );
    println!(
        "{:<28} {:>14.1}",
        "KV expanded/token (KB)",
        kv_expanded as f64 / 1e3
    );
    let kv_window = cfg.kv_window_bytes();
    println!(
        "{:<28} {:>14.1}",
        "KV sliding layers/seq (KB)",
        kv_window as f64 / 1e3
    );
    println!(
        "{:<28} {:>14.1}",
        "prompt processing (tok/s)", best.prefill_tps
    );
    println!("{:<28} {:>14.1}", "decode (tok/s)", best.decode_tps);
    println!("{:<28} {:>14.1}", "decode bound (tok/s)", bound);
    println!("{:<28} {:>14.3}", "decode / bound", best.decode_tps / bound);
    let value = json!({
        "model": args.model.model,
        "arch": cfg.arch.to_string(),
        "expert_precision": precision,
        "dense_precision": dense,
        "threads": model.pool().threads(),
        "prompt_tokens": args.prompt_tokens,
        "decode_tokens": args.decode_tokens,
        "bandwidth_gbps": bandwidth / 1e9,
        "active_bytes_per_token": bytes,
        "kv_bytes_per_token": kv_bytes,
        "kv_bytes_per_token_expanded": kv_expanded,
        "kv_sliding_window_bytes_per_sequence": kv_window,
        "prefill_tokens_per_second": best.prefill_tps,
        "decode_tokens_per_second": best.decode_tps,
        "decode_bound_tokens_per_second": bound,
        "decode_fraction_of_bound": best.decode_tps / bound,
    });
    println!("{value}");
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{value:#}\n"))?;
    }
    Ok(())
}
