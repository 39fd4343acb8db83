//! `moe bench-overload`: what the cluster does when offered more than it can serve. A local
//! cluster starts (as `moe up` does) with a small `--max-running` and `--max-waiting`; then:
//!
//! 1. **sustainable**: `--max-running` closed-loop clients for `--seconds`, giving the rate of
//!    requests the cluster completes;
//! 2. **overload**: requests sent open-loop at `--overload` times that rate for `--seconds`;
//! 3. **recovery**: half the sustainable rate for `--seconds`.
//!
//! Per phase: requests offered, answered 200, refused 503 (and how many of those carried
//! `Retry-After`), other answers, and the latency of the answers and of the refusals (p50/p99),
//! and every process's resident memory (VmRSS) at its start, peak and end.
//!
//! Prints a table, then one JSON object as the last line.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use moe_launch::http::{Request, blocking};
use moe_launch::{ClusterSpec, LocalCluster, default_dir};

use crate::bench_cluster::percentile;
use crate::status::waiting_on;

/// Options of `moe bench-overload`.
#[derive(clap::Args, Debug)]
pub struct BenchOverloadArgs {
    /// HuggingFace checkpoint directory.
    #[arg(long, env = "MOE_MODEL")]
    model: PathBuf,
    /// Expert nodes to start.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// The gateway's --max-running.
    #[arg(long, default_value_t = 8)]
    max_running: usize,
    /// The gateway's --max-waiting.
    #[arg(long, default_value_t = 16)]
    max_waiting: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 16)]
    max_tokens: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 15.0)]
    seconds: f64,
    /// The overload phase's rate, as a multiple of the sustainable one.
    #[arg(long, default_value_t = 4.0)]
    overload: f64,
    /// Where shards, etcd's data and the logs go.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One request's answer: its HTTP status (0 when there was none), whether it carried
/// `Retry-After`, how long it took, and its body.
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: bool,
    pub seconds: f64,
    pub body: String,
}

/// `POST /v1/completions` with `body` on a fresh connection, waiting up to 120 s for the answer.
pub(crate) fn complete(address: &str, body: &str) -> Answer {
    let started = Instant::now();
    let request = Request::post("/v1/completions", body);
    let response = blocking::call(address, &request, Duration::from_secs(120));
    let seconds = started.elapsed().as_secs_f64();
    match response {
        Ok(response) => Answer {
            status: response.status(),
            retry_after: response.header("retry-after").is_some(),
            seconds,
            body: response.body,
        },
        Err(_) => Answer {
            status: 0,
            retry_after: false,
            seconds,
            body: String::new(),
        },
    }
}

/// Resident memory of process `pid` in MB, from `/proc`.
pub(crate) fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One phase's answers and every process's memory through it.
struct Phase {
    name: &'static str,
    offered_per_second: f64,
    answers: Vec<Answer>,
    seconds: f64,
    /// Per process: RSS at the start, the peak and the end, in MB.
    rss: Vec<(String, [f64; 3])>,
}

/// Samples every process's RSS every 200 ms while `work` runs.
fn watching_memory(
    processes: &[(String, u32)],
    work: impl FnOnce() -> Vec<Answer>,
) -> (Vec<Answer>, Vec<(String, [f64; 3])>) {
    let start: Vec<f64> = processes.iter().map(|(_, pid)| rss_mb(*pid)).collect();
    let (stop, stopped) = mpsc::channel::<()>();
    let pids: Vec<u32> = processes.iter().map(|(_, pid)| *pid).collect();
    let sampler = std::thread::spawn(move || {
        let mut peak = vec![0.0f64; pids.len()];
        loop {
            for (p, pid) in peak.iter_mut().zip(&pids) {
                *p = p.max(rss_mb(*pid));
            }
            if stopped.recv_timeout(Duration::from_millis(200)).is_ok() {
                return peak;
            }
        }
    });
    let answers = work();
    let _ = stop.send(());
    let peak = sampler.join().unwrap_or_default();
    let rss = processes
        .iter()
        .enumerate()
        .map(|(i, (name, pid))| {
            let end = rss_mb(*pid);
            let top = peak.get(i).copied().unwrap_or(end).max(start[i]).max(end);
            (name.clone(), [start[i], top, end])
        })
        .collect();
    (answers, rss)
}

/// `clients` closed-loop clients for `seconds`.
fn closed_loop(address: &str, body: &str, clients: usize, seconds: f64) -> Vec<Answer> {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (address, body) = (address.to_string(), body.to_string());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                while Instant::now() < until {
                    answers.push(complete(&address, &body));
                }
                answers
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect()
}

/// Requests sent at `rate` per second for `seconds`, each on its own thread.
fn open_loop(address: &str, body: &str, rate: f64, seconds: f64) -> Vec<Answer> {
    let (send, answers) = mpsc::channel();
    let start = Instant::now();
    let count = (rate * seconds).round() as usize;
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let (address, body, send) = (address.to_string(), body.to_string(), send.clone());
        std::thread::spawn(move || {
            let _ = send.send(complete(&address, &body));
        });
    }
    drop(send);
    answers.iter().collect()
}

