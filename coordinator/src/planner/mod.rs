//! The placement planner: which expert nodes serve each (layer, expert) of a model's MoE layers.
//! Pure — no IO, no clock, no randomness — so the leader feeds it node records and gateway stats
//! and writes the [`Placement`] it returns; this module reads and writes nothing itself. The same
//! request gives the same placement whatever the order of its node list (nodes are sorted by id
//! first), and no hash-map order reaches the result.
//!
//! # Slots
//! A copy of an expert takes `expert_bytes` of a node's RAM disk (both precisions), so a node of
//! capacity `c` has `s = min(c / expert_bytes, X)` slots, `X` being the number of MoE experts;
//! `S` is the sum over the `N` nodes. A node never holds two copies of one expert.
//!
//! # Steps
//! 1. **Replica counts.** Every expert gets one copy; if `S < X` planning fails with
//!    [`PlanError::InsufficientCapacity`], which says how many experts and bytes are missing.
//!    Then, for `k = 2..=min(r, N)` (`r` the replication factor: the floor), a `k`-th copy goes
//!    to as many experts as the slots can take, hottest first (tokens routed, ties by layer then
//!    expert). Once every expert has its floor, redundant copies follow, the way EPLB adds
//!    redundant experts: one at a time to the expert whose copies carry the most tokens
//!    (`t_e / d_e`), while that is above the grain `g = W / (LOAD_GRAIN * n)` (`W` all tokens,
//!    `n` the nodes with a slot: a [`LOAD_GRAIN`]th of a node's mean load), and never more
//!    copies than nodes that can hold the expert. Hot experts so get copies in proportion to
//!    their tokens, `d_e = max(min(r, N), ceil(t_e / g))`, and when the slots run out the
//!    spare ones go to the hottest per copy first. In a re-plan an expert keeps its previous
//!    count while its copies carry between 3/4 and 5/4 of the grain, so one node joining or
//!    leaving a large cluster, or a small shift of popularity, changes no count. Where the
//!    slots run out before the grain is reached, a re-plan takes as the grain what a copy of
//!    the hottest expert left short carries in a fresh count, so a join's slots do not all go
//!    to new copies of hot experts (on the joining node, the only one with room). Counts are
//!    exact: counts `d_e` can be placed on distinct nodes iff for every `m`,
//!    `sum_e max(0, d_e - m)` is at most `S` minus the `m` largest slot counts (the min-cut of
//!    the expert-to-node flow), and no copy is counted that breaks it.
//! 2. **Keep** (with a previous placement of the same model). Its copies on nodes still present
//!    are kept in their order, up to each expert's new count; a node left with more copies than
//!    slots drops its copies of the most replicated, then coldest, experts.
//! 3. **Fill.** Missing copies are placed most expected tokens per copy (`tokens / d_e`) first,
//!    each on a node with a free slot and without that expert, choosing by (a) excess over the
//!    node's spread cap for the expert's layer, then (b) fewest expected tokens, then (c) smallest
//!    used fraction of its slots, then (d) id. Node `i`'s spread cap for a layer of `C` copies is
//!    `ceil(C * s_i / S)`: `ceil(C / N)` with uniform capacity. When every node with a free slot
//!    already holds the expert, a copy of another expert is relocated onto one of them to free a
//!    slot on a node without it.
//! 4. **Spread repair** (fresh plans only: in a re-plan it would move kept copies). The last
//!    copies can find free slots only on nodes at their cap; each (layer, node) over its cap sheds
//!    copies by a move, or a swap with another layer's copy, to a node under its cap, choosing the
//!    exchange that leaves the larger of the two nodes' expected tokens smallest.
//! 5. **Join top-up** (re-plans only). A node holding no copy of the previous placement is
//!    joining; it receives copies until it holds its fair share `ceil(T * s_j / S)` of the `T`
//!    copies, each from the most loaded node that keeps at least the floor of its own share and is
//!    left no emptier (in used fraction) than the joining node, picking the copy whose tokens are
//!    nearest an even step towards the mean load.
//! 6. **Token balancing** (at most [`PlanRequest::balance_moves`] copies; a swap counts two):
//!    repeatedly the node with the most expected tokens gives a copy, or swaps one for a copy of
//!    the same layer, to the lightest node that can take it within cap and slots, when that lowers
//!    the larger of their loads; the exchange moving nearest half their gap wins.
//!
//! # Unloadable experts
//! A node that failed to load some experts lists them in its record ([`NodeSpace::cannot_hold`]).
//! Its copies of them are not kept (step 2), and no step places or moves a copy of them onto it,
//! so they go to nodes that can hold them. Only an expert that no other node has a slot for is
//! placed on such a node all the same, as a placement must give every expert a node; the
//! gateway then reports it unservable with the node's cause. A node that reported no room has
//! the capacity of the copies it loaded ([`NodeSpace::of`]), so it is given no more.
//!
//! Preference: kept copies keep their order, new copies follow in the order placed, and a copy
//! moved to another node takes the place of the one it replaces.
//!
//! # Documented rules
//! * **Spread:** in a fresh plan with uniform capacity of at least `sum_l ceil(C_l / N)` slots
//!   per node (`C_l` = copies of layer `l` counted in step 1), no node holds more than
//!   `ceil(C_l / N)` copies of layer `l` — no slack, property-tested. Otherwise the caps are
//!   followed where the slots and the distinct-node rule allow.
//! * **Replication:** `min(r, N)` copies of every expert where the slots allow; otherwise the
//!   `k`-th copies go to the hottest experts first, level by level. Redundant copies only once
//!   every expert has its floor, within the slots. In a fresh plan a hotter expert never has
//!   fewer copies than a colder one, unless fewer nodes can hold it.
//! * **Movement:** a copy "moves" when its (layer, expert, node) is in the new placement and not
//!   in the previous one; previous copies absent from the new one are "removed". When a node
//!   leaves, exactly its copies move if every node with a free slot can take them; otherwise each
//!   may relocate one other copy (step 3), so at most twice the leaving node's copies move
//!   (fewer when the counts of step 1 drop with the lost slots or nodes). When nodes join, at
//!   most the sum of their fair shares `ceil(T * s_j / S)` move, plus new copies for experts
//!   whose counts of step 1 rise (with popularity unchanged, counts only fall when nodes leave
//!   and only rise when nodes join, and step 1's tolerance keeps most of them). Token balancing
//!   adds at most `balance_moves`. Without it, a re-plan with unchanged nodes and popularity
//!   moves nothing.
//! * **Hysteresis** ([`replan_advice`]): popularity warrants a re-plan when the current
//!   placement's imbalance under it exceeds [`Hysteresis::threshold`] *and* exceeds a fresh
//!   plan's imbalance times [`Hysteresis::margin`] (a re-plan must be able to gain something).
//!   The leader then plans from the current placement with a `balance_moves` budget, so the
//!   re-plan moves a bounded number of copies rather than reshuffling.
//!
//! Load imbalance is the largest expected tokens of a node over the mean over nodes, an expert's
//! tokens split evenly among the replicas; 1.0 is even (and is reported when no tokens are known).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use moe_state::records::{Assignment, GatewayStats, NodeRecord, Placement};

