//! `placement-sim`: plans expert placements for synthetic clusters and reports how the planner
//! does — plan time, load imbalance, copies per expert, copies moved when a node leaves and when
//! one joins (also in joining-node shares, `moved / (copies / N)`), capacity use. Prints an
//! aligned table, then one JSON object as the last line.
//!
//! Per node count it plans from scratch, then re-plans from that placement without one node (a
//! seeded choice), then from the result with a new node added. Popularity is Zipf-skewed within
//! each MoE layer, as every token passes every layer: a layer's experts get ranks in a seeded
//! random order and `tokens = 1e9 / rank^zipf`. Node capacities are an even share of all copies
//! at the replication floor times `--headroom`, optionally drawn around it (`--heterogeneity`).
//! Times are of `planner::plan` alone.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use moe_coordinator::planner::{ModelShape, NodeSpace, Plan, PlanRequest, Popularity, plan};
use moe_state::records::Placement;

/// Moves per join the planner aims to stay within, in shares of `copies / N`.
const JOIN_SHARES: f64 = 1.5;

/// Options of `placement-sim`.
#[derive(Parser, Debug)]
#[command(
    name = "placement-sim",
    about = "Simulates expert placement on synthetic clusters"
)]
struct Args {
    /// Comma-separated node counts to simulate (each at least 2).
    #[arg(long, default_value = "64,256,1024")]
    nodes: String,
    /// MoE layers of the model.
    #[arg(long, default_value_t = 64)]
    layers: u32,
    /// Experts per layer.
    #[arg(long, default_value_t = 256)]
    experts: u32,
    /// Copies of every expert (the floor; hot experts get more).
    #[arg(long, default_value_t = 2)]
    replication: u32,
    /// Zipf exponent of expert popularity within a layer.
    #[arg(long, default_value_t = 1.1)]
    zipf: f64,
    /// Seed of popularity ranks, capacities and the leaving node.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bytes of one expert copy (both precisions), MiB.
    #[arg(long, default_value_t = 48)]
    expert_mib: u64,
    /// Node capacity over an even share of all copies at the replication floor.
    #[arg(long, default_value_t = 1.25)]
    headroom: f64,
    /// Capacities drawn uniformly from [1 - h, 1 + h] times the even one (0: uniform).
    #[arg(long, default_value_t = 0.0)]
    heterogeneity: f64,
    /// Copies the leave and join re-plans may move to balance expected tokens.
    #[arg(long, default_value_t = 0)]
    balance_moves: usize,
    /// Also write the JSON object to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// xorshift64*, seeded from `--seed`.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One plan, timed.
struct Step {
    plan: Plan,
    ms: f64,
}

impl Step {
    fn run(request: &PlanRequest<'_>) -> anyhow::Result<Step> {
        let start = Instant::now();
        let plan = plan(request)?;
        Ok(Step {
            plan,
            ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }

    fn moved_fraction(&self) -> f64 {
        self.plan.report.moved as f64 / self.plan.report.copies.max(1) as f64
    }

    /// Copies moved in shares of `copies / nodes`, what one node of `nodes` holds on average.
    fn moved_shares(&self, nodes: usize) -> f64 {
        self.moved_fraction() * nodes as f64
    }

    fn json(&self, nodes: usize) -> serde_json::Value {
        let r = &self.plan.report;
        serde_json::json!({
            "plan_ms": self.ms,
            "copies": r.copies,
            "moved": r.moved,
            "removed": r.removed,
            "moved_fraction": self.moved_fraction(),
            "moved_shares": self.moved_shares(nodes),
            "imbalance": r.imbalance,
            "replicas_min": r.replicas_min,
            "replicas_mean": r.replicas_mean,
            "replicas_max": r.replicas_max,
        })
    }
}

/// Fresh plan, a node leaving and a node joining for one node count.
struct Run {
    nodes: usize,
    capacity_use: f64,
    fresh: Step,
    leave: Step,
    /// Copies the leaving node held.
    lost: usize,
    join: Step,
    /// Copies the joining node holds afterwards.
    joined: usize,
}

fn popularity(args: &Args, rng: &mut Rng) -> Popularity {
    let mut popularity = Popularity::default();
    let mut ranks: Vec<u32> = (1..=args.experts).collect();
    for layer in 0..args.layers {
        for i in (1..ranks.len()).rev() {
            ranks.swap(i, rng.below(i + 1));
        }
        for (expert, &rank) in ranks.iter().enumerate() {
            let tokens = (1e9 / f64::from(rank).powf(args.zipf)).round() as u64;
            popularity.add(layer, expert as u32, tokens);
        }
    }
    popularity
}

fn capacity_bytes(args: &Args, even_slots: f64, rng: &mut Rng) -> u64 {
    let h = args.heterogeneity;
    let factor = 1.0 - h + 2.0 * h * rng.unit();
    (even_slots * factor).ceil() as u64 * (args.expert_mib << 20)
}

fn step(
    args: &Args,
    shape: &ModelShape,
    popularity: &Popularity,
    nodes: &[NodeSpace],
    previous: Option<&Placement>,
) -> anyhow::Result<Step> {
    Step::run(&PlanRequest {
        nodes,
        shape,
        popularity,
        replication: args.replication,
        previous,
        epoch: previous.map_or(1, |p| p.epoch + 1),
        balance_moves: if previous.is_some() {
            args.balance_moves
        } else {
            0
        },
    })
}

fn simulate(args: &Args, count: usize) -> anyhow::Result<Run> {
    let mut rng = Rng::new(args.seed ^ count as u64);
    let shape = ModelShape {
        model: "placement-sim".into(),
        layers: args.layers,
        moe_layers: (0..args.layers).collect(),
        experts_per_layer: args.experts,
        expert_bytes: args.expert_mib << 20,
    };
    let popularity = popularity(args, &mut rng);
    let copies = f64::from(args.layers) * f64::from(args.experts) * f64::from(args.replication);
    let even_slots = copies / count as f64 * args.headroom;
    let mut nodes: Vec<NodeSpace> = (0..count)
        .map(|i| {
            NodeSpace::new(
                format!("node-{i:04}"),
                capacity_bytes(args, even_slots, &mut rng),
            )
        })
        .collect();
    let fresh = step(args, &shape, &popularity, &nodes, None).context("fresh plan")?;
    let capacity: u64 = nodes.iter().map(|n| n.capacity_bytes).sum();
    let used: u64 = fresh.plan.report.nodes.iter().map(|n| n.bytes).sum();
    let gone = nodes.remove(rng.below(count));
    let lost = fresh.plan.placement.experts_of(&gone.id).count();
    let leave = step(
        args,
        &shape,
        &popularity,
        &nodes,
        Some(&fresh.plan.placement),
    )
    .context("re-plan after a node left")?;
    nodes.push(NodeSpace::new(
        "node-new",
        capacity_bytes(args, even_slots, &mut rng),
    ));
    let join = step(
        args,
        &shape,
        &popularity,
        &nodes,
        Some(&leave.plan.placement),
    )
    .context("re-plan after a node joined")?;
    let joined = join.plan.placement.experts_of("node-new").count();
    Ok(Run {
        nodes: count,
        capacity_use: used as f64 / capacity.max(1) as f64,
        fresh,
        leave,
        lost,
        join,
        joined,
    })
}

/// The node counts, or why the options are unusable.
fn validate(args: &Args) -> Result<Vec<usize>, String> {
    let counts = args
        .nodes
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .map_err(|e| format!("--nodes {s:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if counts.is_empty() || counts.iter().any(|&n| n < 2) {
        return Err("--nodes needs node counts of at least 2".into());
    }
    if args.layers == 0 || args.experts == 0 || args.replication == 0 || args.expert_mib == 0 {
        return Err("--layers, --experts, --replication and --expert-mib must be positive".into());
    }
    let shaped = args.headroom.is_finite()
        && args.headroom > 0.0
        && (0.0..1.0).contains(&args.heterogeneity)
        && args.zipf.is_finite()
        && args.zipf >= 0.0;
    if !shaped {
        return Err("--headroom must be > 0, --heterogeneity in [0, 1), --zipf >= 0".into());
    }
    Ok(counts)
}

fn run(args: &Args, counts: &[usize]) -> anyhow::Result<()> {
    println!(
        "{} layers x {} experts, {} MiB each, replication {}, zipf {}, headroom {}, \
         heterogeneity {}, balance moves {}, seed {}",
        args.layers,
        args.experts,
        args.expert_mib,
        args.replication,
        args.zipf,
        args.headroom,
        args.heterogeneity,
        args.balance_moves,
        args.seed
    );
    print_header();
    let mut runs = Vec::new();
    for &count in counts {
        let run = simulate(args, count)?;
        print_row(&run);
        runs.push(run);
    }
    println!(
        "copies: min/mean/max per expert; moved: copies placed anew, of all copies and in \
         shares of copies/N (a join aims at <= {JOIN_SHARES})"
    );
    let results: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "nodes": r.nodes,
                "capacity_use": r.capacity_use,
                "fresh": r.fresh.json(r.nodes),
                "leave": r.leave.json(r.nodes - 1),
                "leaving_node_copies": r.lost,
                "join": r.join.json(r.nodes),
                "joining_node_copies": r.joined,
                "join_within_shares": r.join.moved_shares(r.nodes) <= JOIN_SHARES,
            })
        })
        .collect();
    let report = serde_json::json!({
        "layers": args.layers,
        "experts": args.experts,
        "expert_bytes": args.expert_mib << 20,
        "replication": args.replication,
        "zipf": args.zipf,
        "headroom": args.headroom,
        "heterogeneity": args.heterogeneity,
        "balance_moves": args.balance_moves,
        "seed": args.seed,
        "results": results,
    });
    let line = serde_json::to_string(&report)?;
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{line}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{line}");
    Ok(())
}

