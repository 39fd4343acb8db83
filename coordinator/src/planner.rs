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
//!    Then, for `k = 2..=min(r, N)` (`r` the replication factor), a `k`-th copy goes to as many
//!    experts as the slots can take, hottest first (tokens routed, ties by layer then expert). The
//!    count is exact: replica counts `d_e` can be placed on distinct nodes iff for every
//!    `m < min(r, N)`, `sum_e max(0, d_e - m)` is at most `S` minus the `m` largest slot counts
//!    (the min-cut of the expert-to-node flow).
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
//! Preference: kept copies keep their order, new copies follow in the order placed, and a copy
//! moved to another node takes the place of the one it replaces.
//!
//! # Documented rules
//! * **Spread:** in a fresh plan with uniform capacity of at least `sum_l ceil(C_l / N)` slots
//!   per node (`C_l` = copies of layer `l`, `E_l * min(r, N)` with room), no node holds more than
//!   `ceil(C_l / N)` copies of layer `l` — no slack, property-tested. Otherwise the caps are
//!   followed where the slots and the distinct-node rule allow.
//! * **Replication:** `min(r, N)` copies of every expert where the slots allow; otherwise the
//!   `k`-th copies go to the hottest experts first, level by level, so a hotter expert never has
//!   fewer copies than a colder one.
//! * **Movement:** a copy "moves" when its (layer, expert, node) is in the new placement and not
//!   in the previous one; previous copies absent from the new one are "removed". When a node
//!   leaves, exactly its copies move if every node with a free slot can take them; otherwise each
//!   may relocate one other copy (step 3), so at most twice the leaving node's copies move
//!   (fewer when the counts of step 1 drop with the lost slots). When nodes join, at most the sum
//!   of their fair shares `ceil(T * s_j / S)` move, plus new copies for experts whose counts of
//!   step 1 rise with the added slots. Token balancing adds at most `balance_moves`. Without it,
//!   a re-plan with unchanged nodes and popularity moves nothing.
//! * **Hysteresis** ([`replan_advice`]): popularity warrants a re-plan when the current
//!   placement's imbalance under it exceeds [`Hysteresis::threshold`] *and* exceeds a fresh
//!   plan's imbalance times [`Hysteresis::margin`] (a re-plan must be able to gain something).
//!   The leader then plans from the current placement with a `balance_moves` budget, so the
//!   re-plan moves a bounded number of copies rather than reshuffling.
//!
//! Load imbalance is the largest expected tokens of a node over the mean over nodes, an expert's
//! tokens split evenly among the replicas; 1.0 is even (and is reported when no tokens are known).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use crate::records::{Assignment, GatewayStats, NodeRecord, Placement};

/// Copies per expert wanted when the slots allow.
pub const DEFAULT_REPLICATION: u32 = 2;

/// A node as the planner sees it: its id and the bytes of expert copies it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpace {
    pub id: String,
    pub capacity_bytes: u64,
}