/// Copies per expert wanted when the slots allow: the replication floor.
pub const DEFAULT_REPLICATION: u32 = 2;

/// Redundant copies are added to an expert while one of its copies carries more than
/// `1 / LOAD_GRAIN` of a node's mean expected tokens (and the slots allow).
pub const LOAD_GRAIN: u32 = 16;

/// A node as the planner sees it: its id, the bytes of expert copies it may hold and the
/// experts it cannot hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpace {
    pub id: String,
    pub capacity_bytes: u64,
    /// (layer, expert) the node failed to load: no copy of them is kept or placed on it while
    /// another node can take it (see "Unloadable experts" in the module docs).
    pub cannot_hold: BTreeSet<(u32, u32)>,
}

impl NodeSpace {
    /// A node that can hold any expert, within `capacity_bytes`.
    pub fn new(id: impl Into<String>, capacity_bytes: u64) -> NodeSpace {
        NodeSpace {
            id: id.into(),
            capacity_bytes,
            cannot_hold: BTreeSet::new(),
        }
    }

    /// The node `record` describes, under `current`, the placement in force: it cannot hold
    /// the experts it reported unloadable, and when it reported no room its capacity is the
    /// copies of `current` it did load (`expert_bytes` each), so it is given no more.
    pub fn of(record: &NodeRecord, current: Option<&Placement>, expert_bytes: u64) -> NodeSpace {
        let cannot_hold: BTreeSet<(u32, u32)> = record
            .unloadable
            .iter()
            .flat_map(|f| f.experts.iter().copied())
            .collect();
        let mut capacity_bytes = record.capacity.ram_disk_bytes;
        if record.no_room() {
            let loaded = current.map_or(0, |p| {
                p.experts_of(&record.id)
                    .filter(|e| !cannot_hold.contains(e))
                    .count() as u64
            });
            capacity_bytes = capacity_bytes.min(loaded.saturating_mul(expert_bytes));
        }
        NodeSpace {
            id: record.id.to_string(),
            capacity_bytes,
            cannot_hold,
        }
    }
}

