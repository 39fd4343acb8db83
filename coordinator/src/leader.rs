//! The leader's work: keep the placement in line with the nodes and the traffic. It re-plans when
//! the set of registered nodes (or their capacity, or the experts they could not load) changes, and every `replan_every` asks the
//! planner's hysteresis rule whether popularity moved enough to rebalance. Writes go through the
//! term's revision-checked transaction, so a deposed leader writes nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use moe_kernels::Format;
use moe_model::ModelConfig;
use moe_model::config::config_path;
use moe_model::moe::Expert;
use moe_model::precision::PrecisionPair;
use tokio::sync::watch;

use crate::election::{PlacementWrite, Role, Term};
use crate::planner::{
    self, Hysteresis, ModelShape, NodeSpace, PlanRequest, Popularity, ReplanAdvice,
};
use moe_state::etcd::{Etcd, EtcdError};
use moe_state::records::{Capacity, GatewayStats, LoadFailure, NodeRecord, Placement};
use moe_state::watch::Snapshot;

/// An upper bound on what a shard file adds to its expert's weights on a RAM disk: its header
/// and the rounding of the file up to whole 4 KiB pages.
const SHARD_FILE_OVERHEAD: u64 = 4096;

/// The model's shape as the planner needs it, from the checkpoint's `config.json`; an expert's
/// bytes are both of its shard files (`high` and `low` formats).
pub fn model_shape(
    model_dir: &Path,
    name: &str,
    high: Format,
    low: Format,
) -> Result<ModelShape, moe_model::ModelError> {
    let cfg = ModelConfig::from_file(&config_path(model_dir))?;
    let file = |format| {
        Expert::bytes_at(format, cfg.hidden_size, cfg.moe_intermediate_size) as u64
            + SHARD_FILE_OVERHEAD
    };
    Ok(ModelShape {
        model: name.to_string(),
        layers: cfg.num_layers as u32,
        moe_layers: cfg.moe_layers().map(|l| l as u32).collect(),
        experts_per_layer: cfg.num_experts as u32,
        expert_bytes: file(high) + if low == high { 0 } else { file(low) },
    })
}

/// How the leader plans.
#[derive(Debug, Clone)]
pub struct Settings {
    pub shape: ModelShape,
    /// The precision pair nodes must serve; nodes registered with another are left out of the
    /// placement.
    pub precisions: PrecisionPair,
    pub replication: u32,
    /// How often popularity is checked against the hysteresis rule.
    pub replan_every: Duration,
    pub hysteresis: Hysteresis,
    /// Copies a popularity-driven re-plan may move to rebalance.
    pub balance_moves: usize,
}

impl Settings {
    /// A plan request over `nodes` with these settings (rebalancing up to `balance_moves`).
    fn request<'a>(
        &'a self,
        nodes: &'a [NodeSpace],
        popularity: &'a Popularity,
        previous: Option<&'a Placement>,
        epoch: u64,
    ) -> PlanRequest<'a> {
        PlanRequest {
            nodes,
            shape: &self.shape,
            popularity,
            replication: self.replication,
            previous,
            epoch,
            balance_moves: self.balance_moves,
        }
    }
}

/// Why the leader stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum LeadError {
    #[error("leadership lost")]
    Deposed,
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// The inputs that decide a membership re-plan: who is registered, with what room, and what
/// each could not load.
fn membership(
    nodes: &Snapshot<NodeRecord>,
) -> BTreeMap<String, (String, Capacity, Vec<LoadFailure>)> {
    nodes
        .entries
        .values()
        .map(|r| {
            let member = (r.precisions.clone(), r.capacity, r.unloadable.clone());
            (r.id.to_string(), member)
        })
        .collect()
}

/// Leads for `term` until `role` says otherwise or etcd fails: plans at once, then on every
/// membership change and whenever popularity warrants it.
pub async fn lead(
    etcd: &Etcd,
    term: &Term,
    settings: &Settings,
    mut nodes: watch::Receiver<Snapshot<NodeRecord>>,
    stats: watch::Receiver<Snapshot<GatewayStats>>,
    mut role: watch::Receiver<Role>,
) -> Result<(), LeadError> {
    let mut members = membership(&nodes.borrow_and_update());
    let (snapshot, counts) = (nodes.borrow().clone(), stats.borrow().clone());
    replan(etcd, term, settings, &snapshot, &counts, 0).await?;
    let mut tick = tokio::time::interval(settings.replan_every);
    tick.tick().await;
    loop {
        tokio::select! {
            changed = nodes.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let now = membership(&nodes.borrow_and_update());
                if now != members {
                    members = now;
                    let (snapshot, counts) = (nodes.borrow().clone(), stats.borrow().clone());
                    replan(etcd, term, settings, &snapshot, &counts, 0).await?;
                }
            }
            _ = tick.tick() => {
                let (snapshot, counts) = (nodes.borrow().clone(), stats.borrow().clone());
                rebalance(etcd, term, settings, &snapshot, &counts).await?;
            }
            changed = role.changed() => {
                let leading = matches!(&*role.borrow(), Role::Leader(t) if t == term);
                if changed.is_err() || !leading {
                    return Err(LeadError::Deposed);
                }
            }
        }
    }
}

