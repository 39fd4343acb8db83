//! `moe bench-soak`: a long run under steady mixed load with a fault injected at a fixed period.
//! A local cluster starts (as `moe up` does); `--streams` closed-loop clients send completions
//! that vary in prompt, length and precision (`exact` and `auto` in turn) for `--minutes`; every
//! `--fault-every` seconds the next fault of a rotation strikes:
//!
//! 1. an expert node SIGKILLed, started again 10 s later;
//! 2. an expert node SIGSTOPped for 5 s (a hung node, past the expert-call deadline);
//! 3. the coordinator SIGKILLed, started again 5 s later;
//! 4. etcd SIGSTOPped for 8 s (past the nodes' lease TTL).
//!
//! A request is lost when it gets no answer, an error other than a 503 refusal, or (under
//! `exact`) a text other than the first one its body got. Per minute, by when requests were
//! sent: requests, served, refused, lost, latency p50/p99/max, and the faults that struck; then
//! every process's resident memory (VmRSS) at the start and the end (for a process started
//! again, its last life's). Prints a table, then one JSON object as the last line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use moe_launch::{ClusterSpec, LocalCluster, Signal, default_dir};

use crate::bench_cluster::percentile;
use crate::bench_overload::{complete, rss_mb};
use crate::status::waiting_on;

/// Options of `moe bench-soak`.
#[derive(clap::Args, Debug)]
pub struct BenchSoakArgs {
    /// HuggingFace checkpoint directory.
    #[arg(long, env = "MOE_MODEL")]
    model: PathBuf,
    /// Expert nodes to start (at least 2, so that every fault leaves a replica).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Closed-loop clients.
    #[arg(long, default_value_t = 16)]
    streams: usize,
    /// Length of the run.
    #[arg(long, default_value_t = 20.0)]
    minutes: f64,
    /// Seconds between faults.
    #[arg(long, default_value_t = 60)]
    fault_every: u64,
    /// The most tokens a request generates (requests ask for this or a quarter of it).
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Where shards, etcd's data and the logs go.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The prompts the clients take in turn.
const PROMPTS: [&str; 6] = [
    "def main():",
    "import os\nimport sys\n\n",
    "class Stack:\n    def __init__(self):",
    "for i in range(10):",
    "# Read the file and count the lines\n",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
];

/// One request of the run.
struct Request {
    /// Seconds from the start of the run to the request.
    at: f64,
    seconds: f64,
    outcome: Outcome,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Served,
    Refused,
    Lost,
}

/// The faults, in the order they strike.
#[derive(Clone, Copy)]
enum Fault {
    NodeKilled,
    NodeHung,
    CoordinatorKilled,
    EtcdHung,
}

impl Fault {
    const ROTATION: [Fault; 4] = [
        Fault::NodeKilled,
        Fault::NodeHung,
        Fault::CoordinatorKilled,
        Fault::EtcdHung,
    ];