/// What the planner needs of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelShape {
    pub model: String,
    /// Decoder layers (MoE or dense).
    pub layers: u32,
    /// The MoE layers; the others are dense and placed nowhere.
    pub moe_layers: Vec<u32>,
    pub experts_per_layer: u32,
    /// Bytes one copy of an expert takes on a node's RAM disk, both precisions together.
    pub expert_bytes: u64,
}

/// Tokens routed to each (layer, expert); absent ones count as 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Popularity {
    tokens: BTreeMap<(u32, u32), u64>,
}

impl Popularity {
    /// Sums the counts of gateways' reports (which are expected to cover equal windows).
    pub fn from_stats<'a>(stats: impl IntoIterator<Item = &'a GatewayStats>) -> Popularity {
        let mut popularity = Popularity::default();
        for report in stats {
            for count in &report.counts {
                popularity.add(count.layer, count.expert, count.tokens);
            }
        }
        popularity
    }

    pub fn add(&mut self, layer: u32, expert: u32, tokens: u64) {
        let entry = self.tokens.entry((layer, expert)).or_default();
        *entry = entry.saturating_add(tokens);
    }

    pub fn tokens(&self, layer: u32, expert: u32) -> u64 {
        self.tokens.get(&(layer, expert)).copied().unwrap_or(0)
    }
}

/// Everything [`plan`] needs, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct PlanRequest<'a> {
    /// The nodes to place on, in any order.
    pub nodes: &'a [NodeSpace],
    pub shape: &'a ModelShape,
    pub popularity: &'a Popularity,
    /// Copies wanted per expert, at most one per node ([`DEFAULT_REPLICATION`] usually).
    pub replication: u32,
    /// The placement in force; its still-valid copies are kept.
    pub previous: Option<&'a Placement>,
    /// Epoch of the placement planned (the previous epoch + 1).
    pub epoch: u64,
    /// Copies the token-balancing step may move (0: no such step).
    pub balance_moves: usize,
}

/// A placement and what it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub placement: Placement,
    pub report: PlanReport,
}

/// Figures about a planned placement.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanReport {
    /// (layer, expert, node) copies in the placement.
    pub copies: usize,
    /// Copies not in the previous placement (all of them without one).
    pub moved: usize,
    /// Copies of the previous placement not in this one.
    pub removed: usize,
    pub replicas_min: usize,
    pub replicas_max: usize,
    pub replicas_mean: f64,
    /// Per node, sorted by id.
    pub nodes: Vec<NodeLoad>,
    /// Largest expected tokens of a node over the mean.
    pub imbalance: f64,
}