fn print_header() {
    println!(
        "{:>5} {:>7} {:>9} {:>11} {:>4} | {:>8} {:>6} {:>6} {:>5} {:>9} | \
         {:>7} {:>6} {:>6} {:>6} {:>6} {:>9}",
        "nodes",
        "plan ms",
        "imbalance",
        "copies",
        "use",
        "leave ms",
        "moved",
        "of all",
        "lost",
        "imbalance",
        "join ms",
        "moved",
        "of all",
        "shares",
        "joined",
        "imbalance"
    );
}

fn print_row(r: &Run) {
    let f = &r.fresh.plan.report;
    println!(
        "{:>5} {:>7.1} {:>9.3} {:>11} {:>3.0}% | {:>8.1} {:>6} {:>5.2}% {:>5} {:>9.3} | \
         {:>7.1} {:>6} {:>5.2}% {:>6.2} {:>6} {:>9.3}",
        r.nodes,
        r.fresh.ms,
        f.imbalance,
        format!(
            "{}/{:.2}/{}",
            f.replicas_min, f.replicas_mean, f.replicas_max
        ),
        100.0 * r.capacity_use,
        r.leave.ms,
        r.leave.plan.report.moved,
        100.0 * r.leave.moved_fraction(),
        r.lost,
        r.leave.plan.report.imbalance,
        r.join.ms,
        r.join.plan.report.moved,
        100.0 * r.join.moved_fraction(),
        r.join.moved_shares(r.nodes),
        r.joined,
        r.join.plan.report.imbalance
    );
}

fn main() -> ExitCode {
    let args = Args::parse();
    let counts = match validate(&args) {
        Ok(counts) => counts,
        Err(message) => {
            eprintln!("placement-sim: {message}");
            return ExitCode::from(64);
        }
    };
    match run(&args, &counts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("placement-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