/// The nodes the placement may use: registered with the cluster's precision pair, as they
/// stand under `current` (see `NodeSpace::of`).
fn spaces(
    settings: &Settings,
    nodes: &Snapshot<NodeRecord>,
    current: Option<&Placement>,
) -> Vec<NodeSpace> {
    nodes
        .entries
        .values()
        .filter(|r| {
            let fits = r.precisions.parse::<PrecisionPair>() == Ok(settings.precisions);
            if !fits {
                tracing::warn!(
                    node = %r.id,
                    precisions = %r.precisions,
                    expected = %settings.precisions,
                    "node serves another precision pair; left out of the placement"
                );
            }
            fits
        })
        .map(|r| NodeSpace::of(r, current, settings.shape.expert_bytes))
        .collect()
}

/// Re-plans when popularity moved enough that the current placement is out of balance.
async fn rebalance(
    etcd: &Etcd,
    term: &Term,
    settings: &Settings,
    nodes: &Snapshot<NodeRecord>,
    stats: &Snapshot<GatewayStats>,
) -> Result<(), LeadError> {
    let base = term.read_placement(etcd).await?;
    let Some(current) = &base.placement else {
        return Ok(());
    };
    let spaces = spaces(settings, nodes, Some(current));
    let popularity = Popularity::from_stats(stats.entries.values());
    let request = settings.request(&spaces, &popularity, Some(current), base.epoch() + 1);
    match planner::replan_advice(current, &request, settings.hysteresis) {
        Ok(ReplanAdvice::Replan { current, fresh }) => {
            tracing::info!(current, fresh, "popularity moved: rebalancing");
            let balance = settings.balance_moves;
            replan(etcd, term, settings, nodes, stats, balance).await
        }
        Ok(ReplanAdvice::Keep { .. }) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot judge the placement's balance");
            Ok(())
        }
    }
}

/// Plans from the stored placement and writes the result when it differs; retries a few times
/// when another write raced this one.
async fn replan(
    etcd: &Etcd,
    term: &Term,
    settings: &Settings,
    nodes: &Snapshot<NodeRecord>,
    stats: &Snapshot<GatewayStats>,
    balance_moves: usize,
) -> Result<(), LeadError> {
    let popularity = Popularity::from_stats(stats.entries.values());
    for _ in 0..3 {
        let base = term.read_placement(etcd).await?;
        // A placement for another model is no base to keep copies from.
        let previous = base
            .placement
            .as_ref()
            .filter(|p| p.model == settings.shape.model);
        let spaces = spaces(settings, nodes, previous);
        if spaces.is_empty() {
            tracing::warn!("no expert node is registered: the placement stays as it is");
            return Ok(());
        }
        let request = PlanRequest {
            balance_moves,
            ..settings.request(&spaces, &popularity, previous, base.epoch() + 1)
        };
        let plan = match planner::plan(&request) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::error!(error = %e, nodes = spaces.len(), "cannot place the model: the placement stays as it is");
                return Ok(());
            }
        };
        if previous.is_some_and(|p| same_assignments(p, &plan.placement)) {
            return Ok(());
        }
        match term.write_placement(etcd, &base, &plan.placement).await? {
            PlacementWrite::Written { revision } => {
                let r = &plan.report;
                tracing::info!(
                    epoch = plan.placement.epoch,
                    revision,
                    nodes = spaces.len(),
                    copies = r.copies,
                    moved = r.moved,
                    removed = r.removed,
                    imbalance = r.imbalance,
                    "placement written"
                );
                return Ok(());
            }
            PlacementWrite::NotLeader => return Err(LeadError::Deposed),
            PlacementWrite::Conflict { .. } => continue,
        }
    }
    tracing::warn!(
        "the placement kept changing under this leader; trying again on the next change"
    );
    Ok(())
}

fn same_assignments(a: &Placement, b: &Placement) -> bool {
    a.layers == b.layers
        && a.experts_per_layer == b.experts_per_layer
        && a.assignments == b.assignments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_counts_both_shard_files_of_every_expert() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen2-moe");
        let shape = model_shape(&fixture, "qwen2", Format::F16, Format::Q4).unwrap();
        let cfg = ModelConfig::from_file(&config_path(&fixture)).unwrap();
        assert_eq!(shape.layers as usize, cfg.num_layers);
        assert_eq!(shape.moe_layers.len(), cfg.moe_layers().count());
        let (h, i) = (cfg.hidden_size, cfg.moe_intermediate_size);
        let f16 = Expert::bytes_at(Format::F16, h, i) as u64;
        let q4 = Expert::bytes_at(Format::Q4, h, i) as u64;
        assert_eq!(shape.expert_bytes, f16 + q4 + 2 * SHARD_FILE_OVERHEAD);
        let one = model_shape(&fixture, "qwen2", Format::Q8, Format::Q8).unwrap();
        assert_eq!(
            one.expert_bytes,
            Expert::bytes_at(Format::Q8, h, i) as u64 + SHARD_FILE_OVERHEAD
        );
    }
}