impl PlanReport {
    /// The figures of a placement holding `holders` (nodes per expert), with `(moved, removed)`
    /// copies against the previous one and `loads` per node.
    fn new(holders: &[Vec<usize>], (moved, removed): (usize, usize), loads: Vec<NodeLoad>) -> Self {
        let copies = holders.iter().map(Vec::len).sum();
        PlanReport {
            copies,
            moved,
            removed,
            replicas_min: holders.iter().map(Vec::len).min().unwrap_or(0),
            replicas_max: holders.iter().map(Vec::len).max().unwrap_or(0),
            replicas_mean: if holders.is_empty() {
                0.0
            } else {
                copies as f64 / holders.len() as f64
            },
            imbalance: imbalance(&loads),
            nodes: loads,
        }
    }
}

/// What one node holds under a placement.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLoad {
    pub id: String,
    pub copies: usize,
    pub bytes: u64,
    pub capacity_bytes: u64,
    /// Tokens of the experts it serves, each split evenly among the expert's replicas.
    pub expected_tokens: f64,
}

/// Why no placement could be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the nodes cannot hold one copy of every expert: {unassigned} of {experts} experts \
         unassigned, {missing_bytes} bytes missing"
    )]
    InsufficientCapacity {
        experts: usize,
        unassigned: usize,
        /// `unassigned * expert_bytes`: room for whole copies (a node's remainder below one
        /// expert holds none).
        missing_bytes: u64,
    },
    #[error("node {0} is listed twice")]
    DuplicateNode(String),
    #[error("model shape: {0}")]
    InvalidShape(String),
    #[error("the replication factor must be at least 1")]
    ZeroReplication,
}

/// When a change of popularity warrants a re-plan; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    /// Imbalance the current placement may have without a re-plan.
    pub threshold: f64,
    /// Factor by which the current imbalance must exceed a fresh plan's.
    pub margin: f64,
}

impl Default for Hysteresis {
    fn default() -> Hysteresis {
        Hysteresis {
            threshold: 1.25,
            margin: 1.1,
        }
    }
}

/// The verdict of [`replan_advice`], with the imbalances it compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplanAdvice {
    Keep { current: f64, fresh: f64 },
    Replan { current: f64, fresh: f64 },
}

/// Plans a placement; see the module documentation for the steps and rules.
pub fn plan(request: &PlanRequest<'_>) -> Result<Plan, PlanError> {
    let shape = request.shape;
    let layers = moe_layers(shape)?;
    if request.replication == 0 {
        return Err(PlanError::ZeroReplication);
    }
    let nodes = sorted_nodes(request.nodes)?;
    let per_layer = shape.experts_per_layer as usize;
    let experts = layers.len() * per_layer;
    let slots: Vec<usize> = nodes
        .iter()
        .map(|n| (n.capacity_bytes / shape.expert_bytes).min(experts as u64) as usize)
        .collect();
    let total_slots: usize = slots.iter().sum();
    if total_slots < experts {
        let unassigned = experts - total_slots;
        return Err(PlanError::InsufficientCapacity {
            experts,
            unassigned,
            missing_bytes: unassigned as u64 * shape.expert_bytes,
        });
    }
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let tokens = dense_tokens(&layers, per_layer, request.popularity);
    let mut rank: Vec<usize> = (0..experts).collect();
    rank.sort_by_key(|&e| (Reverse(tokens[e]), e));
    let previous = request.previous.filter(|p| p.model == shape.model);
    let had = previous.map(|p| previous_counts(p, &layers, per_layer));
    let replicas = replica_counts(
        Demand {
            rank: &rank,
            tokens: &tokens,
            reach: &reach(&nodes, &slots, &layers, per_layer),
            previous: had.as_deref(),
        },
        &slots,
        (request.replication as usize).min(nodes.len()),
    );
    let previous_nodes = previous.map(|p| previous_copies(p, &layers, per_layer, &index));

    let mut state = State::new(&slots, &layers, per_layer, &tokens, &replicas);
    state.ban(&nodes, &layers, per_layer);
    if let Some(previous_nodes) = &previous_nodes {
        state.keep(previous_nodes, &replicas);
        state.fill(&rank, &replicas);
        let mut had = vec![false; nodes.len()];
        for &i in previous_nodes.iter().flatten() {
            had[i] = true;
        }
        let joining: Vec<usize> = (0..nodes.len()).filter(|&i| !had[i]).collect();
        state.top_up(&joining);
    } else {
        state.fill(&rank, &replicas);
        state.repair_spread();
    }
    state.balance(request.balance_moves);

    let assignments = state
        .holders
        .iter()
        .enumerate()
        .map(|(e, holders)| Assignment {
            layer: layers[e / per_layer],
            expert: (e % per_layer) as u32,
            nodes: holders
                .iter()
                .map(|&i| nodes[i].id.as_str().into())
                .collect(),
        })
        .collect();
    let placement = Placement {
        epoch: request.epoch,
        model: shape.model.clone(),
        layers: shape.layers,
        experts_per_layer: shape.experts_per_layer,
        assignments,
    };
    let sorted: Vec<NodeSpace> = nodes.into_iter().cloned().collect();
    let loads = node_loads(&placement, &sorted, shape.expert_bytes, request.popularity);
    let copies = state.holders.iter().map(Vec::len).sum();
    let movement = movement(
        &state.holders,
        previous_nodes.as_deref(),
        request.previous,
        copies,
    );
    let report = PlanReport::new(&state.holders, movement, loads);
    Ok(Plan { placement, report })
}