impl From<&NodeRecord> for NodeSpace {
    fn from(record: &NodeRecord) -> NodeSpace {
        NodeSpace {
            id: record.id.clone(),
            capacity_bytes: record.capacity.ram_disk_bytes,
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
    let replicas = replica_counts(
        &rank,
        &slots,
        (request.replication as usize).min(nodes.len()),
    );
    let previous = request.previous.filter(|p| p.model == shape.model);
    let previous_nodes = previous.map(|p| previous_copies(p, &layers, per_layer, &index));

    let mut state = State::new(&slots, &layers, per_layer, &tokens, &replicas);
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
            nodes: holders.iter().map(|&i| nodes[i].id.clone()).collect(),
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
    let (moved, removed) = movement(
        &state.holders,
        previous_nodes.as_deref(),
        request.previous,
        copies,
    );
    let report = PlanReport {
        copies,
        moved,
        removed,
        replicas_min: state.holders.iter().map(Vec::len).min().unwrap_or(0),
        replicas_max: state.holders.iter().map(Vec::len).max().unwrap_or(0),
        replicas_mean: if experts == 0 {
            0.0
        } else {
            copies as f64 / experts as f64
        },
        imbalance: imbalance(&loads),
        nodes: loads,
    };
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

/// Copies per expert (step 1): one each, then `k`-th copies hottest first while the min-cut
/// condition holds. `rank` lists experts hottest first; `target` is `min(r, N)`.
fn replica_counts(rank: &[usize], slots: &[usize], target: usize) -> Vec<usize> {
    let experts = rank.len();
    let mut largest = slots.to_vec();
    largest.sort_unstable_by(|a, b| b.cmp(a));
    let total: usize = slots.iter().sum();
    let mut room_without: Vec<usize> = Vec::with_capacity(target);
    let mut top = 0;
    for &s in largest.iter().take(target) {
        room_without.push(total - top);
        top += s;
    }
    let mut replicas = vec![1; experts];
    let mut above: Vec<usize> = (0..target)
        .map(|m| if m == 0 { experts } else { 0 })
        .collect();
    let mut count = experts;
    for k in 2..=target {
        let room = (0..k)
            .map(|m| room_without[m].saturating_sub(above[m]))
            .min()
            .unwrap_or(0);
        count = count.min(room);
        if count == 0 {
            break;
        }
        for &e in &rank[..count] {
            replicas[e] = k;
        }
        for slot in above.iter_mut().take(k) {
            *slot += count;
        }
    }
    replicas
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
                let mut ids: Vec<&str> = a.nodes.iter().map(String::as_str).collect();
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

/// The placement being built, with the counts the steps consult.
struct State {
    slots: Vec<usize>,
    total_slots: usize,
    per_layer: usize,
    /// Expected tokens of one copy of each expert at its planned replica count.
    tau: Vec<f64>,
    /// Spread cap per (layer position, node), layer-major.
    cap: Vec<usize>,
    /// Copies per (layer position, node), layer-major.
    count: Vec<usize>,
    /// Nodes holding each expert, preferred first.
    holders: Vec<Vec<usize>>,
    /// Experts each node holds.
    held: Vec<Vec<usize>>,
    used: Vec<usize>,
    load: Vec<f64>,
}

impl State {
    fn new(
        slots: &[usize],
        layers: &[u32],
        per_layer: usize,
        tokens: &[u64],
        replicas: &[usize],
    ) -> State {
        let nodes = slots.len();
        let total_slots: usize = slots.iter().sum();
        let layer_copies: Vec<usize> = replicas
            .chunks(per_layer.max(1))
            .map(|c| c.iter().sum())
            .collect();
        let cap = layer_copies
            .iter()
            .flat_map(|&c| {
                slots
                    .iter()
                    .map(move |&s| (c * s).div_ceil(total_slots.max(1)))
            })
            .collect();
        State {
            slots: slots.to_vec(),
            total_slots,
            per_layer,
            tau: tokens
                .iter()
                .zip(replicas)
                .map(|(&t, &d)| t as f64 / d as f64)
                .collect(),
            cap,
            count: vec![0; layers.len() * nodes],
            holders: vec![Vec::new(); tokens.len()],
            held: vec![Vec::new(); nodes],
            used: vec![0; nodes],
            load: vec![0.0; nodes],
        }
    }

    fn nodes(&self) -> usize {
        self.slots.len()
    }

    fn cell(&self, expert: usize, node: usize) -> usize {
        expert / self.per_layer * self.nodes() + node
    }

    fn holds(&self, expert: usize, node: usize) -> bool {
        self.holders[expert].contains(&node)
    }

    fn free(&self, node: usize) -> bool {
        self.used[node] < self.slots[node]
    }

    /// Whether `node` can take `expert` within its spread cap.
    fn under_cap(&self, expert: usize, node: usize) -> bool {
        let cell = self.cell(expert, node);
        self.count[cell] < self.cap[cell]
    }

    fn add(&mut self, expert: usize, node: usize) {
        let cell = self.cell(expert, node);
        self.holders[expert].push(node);
        self.held[node].push(expert);
        self.used[node] += 1;
        self.count[cell] += 1;
        self.load[node] += self.tau[expert];
    }

    fn remove(&mut self, expert: usize, node: usize) {
        let cell = self.cell(expert, node);
        self.holders[expert].retain(|&n| n != node);
        self.forget(expert, node, cell);
    }

    /// Moves `expert`'s copy from `from` to `to`, keeping its place in the preference order.
    fn relocate(&mut self, expert: usize, from: usize, to: usize) {
        if let Some(slot) = self.holders[expert].iter_mut().find(|n| **n == from) {
            *slot = to;
        }
        self.forget(expert, from, self.cell(expert, from));
        let cell = self.cell(expert, to);
        self.held[to].push(expert);
        self.used[to] += 1;
        self.count[cell] += 1;
        self.load[to] += self.tau[expert];
    }

    fn forget(&mut self, expert: usize, node: usize, cell: usize) {
        if let Some(at) = self.held[node].iter().position(|&e| e == expert) {
            self.held[node].swap_remove(at);
        }
        self.used[node] -= 1;
        self.count[cell] -= 1;
        self.load[node] -= self.tau[expert];
    }

    /// Step 2: previous copies on present nodes, up to the new counts and the nodes' slots.
    fn keep(&mut self, previous: &[Vec<usize>], replicas: &[usize]) {
        for (expert, nodes) in previous.iter().enumerate() {
            for &node in nodes.iter().take(replicas[expert]) {
                self.add(expert, node);
            }
        }
        for node in 0..self.nodes() {
            while self.used[node] > self.slots[node] {
                let Some(victim) = self.held[node].iter().copied().max_by(|&a, &b| {
                    self.holders[a]
                        .len()
                        .cmp(&self.holders[b].len())
                        .then(self.tau[b].total_cmp(&self.tau[a]))
                        .then(a.cmp(&b))
                }) else {
                    break;
                };
                self.remove(victim, node);
            }
        }
    }

    /// Step 3: the missing copies, most tokens per copy first.
    fn fill(&mut self, rank: &[usize], replicas: &[usize]) {
        let mut missing: Vec<usize> = rank
            .iter()
            .flat_map(|&e| {
                std::iter::repeat_n(e, replicas[e].saturating_sub(self.holders[e].len()))
            })
            .collect();
        missing.sort_by(|&a, &b| self.tau[b].total_cmp(&self.tau[a]));
        for expert in missing {
            let node = match self.best_node(expert) {
                Some(node) => node,
                None => match self.make_room(expert) {
                    Some(node) => node,
                    None => continue,
                },
            };
            self.add(expert, node);
        }
    }

    /// The node a copy of `expert` goes to: one with a free slot and without the expert, first
    /// by its excess over the layer's spread cap, then expected tokens, then the used fraction of
    /// its slots, then index.
    fn best_node(&self, expert: usize) -> Option<usize> {
        let base = expert / self.per_layer * self.nodes();
        let holders = &self.holders[expert];
        let mut best: Option<(usize, usize)> = None;
        for node in 0..self.nodes() {
            if !self.free(node) || holders.contains(&node) {
                continue;
            }
            let over = (self.count[base + node] + 1).saturating_sub(self.cap[base + node]);
            let better = best.is_none_or(|(best_over, b)| {
                over.cmp(&best_over)
                    .then_with(|| self.load[node].total_cmp(&self.load[b]))
                    .then_with(|| {
                        (self.used[node] * self.slots[b]).cmp(&(self.used[b] * self.slots[node]))
                    })
                    .is_lt()
            });
            if better {
                best = Some((over, node));
            }
        }
        best.map(|(_, node)| node)
    }

    /// When every node with a free slot already holds `expert`: moves another expert's copy
    /// from a full node onto such a node, and returns the full node, now free for `expert`.
    fn make_room(&mut self, expert: usize) -> Option<usize> {
        let free: Vec<usize> = (0..self.nodes()).filter(|&n| self.free(n)).collect();
        for &to in &free {
            for from in 0..self.nodes() {
                if from == to || self.holds(expert, from) {
                    continue;
                }
                if let Some(&other) = self.held[from].iter().find(|&&o| !self.holds(o, to)) {
                    self.relocate(other, from, to);
                    return Some(from);
                }
            }
        }
        None
    }

    /// Step 4: brings every (layer, node) count within its spread cap where one move, or one
    /// swap with a copy of another layer, can: a fresh plan's last copies may find free slots
    /// only on nodes already at their cap.
    fn repair_spread(&mut self) {
        for cell in 0..self.count.len() {
            while self.count[cell] > self.cap[cell] && self.shed(cell) {}
        }
    }

    /// One copy of the over-cap `cell` moved, or swapped with a copy of another layer, to a node
    /// under its cap: the exchange leaving the larger of the two nodes' loads smallest.
    fn shed(&mut self, cell: usize) -> bool {
        let (layer, from) = (cell / self.nodes(), cell % self.nodes());
        let base = layer * self.nodes();
        let mine: Vec<usize> = self.held[from]
            .iter()
            .copied()
            .filter(|&e| e / self.per_layer == layer)
            .collect();
        let mut best: Option<(f64, usize, Exchange)> = None;
        for to in 0..self.nodes() {
            if self.count[base + to] >= self.cap[base + to] {
                continue;
            }
            let mut consider = |transfer: f64, exchange: Exchange| {
                let worse = (self.load[to] + transfer).max(self.load[from] - transfer);
                if best.is_none_or(|(b, _, _)| worse < b) {
                    best = Some((worse, to, exchange));
                }
            };
            for &expert in mine.iter().filter(|&&e| !self.holds(e, to)) {
                if self.free(to) {
                    consider(self.tau[expert], Exchange::Move(expert));
                    continue;
                }
                for &other in &self.held[to] {
                    if other / self.per_layer != layer
                        && !self.holds(other, from)
                        && self.under_cap(other, from)
                    {
                        consider(
                            self.tau[expert] - self.tau[other],
                            Exchange::Swap(expert, other),
                        );
                    }
                }
            }
        }
        match best {
            Some((_, to, Exchange::Move(expert))) => self.relocate(expert, from, to),
            Some((_, to, Exchange::Swap(expert, other))) => {
                self.relocate(expert, from, to);
                self.relocate(other, to, from);
            }
            None => return false,
        }
        true
    }

    /// Step 5: brings each joining node up to its fair share of copies.
    fn top_up(&mut self, joining: &[usize]) {
        let copies: usize = self.used.iter().sum();
        let mean = self.load.iter().sum::<f64>() / self.nodes().max(1) as f64;
        for &node in joining {
            let share = (copies * self.slots[node]).div_ceil(self.total_slots.max(1));
            let mut wanted = share.saturating_sub(self.used[node]);
            while wanted > 0 && self.free(node) {
                let aim = ((mean - self.load[node]) / wanted as f64).max(0.0);
                let Some((expert, donor)) = self.donation(node, copies, aim) else {
                    break;
                };
                self.relocate(expert, donor, node);
                wanted -= 1;
            }
        }
    }

    /// A copy for joining `node` from a node that stays at or above the floor of its own share
    /// and no less full than `node` without it, the most loaded first, whose tokens are nearest
    /// `aim`.
    fn donation(&self, node: usize, copies: usize, aim: f64) -> Option<(usize, usize)> {
        let excess = |n: usize| {
            self.used[n] as i128 * self.total_slots as i128 - (copies * self.slots[n]) as i128
        };
        let can_give = |n: usize| {
            n != node
                && self.used[n] > (copies * self.slots[n]) / self.total_slots
                && (self.used[n] - 1) * self.slots[node] >= (self.used[node] + 1) * self.slots[n]
        };
        let mut donors: Vec<usize> = (0..self.nodes()).filter(|&n| can_give(n)).collect();
        donors.sort_by(|&a, &b| {
            self.load[b]
                .total_cmp(&self.load[a])
                .then(excess(b).cmp(&excess(a)))
                .then(a.cmp(&b))
        });
        donors.into_iter().find_map(|donor| {
            self.held[donor]
                .iter()
                .copied()
                .filter(|&e| !self.holds(e, node) && self.under_cap(e, node))
                .min_by(|&a, &b| {
                    (self.tau[a] - aim)
                        .abs()
                        .total_cmp(&(self.tau[b] - aim).abs())
                        .then(a.cmp(&b))
                })
                .map(|e| (e, donor))
        })
    }

    /// Step 6: moves copies from the most loaded node towards lighter ones, `budget` copies at
    /// most (a swap of two copies of one layer counts as two).
    fn balance(&mut self, budget: usize) {
        let mut left = budget;
        while left > 0 {
            let Some(donor) = (0..self.nodes())
                .max_by(|&a, &b| self.load[a].total_cmp(&self.load[b]).then(b.cmp(&a)))
            else {
                return;
            };
            let mut receivers: Vec<usize> = (0..self.nodes())
                .filter(|&n| self.load[n] < self.load[donor])
                .collect();
            receivers.sort_by(|&a, &b| self.load[a].total_cmp(&self.load[b]).then(a.cmp(&b)));
            let found = receivers
                .into_iter()
                .find_map(|to| self.exchange(donor, to, left).map(|x| (to, x)));
            match found {
                Some((to, Exchange::Move(expert))) => {
                    self.relocate(expert, donor, to);
                    left -= 1;
                }
                Some((to, Exchange::Swap(expert, other))) => {
                    self.relocate(expert, donor, to);
                    self.relocate(other, to, donor);
                    left -= 2;
                }
                None => return,
            }
        }
    }

    /// The move of a copy from `donor` to `to`, or swap of two copies of one layer between them,
    /// whose transfer of tokens is nearest half their gap, among those that lower the larger load.
    fn exchange(&self, donor: usize, to: usize, left: usize) -> Option<Exchange> {
        let gap = self.load[donor] - self.load[to];
        let mut theirs: Vec<(usize, usize)> = if left >= 2 {
            self.held[to]
                .iter()
                .filter(|&&f| !self.holds(f, donor))
                .map(|&f| (f / self.per_layer, f))
                .collect()
        } else {
            Vec::new()
        };
        theirs.sort_unstable();
        let mut best: Option<(f64, Exchange)> = None;
        let mut consider = |transfer: f64, exchange: Exchange| {
            let distance = (transfer - gap / 2.0).abs();
            if transfer > 0.0 && transfer < gap && best.is_none_or(|(d, _)| distance < d) {
                best = Some((distance, exchange));
            }
        };
        for &expert in &self.held[donor] {
            if self.holds(expert, to) {
                continue;
            }
            if self.free(to) && self.under_cap(expert, to) {
                consider(self.tau[expert], Exchange::Move(expert));
            }
            let layer = expert / self.per_layer;
            let start = theirs.partition_point(|&(l, _)| l < layer);
            for &(_, other) in theirs[start..].iter().take_while(|&&(l, _)| l == layer) {
                consider(
                    self.tau[expert] - self.tau[other],
                    Exchange::Swap(expert, other),
                );
            }
        }
        best.map(|(_, exchange)| exchange)
    }
}

/// A move of one copy, or a swap of two, between two nodes.
#[derive(Debug, Clone, Copy)]
enum Exchange {
    Move(usize),
    /// The giving node's copy of the first expert for the receiving node's of the second.
    Swap(usize, usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::ExpertCount;

    const EXPERT_BYTES: u64 = 1_000;

    /// xorshift64*: enough randomness for property tests, seeded per test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: usize, hi: usize) -> usize {
            lo + (self.next() % (hi - lo + 1) as u64) as usize
        }
    }

    fn shape(layers: u32, moe_layers: Vec<u32>, experts: u32) -> ModelShape {
        ModelShape {
            model: "test-moe".into(),
            layers,
            moe_layers,
            experts_per_layer: experts,
            expert_bytes: EXPERT_BYTES,
        }
    }

    fn random_shape(rng: &mut Rng) -> ModelShape {
        let layers = rng.range(1, 6) as u32;
        let mut moe: Vec<u32> = (0..layers).filter(|_| rng.range(0, 3) > 0).collect();
        if moe.is_empty() {
            moe.push(layers - 1);
        }
        shape(layers, moe, rng.range(1, 12) as u32)
    }

    fn experts(shape: &ModelShape) -> usize {
        shape.moe_layers.len() * shape.experts_per_layer as usize
    }

    /// `count` nodes `n00..` of `slots` slots each, plus a remainder below one expert.
    fn uniform_nodes(count: usize, slots: usize) -> Vec<NodeSpace> {
        (0..count)
            .map(|i| node(&format!("n{i:02}"), slots))
            .collect()
    }

    fn node(id: &str, slots: usize) -> NodeSpace {
        NodeSpace {
            id: id.into(),
            capacity_bytes: slots as u64 * EXPERT_BYTES + EXPERT_BYTES / 2,
        }
    }

    /// Zipf-like tokens over the experts in a random order.
    fn skewed(rng: &mut Rng, shape: &ModelShape) -> Popularity {
        let mut popularity = Popularity::default();
        for &layer in &shape.moe_layers {
            for expert in 0..shape.experts_per_layer {
                let rank = rng.range(1, 64) as u64;
                popularity.add(layer, expert, 1_000_000 / (rank * rank));
            }
        }
        popularity
    }

    fn request<'a>(
        nodes: &'a [NodeSpace],
        shape: &'a ModelShape,
        popularity: &'a Popularity,
        replication: u32,
        previous: Option<&'a Placement>,
    ) -> PlanRequest<'a> {
        PlanRequest {
            nodes,
            shape,
            popularity,
            replication,
            previous,
            epoch: previous.map_or(1, |p| p.epoch + 1),
            balance_moves: 0,
        }
    }

    /// Coverage, distinct replicas, capacity, the report's figures and the document's own check.
    fn assert_valid(plan: &Plan, nodes: &[NodeSpace], shape: &ModelShape) {
        let placement = &plan.placement;
        assert_eq!(placement.assignments.len(), experts(shape));
        let mut moe = shape.moe_layers.clone();
        moe.sort_unstable();
        moe.dedup();
        let mut held: BTreeMap<&str, u64> = BTreeMap::new();
        for (i, a) in placement.assignments.iter().enumerate() {
            let per_layer = shape.experts_per_layer as usize;
            assert_eq!(
                (a.layer, a.expert),
                (moe[i / per_layer], (i % per_layer) as u32)
            );
            assert!(!a.nodes.is_empty(), "{a:?} unserved");
            let mut ids = a.nodes.clone();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), a.nodes.len(), "{a:?} has a node twice");
            for id in &a.nodes {
                *held.entry(id.as_str()).or_default() += shape.expert_bytes;
            }
        }
        for (id, bytes) in &held {
            let node = nodes
                .iter()
                .find(|n| n.id == *id)
                .expect("placed on a listed node");
            assert!(
                *bytes <= node.capacity_bytes,
                "{id}: {bytes} > {}",
                node.capacity_bytes
            );
        }
        let copies: usize = placement.assignments.iter().map(|a| a.nodes.len()).sum();
        assert_eq!(plan.report.copies, copies);
        assert_eq!(
            plan.report.nodes.iter().map(|n| n.copies).sum::<usize>(),
            copies
        );
        assert_eq!(
            Placement::from_json(&placement.to_json()).as_ref(),
            Ok(placement)
        );
    }

    fn replicas(placement: &Placement) -> Vec<usize> {
        placement
            .assignments
            .iter()
            .map(|a| a.nodes.len())
            .collect()
    }

    fn copies_on(placement: &Placement, id: &str) -> usize {
        placement.experts_of(id).count()
    }

    #[test]
    fn every_moe_expert_is_served_and_dense_layers_are_not() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200 {
            let shape = random_shape(&mut rng);
            let popularity = skewed(&mut rng, &shape);
            let nodes = uniform_nodes(rng.range(1, 8), experts(&shape));
            let plan = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
            assert_valid(&plan, &nodes, &shape);
            for layer in (0..shape.layers).filter(|l| !shape.moe_layers.contains(l)) {
                assert!(plan.placement.assignments.iter().all(|a| a.layer != layer));
            }
            assert_eq!(plan.placement.epoch, 1);
            assert_eq!(plan.placement.layers, shape.layers);
        }
    }

    #[test]
    fn capacity_is_never_exceeded() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let mut planned = 0;
        for _ in 0..300 {
            let shape = random_shape(&mut rng);
            let x = experts(&shape);
            let mut nodes: Vec<NodeSpace> = (0..rng.range(1, 10))
                .map(|i| NodeSpace {
                    id: format!("n{i}"),
                    capacity_bytes: rng.range(0, x * EXPERT_BYTES as usize) as u64,
                })
                .collect();
            let replication = rng.range(1, 4) as u32;
            let mut popularity = skewed(&mut rng, &shape);
            let mut previous: Option<Placement> = None;
            for step in 0..4 {
                let slots: u64 = nodes
                    .iter()
                    .map(|n| (n.capacity_bytes / EXPERT_BYTES).min(x as u64))
                    .sum();
                match plan(&request(
                    &nodes,
                    &shape,
                    &popularity,
                    replication,
                    previous.as_ref(),
                )) {
                    Ok(plan) => {
                        assert!(slots >= x as u64);
                        assert_valid(&plan, &nodes, &shape);
                        previous = Some(plan.placement);
                        planned += 1;
                    }
                    Err(PlanError::InsufficientCapacity {
                        unassigned,
                        missing_bytes,
                        ..
                    }) => {
                        assert_eq!(unassigned as u64, x as u64 - slots);
                        assert_eq!(missing_bytes, unassigned as u64 * EXPERT_BYTES);
                    }
                    Err(e) => panic!("{e}"),
                }
                match step {
                    0 if nodes.len() > 1 => {
                        let gone = rng.range(0, nodes.len() - 1);
                        nodes.remove(gone);
                    }
                    1 => nodes.push(NodeSpace {
                        id: "joined".into(),
                        capacity_bytes: rng.range(0, x * EXPERT_BYTES as usize) as u64,
                    }),
                    _ => popularity = skewed(&mut rng, &shape),
                }
            }
        }
        assert!(planned > 300, "only {planned} instances had room");
    }

    /// Copies of each layer on each node against `ceil(C_l / N) + slack`.
    fn assert_spread(placement: &Placement, nodes: usize, slack: usize) {
        let mut per_layer: BTreeMap<u32, (usize, BTreeMap<&str, usize>)> = BTreeMap::new();
        for a in &placement.assignments {
            let (copies, on) = per_layer.entry(a.layer).or_default();
            *copies += a.nodes.len();
            for id in &a.nodes {
                *on.entry(id.as_str()).or_default() += 1;
            }
        }
        for (layer, (copies, on)) in per_layer {
            let most = on.values().copied().max().unwrap_or(0);
            assert!(
                most <= copies.div_ceil(nodes) + slack,
                "layer {layer}: {most} of {copies} copies on one of {nodes} nodes"
            );
        }
    }

    #[test]
    fn each_layer_is_spread_across_nodes() {
        let mut rng = Rng(0x5eed_0000_0000_0001);
        for _ in 0..300 {
            let shape = random_shape(&mut rng);
            let popularity = skewed(&mut rng, &shape);
            let count = rng.range(1, 12);
            let replication = rng.range(1, 4) as u32;
            let copies_per_layer =
                shape.experts_per_layer as usize * (replication as usize).min(count);
            let room = shape.moe_layers.len() * copies_per_layer.div_ceil(count);
            let nodes = uniform_nodes(count, room);
            let plan = plan(&request(&nodes, &shape, &popularity, replication, None)).unwrap();
            assert_valid(&plan, &nodes, &shape);
            assert_spread(&plan.placement, count, 0);
        }
    }

    #[test]
    fn with_room_every_expert_gets_min_r_replicas() {
        let mut rng = Rng(0x7777_1234_0000_0002);
        for _ in 0..200 {
            let shape = random_shape(&mut rng);
            let popularity = skewed(&mut rng, &shape);
            let count = rng.range(1, 9);
            let replication = rng.range(1, 5);
            let nodes = uniform_nodes(count, experts(&shape) * replication.min(count) / count + 1);
            let plan = plan(&request(
                &nodes,
                &shape,
                &popularity,
                replication as u32,
                None,
            ))
            .unwrap();
            assert_valid(&plan, &nodes, &shape);
            assert!(
                replicas(&plan.placement)
                    .iter()
                    .all(|&r| r == replication.min(count))
            );
            assert_eq!(plan.report.replicas_min, replication.min(count));
        }
    }

    #[test]
    fn with_tight_room_hotter_experts_have_at_least_as_many_replicas() {
        let mut rng = Rng(0xdead_beef_0000_0003);
        for _ in 0..300 {
            let shape = random_shape(&mut rng);
            let popularity = skewed(&mut rng, &shape);
            let x = experts(&shape);
            let nodes: Vec<NodeSpace> = (0..rng.range(2, 8))
                .map(|i| node(&format!("n{i}"), rng.range(x / 8, x / 2 + 1)))
                .collect();
            let Ok(plan) = plan(&request(&nodes, &shape, &popularity, 3, None)) else {
                continue;
            };
            assert_valid(&plan, &nodes, &shape);
            let tokens: Vec<u64> = plan
                .placement
                .assignments
                .iter()
                .map(|a| popularity.tokens(a.layer, a.expert))
                .collect();
            let counts = replicas(&plan.placement);
            for a in 0..x {
                for b in 0..x {
                    assert!(
                        tokens[a] <= tokens[b] || counts[a] >= counts[b],
                        "{} tokens: {} replicas, {} tokens: {}",
                        tokens[a],
                        counts[a],
                        tokens[b],
                        counts[b]
                    );
                }
            }
        }
    }

    #[test]
    fn a_leaving_node_moves_only_its_copies() {
        let mut rng = Rng(0x1eaf_0000_0000_0004);
        for round in 0..200 {
            let shape = random_shape(&mut rng);
            let popularity = skewed(&mut rng, &shape);
            let x = experts(&shape);
            let count = rng.range(3, 10);
            let tight = round % 2 == 1;
            let slots = if tight { x.div_ceil(count - 1) + 1 } else { x };
            let mut nodes = uniform_nodes(count, slots);
            let before = plan(&request(&nodes, &shape, &popularity, 2, None))
                .unwrap()
                .placement;
            let gone = nodes.remove(rng.range(0, count - 1));
            let lost = copies_on(&before, &gone.id);
            let after = plan(&request(&nodes, &shape, &popularity, 2, Some(&before))).unwrap();
            assert_valid(&after, &nodes, &shape);
            assert_eq!(after.placement.epoch, before.epoch + 1);
            let moved = after.report.moved;
            assert!(moved <= 2 * lost, "{moved} moved, {lost} lost");
            if tight {
                continue;
            }
            assert_eq!(after.report.moved, lost);
            assert_eq!(after.report.removed, lost);
            for (old, new) in before.assignments.iter().zip(&after.placement.assignments) {
                for id in old.nodes.iter().filter(|id| **id != gone.id) {
                    assert!(new.nodes.contains(id), "{id} lost a copy of {old:?}");
                }
            }
        }
    }

    #[test]
    fn a_joining_node_takes_its_fair_share_with_bounded_moves() {
        let mut rng = Rng(0x0101_0000_0000_0005);
        for _ in 0..200 {
            let shape = random_shape(&mut rng);
            let popularity = skewed(&mut rng, &shape);
            let count = rng.range(1, 9);
            let mut nodes = uniform_nodes(count, 2 * experts(&shape));
            let before = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
            nodes.push(node("new", 2 * experts(&shape)));
            let after = plan(&request(
                &nodes,
                &shape,
                &popularity,
                2,
                Some(&before.placement),
            ))
            .unwrap();
            assert_valid(&after, &nodes, &shape);
            let copies = after.report.copies;
            let share = copies.div_ceil(count + 1);
            let joined = copies_on(&after.placement, "new");
            if count == 1 {
                assert_eq!(
                    joined,
                    experts(&shape),
                    "the second node takes every second copy"
                );
            } else {
                assert!(
                    after.report.moved <= share,
                    "{} moved, share {share}",
                    after.report.moved
                );
                assert_eq!(after.report.removed, after.report.moved);
                assert_eq!(joined, after.report.moved);
                assert!(
                    joined >= copies / (count + 1) / 2,
                    "joined with {joined} of {copies}"
                );
            }
        }
    }

    #[test]
    fn planning_is_deterministic_and_ignores_node_order() {
        let mut rng = Rng(0xabcd_0000_0000_0006);
        for _ in 0..50 {
            let shape = random_shape(&mut rng);
            let popularity = skewed(&mut rng, &shape);
            let x = experts(&shape);
            let nodes: Vec<NodeSpace> = (0..rng.range(2, 9))
                .map(|i| node(&format!("n{i}"), rng.range(x / 2 + 1, 2 * x)))
                .collect();
            let first = plan(&request(&nodes, &shape, &popularity, 2, None)).unwrap();
            let mut shuffled = nodes.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.range(0, i));
            }
            let second = plan(&request(&shuffled, &shape, &popularity, 2, None)).unwrap();
            assert_eq!(first, second);
            let again = plan(&request(
                &nodes,
                &shape,
                &popularity,
                2,
                Some(&first.placement),
            ))
            .unwrap();
            assert_eq!(again.placement.assignments, first.placement.assignments);
            assert_eq!((again.report.moved, again.report.removed), (0, 0));
        }
    }

    #[test]
    fn insufficient_capacity_states_the_missing_bytes() {
        let shape = shape(3, vec![0, 2], 4);
        let nodes = uniform_nodes(3, 2);
        let err = plan(&request(&nodes, &shape, &Popularity::default(), 2, None)).unwrap_err();
        assert_eq!(
            err,
            PlanError::InsufficientCapacity {
                experts: 8,
                unassigned: 2,
                missing_bytes: 2 * EXPERT_BYTES,
            }
        );
        assert!(err.to_string().contains("2000 bytes missing"), "{err}");
        let err = plan(&request(&[], &shape, &Popularity::default(), 2, None)).unwrap_err();
        assert!(matches!(
            err,
            PlanError::InsufficientCapacity { unassigned: 8, .. }
        ));
    }

    #[test]
    fn bad_requests_are_refused() {
        let popularity = Popularity::default();
        let nodes = uniform_nodes(2, 8);
        let good = shape(2, vec![1], 4);
        assert_eq!(
            plan(&request(&nodes, &good, &popularity, 0, None)).unwrap_err(),
            PlanError::ZeroReplication
        );
        let twice = vec![node("a", 8), node("a", 8)];
        assert_eq!(
            plan(&request(&twice, &good, &popularity, 2, None)).unwrap_err(),
            PlanError::DuplicateNode("a".into())
        );
        let outside = shape(2, vec![2], 4);
        assert!(matches!(
            plan(&request(&nodes, &outside, &popularity, 2, None)),
            Err(PlanError::InvalidShape(_))
        ));
    }

    #[test]
    fn popularity_sums_gateway_reports() {
        let report = |gateway: &str, tokens| GatewayStats {
            gateway: gateway.into(),
            window_seconds: 60,
            counts: vec![ExpertCount {
                layer: 1,
                expert: 2,
                tokens,
            }],
        };
        let popularity = Popularity::from_stats(&[report("a", 5), report("b", 7)]);
        assert_eq!(popularity.tokens(1, 2), 12);
        assert_eq!(popularity.tokens(0, 2), 0);
    }

    /// Popularity that makes every expert held by `hot` node far hotter than the rest.
    fn hot_on(placement: &Placement, hot: &str) -> Popularity {
        let mut popularity = Popularity::default();
        for a in &placement.assignments {
            let tokens = if a.nodes.iter().any(|n| n == hot) {
                1_000
            } else {
                10
            };
            popularity.add(a.layer, a.expert, tokens);
        }
        popularity
    }

    #[test]
    fn balancing_moves_lower_imbalance_within_budget() {
        let shape = shape(8, (0..8).collect(), 16);
        let nodes = uniform_nodes(8, 64);
        let before = plan(&request(&nodes, &shape, &Popularity::default(), 2, None)).unwrap();
        let shifted = hot_on(&before.placement, "n03");
        let stale = imbalance(&node_loads(
            &before.placement,
            &nodes,
            EXPERT_BYTES,
            &shifted,
        ));
        let mut previous = before.placement.clone();
        let mut last = stale;
        for budget in [4, 16, 64] {
            let after = plan(&PlanRequest {
                balance_moves: budget,
                ..request(&nodes, &shape, &shifted, 2, Some(&previous))
            })
            .unwrap();
            assert_valid(&after, &nodes, &shape);
            assert!(after.report.moved <= budget);
            assert!(
                after.report.imbalance < last,
                "{} after {last}",
                after.report.imbalance
            );
            last = after.report.imbalance;
            previous = after.placement;
        }
        let fresh = plan(&request(&nodes, &shape, &shifted, 2, None)).unwrap();
        let settled = plan(&PlanRequest {
            balance_moves: 64,
            ..request(&nodes, &shape, &shifted, 2, Some(&previous))
        })
        .unwrap();
        assert!(
            settled.report.imbalance <= fresh.report.imbalance * 1.05,
            "stale {stale}, balanced {}, fresh {}",
            settled.report.imbalance,
            fresh.report.imbalance
        );
    }

    #[test]
    fn replans_only_when_popularity_unbalances_the_placement() {
        let shape = shape(8, (0..8).collect(), 16);
        let nodes = uniform_nodes(8, 64);
        let even = Popularity::default();
        let current = plan(&request(&nodes, &shape, &even, 2, None))
            .unwrap()
            .placement;
        let same = replan_advice(
            &current,
            &request(&nodes, &shape, &even, 2, None),
            Hysteresis::default(),
        );
        assert!(matches!(same, Ok(ReplanAdvice::Keep { .. })), "{same:?}");
        let shifted = hot_on(&current, "n05");
        let advice = replan_advice(
            &current,
            &request(&nodes, &shape, &shifted, 2, None),
            Hysteresis::default(),
        );
        let Ok(ReplanAdvice::Replan {
            current: now,
            fresh,
        }) = advice
        else {
            panic!("{advice:?}");
        };
        assert!(now > 1.25 && fresh * 1.1 < now, "{now} vs {fresh}");
        let lenient = Hysteresis {
            threshold: now,
            margin: 1.1,
        };
        let advice = replan_advice(
            &current,
            &request(&nodes, &shape, &shifted, 2, None),
            lenient,
        );
        assert!(
            matches!(advice, Ok(ReplanAdvice::Keep { .. })),
            "{advice:?}"
        );
    }
}