fn summary(p: &Phase) -> serde_json::Value {
    let by = |ok: &dyn Fn(&Answer) -> bool| -> Vec<f64> {
        let mut v: Vec<f64> = p
            .answers
            .iter()
            .filter(|a| ok(a))
            .map(|a| a.seconds)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let served = by(&|a| a.status == 200);
    let refused = by(&|a| a.status == 503);
    let with_retry = p
        .answers
        .iter()
        .filter(|a| a.status == 503 && a.retry_after)
        .count();
    let other = p.answers.len() - served.len() - refused.len();
    serde_json::json!({
        "phase": p.name,
        "offered_per_second": p.offered_per_second,
        "requests": p.answers.len(),
        "served": served.len(),
        "served_per_second": served.len() as f64 / p.seconds,
        "refused": refused.len(),
        "refused_with_retry_after": with_retry,
        "other": other,
        "served_p50_ms": percentile(&served, 0.5) * 1e3,
        "served_p99_ms": percentile(&served, 0.99) * 1e3,
        "refused_p50_ms": percentile(&refused, 0.5) * 1e3,
        "refused_p99_ms": percentile(&refused, 0.99) * 1e3,
        "rss_mb": p.rss.iter().map(|(n, r)| serde_json::json!({"process": n, "start": r[0], "peak": r[1], "end": r[2]})).collect::<Vec<_>>(),
    })
}

pub fn run(args: &BenchOverloadArgs) -> anyhow::Result<()> {
    let name = moe_model::config::served_name(&args.model);
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| default_dir("moe-bench-overload"));
    let gateway_flags = [
        "--max-running".to_string(),
        args.max_running.to_string(),
        "--max-waiting".to_string(),
        args.max_waiting.to_string(),
    ];
    let spec = ClusterSpec {
        gateway_flags: &gateway_flags,
        ..ClusterSpec::on_loopback(&args.model, args.nodes, "overload", &dir)
    };
    let cluster = LocalCluster::start(&spec, Duration::from_secs(600), &waiting_on);
    let cluster = cluster.context("starting")?;
    let processes = cluster.processes();
    let body = serde_json::json!({
        "model": name, "prompt": "def main():", "max_tokens": args.max_tokens, "temperature": 0,
    })
    .to_string();
    let address = cluster.gateway.clone();
    complete(&address, &body);

    let mut phases = Vec::new();
    let (answers, rss) = watching_memory(&processes, || {
        closed_loop(&address, &body, args.max_running, args.seconds)
    });
    let sustainable = answers.iter().filter(|a| a.status == 200).count() as f64 / args.seconds;
    anyhow::ensure!(
        sustainable > 0.0,
        "no request completed in the sustainable phase"
    );
    phases.push(Phase {
        name: "sustainable",
        offered_per_second: sustainable,
        answers,
        seconds: args.seconds,
        rss,
    });
    for (name, rate) in [
        ("overload", sustainable * args.overload),
        ("recovery", sustainable * 0.5),
    ] {
        eprintln!("{name}: {rate:.1} requests/s for {} s", args.seconds);
        let (answers, rss) = watching_memory(&processes, || {
            open_loop(&address, &body, rate, args.seconds)
        });
        phases.push(Phase {
            name,
            offered_per_second: rate,
            answers,
            seconds: args.seconds,
            rss,
        });
    }
    drop(cluster);

    println!(
        "gateway --max-running {} --max-waiting {}, {} nodes, {} tokens per request, {} s per phase",
        args.max_running, args.max_waiting, args.nodes, args.max_tokens, args.seconds
    );
    println!(
        "{:<12} {:>9} {:>8} {:>8} {:>8} {:>11} {:>6} {:>14} {:>14}",
        "phase",
        "offered/s",
        "requests",
        "served",
        "refused",
        "retry-after",
        "other",
        "served p50/p99",
        "refused p50/p99"
    );
    let rows: Vec<serde_json::Value> = phases.iter().map(summary).collect();
    for r in &rows {
        println!(
            "{:<12} {:>9.1} {:>8} {:>8} {:>8} {:>11} {:>6} {:>7.0}/{:<6.0} {:>7.1}/{:<6.1}",
            r["phase"].as_str().unwrap_or_default(),
            r["offered_per_second"].as_f64().unwrap_or_default(),
            r["requests"].as_u64().unwrap_or_default(),
            r["served"].as_u64().unwrap_or_default(),
            r["refused"].as_u64().unwrap_or_default(),
            r["refused_with_retry_after"].as_u64().unwrap_or_default(),
            r["other"].as_u64().unwrap_or_default(),
            r["served_p50_ms"].as_f64().unwrap_or_default(),
            r["served_p99_ms"].as_f64().unwrap_or_default(),
            r["refused_p50_ms"].as_f64().unwrap_or_default(),
            r["refused_p99_ms"].as_f64().unwrap_or_default(),
        );
    }
    println!("resident memory, MB (start / peak / end of each phase):");
    for (i, (process, _)) in processes.iter().enumerate() {
        let cells: Vec<String> = phases
            .iter()
            .map(|p| {
                let r = p.rss[i].1;
                format!("{:.0}/{:.0}/{:.0}", r[0], r[1], r[2])
            })
            .collect();
        println!("  {process:<12} {}", cells.join("   "));
    }
    let report = serde_json::json!({
        "model": args.model.display().to_string(),
        "nodes": args.nodes,
        "max_running": args.max_running,
        "max_waiting": args.max_waiting,
        "max_tokens": args.max_tokens,
        "seconds_per_phase": args.seconds,
        "sustainable_per_second": sustainable,
        "phases": rows,
    });
    crate::report::emit(&report, args.json.as_deref())
}