/// What each of `nodes` holds under `placement`, in the order of `nodes`. Copies on nodes not
/// listed are ignored; an expert's tokens are split evenly among its listed replicas.
pub fn node_loads(
    placement: &Placement,
    nodes: &[NodeSpace],
    expert_bytes: u64,
    popularity: &Popularity,
) -> Vec<NodeLoad> {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut loads: Vec<NodeLoad> = nodes
        .iter()
        .map(|n| NodeLoad {
            id: n.id.clone(),
            copies: 0,
            bytes: 0,
            capacity_bytes: n.capacity_bytes,
            expected_tokens: 0.0,
        })
        .collect();
    let mut serving = Vec::new();
    for a in &placement.assignments {
        serving.clear();
        for id in &a.nodes {
            if let Some(&i) = index.get(id.as_str())
                && !serving.contains(&i)
            {
                serving.push(i);
            }
        }
        let share = popularity.tokens(a.layer, a.expert) as f64 / serving.len().max(1) as f64;
        for &i in &serving {
            loads[i].copies += 1;
            loads[i].bytes += expert_bytes;
            loads[i].expected_tokens += share;
        }
    }
    loads
}

/// Largest expected tokens over the mean; 1.0 when there are no nodes or no tokens.
pub fn imbalance(loads: &[NodeLoad]) -> f64 {
    let total: f64 = loads.iter().map(|l| l.expected_tokens).sum();
    if loads.is_empty() || total <= 0.0 {
        return 1.0;
    }
    let max = loads.iter().map(|l| l.expected_tokens).fold(0.0, f64::max);
    max / (total / loads.len() as f64)
}

/// Whether `current` should be re-planned for `request.popularity`: compares its imbalance
/// under that popularity, on `request.nodes`, with the imbalance of a fresh plan of `request`
/// (whose `previous` and `balance_moves` are ignored here).
pub fn replan_advice(
    current: &Placement,
    request: &PlanRequest<'_>,
    hysteresis: Hysteresis,
) -> Result<ReplanAdvice, PlanError> {
    let fresh = plan(&PlanRequest {
        previous: None,
        balance_moves: 0,
        ..*request
    })?
    .report
    .imbalance;
    let loads = node_loads(
        current,
        request.nodes,
        request.shape.expert_bytes,
        request.popularity,
    );
    let current = imbalance(&loads);
    Ok(
        if current > hysteresis.threshold && current > fresh * hysteresis.margin {
            ReplanAdvice::Replan { current, fresh }
        } else {
            ReplanAdvice::Keep { current, fresh }
        },
    )
}

/// The MoE layers sorted, checked against the shape.
fn moe_layers(shape: &ModelShape) -> Result<Vec<u32>, PlanError> {
    let mut layers = shape.moe_layers.clone();
    layers.sort_unstable();
    layers.dedup();
    if let Some(&last) = layers.last()
        && last >= shape.layers
    {
        return Err(PlanError::InvalidShape(format!(
            "MoE layer {last} is outside the model's {} layers",
            shape.layers
        )));
    }
    if shape.expert_bytes == 0 {
        return Err(PlanError::InvalidShape("expert_bytes is 0".into()));
    }
    if !layers.is_empty() && shape.experts_per_layer == 0 {
        return Err(PlanError::InvalidShape("experts_per_layer is 0".into()));
    }
    Ok(layers)
}