    /// Strikes `node` (for the node faults) and heals; what it did, for the report.
    fn strike(self, cluster: &mut LocalCluster, node: &str) -> anyhow::Result<String> {
        let (what, name, pause) = match self {
            Fault::NodeKilled => ("SIGKILL, started again after 10 s", node, 10),
            Fault::NodeHung => ("SIGSTOP for 5 s", node, 5),
            Fault::CoordinatorKilled => ("SIGKILL, started again after 5 s", "coordinator", 5),
            Fault::EtcdHung => ("SIGSTOP for 8 s", "etcd", 8),
        };
        let hangs = matches!(self, Fault::NodeHung | Fault::EtcdHung);
        cluster.signal(name, if hangs { Signal::Stop } else { Signal::Kill })?;
        std::thread::sleep(Duration::from_secs(pause));
        if hangs {
            cluster.signal(name, Signal::Cont)?;
        } else {
            cluster.restart(name)?;
        }
        Ok(format!("{name}: {what}"))
    }
}

/// The request body for client `client`'s `i`-th request, and whether it is `exact`.
fn body(model: &str, client: usize, i: usize, max_tokens: usize) -> (String, bool) {
    let exact = i.is_multiple_of(2);
    let tokens = if (client + i).is_multiple_of(3) {
        max_tokens
    } else {
        (max_tokens / 4).max(1)
    };
    let prompt = PROMPTS[(client + i) % PROMPTS.len()];
    let precision = if exact { "exact" } else { "auto" };
    let body = serde_json::json!({"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "precision": precision});
    (body.to_string(), exact)
}

/// `streams` closed-loop clients until `until`; every exact text is held to the first one its
/// body got.
fn load(address: &str, model: &str, args: &BenchSoakArgs, start: Instant) -> Vec<Request> {
    let until = start + Duration::from_secs_f64(args.minutes * 60.0);
    let first: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let handles: Vec<_> = (0..args.streams)
        .map(|client| {
            let (address, model, first) = (address.to_string(), model.to_string(), first.clone());
            let max_tokens = args.max_tokens;
            std::thread::spawn(move || {
                let mut requests = Vec::new();
                let mut i = 0;
                while Instant::now() < until {
                    let (body, exact) = body(&model, client, i, max_tokens);
                    i += 1;
                    let at = start.elapsed().as_secs_f64();
                    let answer = complete(&address, &body);
                    let text = serde_json::from_str::<serde_json::Value>(&answer.body)
                        .ok()
                        .and_then(|v| v["choices"][0]["text"].as_str().map(str::to_string));
                    let outcome = match (answer.status, text) {
                        (200, Some(text)) if exact => {
                            let mut first = first.lock().unwrap_or_else(|p| p.into_inner());
                            let want = first.entry(body).or_insert_with(|| text.clone());
                            if *want == text {
                                Outcome::Served
                            } else {
                                Outcome::Lost
                            }
                        }
                        (200, Some(_)) => Outcome::Served,
                        (503, _) => Outcome::Refused,
                        _ => Outcome::Lost,
                    };
                    requests.push(Request {
                        at,
                        seconds: answer.seconds,
                        outcome,
                    });
                }
                requests
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect()
}

/// Strikes a fault every `args.fault_every` seconds until the run ends; when each struck, in
/// seconds from the start, and what it did.
fn faults(cluster: &mut LocalCluster, args: &BenchSoakArgs, start: Instant) -> Vec<(f64, String)> {
    let until = start + Duration::from_secs_f64(args.minutes * 60.0);
    let mut struck = Vec::new();
    for k in 1.. {
        let due = start + Duration::from_secs(k * args.fault_every);
        if due >= until {
            break;
        }
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let fault = Fault::ROTATION[(k as usize - 1) % Fault::ROTATION.len()];
        let node = format!("node-{}", (k as usize - 1) % args.nodes);
        let at = start.elapsed().as_secs_f64();
        let what = fault
            .strike(cluster, &node)
            .unwrap_or_else(|e| format!("{node}: failed to strike: {e:#}"));
        eprintln!("{at:.0} s: {what}");
        struck.push((at, what));
    }
    struck
}

fn rss(processes: &[(String, u32)]) -> Vec<(String, f64)> {
    processes
        .iter()
        .map(|(name, pid)| (name.clone(), rss_mb(*pid)))
        .collect()
}

pub fn run(args: &BenchSoakArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.nodes >= 2, "--nodes must be 2 or more");
    anyhow::ensure!(args.fault_every >= 20, "--fault-every must be 20 s or more");
    let model = moe_model::config::served_name(&args.model);
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| default_dir("moe-bench-soak"));
    let node_flags = ["--lease-ttl-seconds".to_string(), "5".to_string()];
    let gateway_flags = ["--expert-deadline-ms".to_string(), "2000".to_string()];
    let spec = ClusterSpec {
        node_flags: &node_flags,
        gateway_flags: &gateway_flags,
        ..ClusterSpec::on_loopback(&args.model, args.nodes, "soak", &dir)
    };
    let cluster = LocalCluster::start(&spec, Duration::from_secs(600), &waiting_on);
    let mut cluster = cluster.context("starting")?;
    let address = cluster.gateway.clone();
    let rss_start = rss(&cluster.processes());
    eprintln!(
        "{} clients for {} minutes, a fault every {} s",
        args.streams, args.minutes, args.fault_every
    );
    let start = Instant::now();
    let (requests, struck) = std::thread::scope(|scope| {
        let load = scope.spawn(|| load(&address, &model, args, start));
        let struck = faults(&mut cluster, args, start);
        (load.join().unwrap_or_default(), struck)
    });
    let rss_end = rss(&cluster.processes());
    drop(cluster);

    let minutes = args.minutes.ceil() as usize;
    let mut rows = Vec::new();
    println!(
        "{:>6} {:>8} {:>8} {:>8} {:>6} {:>9} {:>9} {:>9}  faults",
        "minute", "requests", "served", "refused", "lost", "p50 ms", "p99 ms", "max ms"
    );
    for minute in 0..minutes {
        let window = (minute as f64 * 60.0)..((minute + 1) as f64 * 60.0);
        let of: Vec<&Request> = requests.iter().filter(|r| window.contains(&r.at)).collect();
        let count = |o: Outcome| of.iter().filter(|r| r.outcome == o).count();
        let mut served: Vec<f64> = of
            .iter()
            .filter(|r| r.outcome == Outcome::Served)
            .map(|r| r.seconds)
            .collect();
        served.sort_by(f64::total_cmp);
        let faults: Vec<&str> = struck
            .iter()
            .filter(|(at, _)| window.contains(at))
            .map(|(_, what)| what.as_str())
            .collect();
        let row = serde_json::json!({
            "minute": minute,
            "requests": of.len(),
            "served": count(Outcome::Served),
            "refused": count(Outcome::Refused),
            "lost": count(Outcome::Lost),
            "p50_ms": percentile(&served, 0.5) * 1e3,
            "p99_ms": percentile(&served, 0.99) * 1e3,
            "max_ms": served.last().copied().unwrap_or_default() * 1e3,
            "faults": faults,
        });
        println!(
            "{:>6} {:>8} {:>8} {:>8} {:>6} {:>9.0} {:>9.0} {:>9.0}  {}",
            minute,
            of.len(),
            count(Outcome::Served),
            count(Outcome::Refused),
            count(Outcome::Lost),
            row["p50_ms"].as_f64().unwrap_or_default(),
            row["p99_ms"].as_f64().unwrap_or_default(),
            row["max_ms"].as_f64().unwrap_or_default(),
            faults.join("; ")
        );
        rows.push(row);
    }
    let total = |o: Outcome| requests.iter().filter(|r| r.outcome == o).count();
    println!(
        "served {}, refused {}, lost {} of {} requests; resident memory, MB (start / end):",
        total(Outcome::Served),
        total(Outcome::Refused),
        total(Outcome::Lost),
        requests.len()
    );
    for ((name, first), (_, last)) in rss_start.iter().zip(&rss_end) {
        println!("  {name:<12} {first:>7.0} {last:>7.0}");
    }
    let report = serde_json::json!({
        "model": args.model.display().to_string(),
        "nodes": args.nodes,
        "streams": args.streams,
        "minutes": args.minutes,
        "fault_every_s": args.fault_every,
        "max_tokens": args.max_tokens,
        "requests": requests.len(),
        "served": total(Outcome::Served),
        "refused": total(Outcome::Refused),
        "lost": total(Outcome::Lost),
        "by_minute": rows,
        "faults": struck.iter().map(|(at, what)| serde_json::json!({"at_s": at, "fault": what})).collect::<Vec<_>>(),
        "rss_mb": rss_start.iter().zip(&rss_end).map(|((n, a), (_, b))| serde_json::json!({"process": n, "start": a, "end": b})).collect::<Vec<_>>(),
    });
    crate::report::emit(&report, args.json.as_deref())
}