fn sorted_nodes(nodes: &[NodeSpace]) -> Result<Vec<&NodeSpace>, PlanError> {
    let mut sorted: Vec<&NodeSpace> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(pair) = sorted.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(PlanError::DuplicateNode(pair[0].id.clone()));
    }
    Ok(sorted)
}

/// Tokens per expert index (`layer position * experts_per_layer + expert`).
fn dense_tokens(layers: &[u32], per_layer: usize, popularity: &Popularity) -> Vec<u64> {
    let mut tokens = vec![0; layers.len() * per_layer];
    for (&(layer, expert), &count) in &popularity.tokens {
        if let Ok(position) = layers.binary_search(&layer)
            && (expert as usize) < per_layer
        {
            tokens[position * per_layer + expert as usize] = count;
        }
    }
    tokens
}

/// Per expert index, the nodes with a slot that can hold it.
fn reach(nodes: &[&NodeSpace], slots: &[usize], layers: &[u32], per_layer: usize) -> Vec<usize> {
    let roomy = slots.iter().filter(|&&s| s > 0).count();
    let mut reach = vec![roomy; layers.len() * per_layer];
    for (node, &s) in nodes.iter().zip(slots) {
        if s == 0 {
            continue;
        }
        for &(layer, expert) in &node.cannot_hold {
            if let Ok(position) = layers.binary_search(&layer)
                && (expert as usize) < per_layer
            {
                reach[position * per_layer + expert as usize] -= 1;
            }
        }
    }
    reach
}

/// Per expert index, the copies the previous placement gave it, on any node.
fn previous_counts(previous: &Placement, layers: &[u32], per_layer: usize) -> Vec<usize> {
    let mut counts = vec![0; layers.len() * per_layer];
    for a in &previous.assignments {
        if let Ok(position) = layers.binary_search(&a.layer)
            && (a.expert as usize) < per_layer
        {
            let mut ids: Vec<&str> = a.nodes.iter().map(|n| n.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            counts[position * per_layer + a.expert as usize] = ids.len();
        }
    }
    counts
}

/// Per expert index, the nodes (indices) of the previous placement still present, in order.
fn previous_copies(
    previous: &Placement,
    layers: &[u32],
    per_layer: usize,
    index: &HashMap<&str, usize>,
) -> Vec<Vec<usize>> {
    let mut copies = vec![Vec::new(); layers.len() * per_layer];
    for a in &previous.assignments {
        let Ok(position) = layers.binary_search(&a.layer) else {
            continue;
        };
        if a.expert as usize >= per_layer {
            continue;
        }
        let holders: &mut Vec<usize> = &mut copies[position * per_layer + a.expert as usize];
        for id in &a.nodes {
            if let Some(&i) = index.get(id.as_str())
                && !holders.contains(&i)
            {
                holders.push(i);
            }
        }
    }
    copies
}

/// (moved, removed) against the previous placement.
fn movement(
    holders: &[Vec<usize>],
    previous_nodes: Option<&[Vec<usize>]>,
    previous: Option<&Placement>,
    copies: usize,
) -> (usize, usize) {
    let previous_copies: usize = previous.map_or(0, |p| {
        p.assignments
            .iter()
            .map(|a| {
                let mut ids: Vec<&str> = a.nodes.iter().map(|n| n.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                ids.len()
            })
            .sum()
    });
    let kept: usize = previous_nodes.map_or(0, |before| {
        holders
            .iter()
            .zip(before)
            .map(|(now, before)| now.iter().filter(|i| before.contains(i)).count())
            .sum()
    });
    (copies - kept, previous_copies - kept)
}

mod replicas;
mod state;

use replicas::{Demand, replica_counts};
use state::State;
#[cfg(test)]
mod tests;
