//! The placement being built: copies per node and per layer, and the steps that add, keep, move
//! and swap them.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::NodeSpace;

/// The placement being built, with the counts the steps consult.
pub(super) struct State {
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
    pub(super) holders: Vec<Vec<usize>>,
    /// Experts each node holds.
    held: Vec<Vec<usize>>,
    used: Vec<usize>,
    load: Vec<f64>,
    /// The nodes with a free slot, lightest first (the order [`State::best_node`] prefers).
    light: BTreeSet<Lightness>,
    /// Per expert, the nodes that cannot hold it.
    banned: Vec<Vec<usize>>,
}

impl State {
    pub(super) fn new(
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
        let light = (0..nodes)
            .filter(|&node| slots[node] > 0)
            .map(|node| Lightness {
                load: 0.0,
                used: 0,
                slots: slots[node],
                node,
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
            light,
            banned: vec![Vec::new(); tokens.len()],
        }
    }

    /// Records which experts each of `nodes` (in the state's order) cannot hold.
    pub(super) fn ban(&mut self, nodes: &[&NodeSpace], layers: &[u32], per_layer: usize) {
        for (node, space) in nodes.iter().enumerate() {
            for &(layer, expert) in &space.cannot_hold {
                if let Ok(position) = layers.binary_search(&layer)
                    && (expert as usize) < per_layer
                {
                    self.banned[position * per_layer + expert as usize].push(node);
                }
            }
        }
    }

    /// Whether a copy of `expert` may go to `node`: it holds none and can hold one.
    pub(super) fn can_take(&self, expert: usize, node: usize) -> bool {
        !self.holds(expert, node) && !self.banned[expert].contains(&node)
    }

    pub(super) fn nodes(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn cell(&self, expert: usize, node: usize) -> usize {
        expert / self.per_layer * self.nodes() + node
    }

    pub(super) fn holds(&self, expert: usize, node: usize) -> bool {
        self.holders[expert].contains(&node)
    }

    pub(super) fn free(&self, node: usize) -> bool {
        self.used[node] < self.slots[node]
    }

    /// Whether `node` can take `expert` within its spread cap.
    pub(super) fn under_cap(&self, expert: usize, node: usize) -> bool {
        let cell = self.cell(expert, node);
        self.count[cell] < self.cap[cell]
    }

    pub(super) fn add(&mut self, expert: usize, node: usize) {
        self.holders[expert].push(node);
        self.take(expert, node);
    }

    /// Counts `expert`'s copy on `node`, which `holders` already lists.
    fn take(&mut self, expert: usize, node: usize) {
        let cell = self.cell(expert, node);
        self.unlist(node);
        self.held[node].push(expert);
        self.used[node] += 1;
        self.count[cell] += 1;
        self.load[node] += self.tau[expert];
        self.list(node);
    }

    pub(super) fn remove(&mut self, expert: usize, node: usize) {
        let cell = self.cell(expert, node);
        self.holders[expert].retain(|&n| n != node);
        self.forget(expert, node, cell);
    }

    /// Moves `expert`'s copy from `from` to `to`, keeping its place in the preference order.
    pub(super) fn relocate(&mut self, expert: usize, from: usize, to: usize) {
        if let Some(slot) = self.holders[expert].iter_mut().find(|n| **n == from) {
            *slot = to;
        }
        self.forget(expert, from, self.cell(expert, from));
        self.take(expert, to);
    }

    pub(super) fn forget(&mut self, expert: usize, node: usize, cell: usize) {
        if let Some(at) = self.held[node].iter().position(|&e| e == expert) {
            self.held[node].swap_remove(at);
        }
        self.unlist(node);
        self.used[node] -= 1;
        self.count[cell] -= 1;
        self.load[node] -= self.tau[expert];
        self.list(node);
    }

    fn lightness(&self, node: usize) -> Lightness {
        Lightness {
            load: self.load[node],
            used: self.used[node],
            slots: self.slots[node],
            node,
        }
    }

    /// Takes `node` out of the light order before its load or use changes.
    fn unlist(&mut self, node: usize) {
        if self.free(node) {
            self.light.remove(&self.lightness(node));
        }
    }

    /// Puts `node` back into the light order after its load or use changed.
    fn list(&mut self, node: usize) {
        if self.free(node) {
            self.light.insert(self.lightness(node));
        }
    }

    /// Step 2: previous copies on present nodes, up to the new counts and the nodes' slots.
    pub(super) fn keep(&mut self, previous: &[Vec<usize>], replicas: &[usize]) {
        for (expert, nodes) in previous.iter().enumerate() {
            let kept: Vec<usize> = nodes
                .iter()
                .copied()
                .filter(|&node| !self.banned[expert].contains(&node))
                .take(replicas[expert])
                .collect();
            for node in kept {
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
    pub(super) fn fill(&mut self, rank: &[usize], replicas: &[usize]) {
        let mut missing: Vec<usize> = rank
            .iter()
            .flat_map(|&e| {
                std::iter::repeat_n(e, replicas[e].saturating_sub(self.holders[e].len()))
            })
            .collect();
        missing.sort_by(|&a, &b| self.tau[b].total_cmp(&self.tau[a]));
        for expert in missing {
            let node = self
                .best_node(expert)
                .or_else(|| self.make_room(expert))
                .or_else(|| self.last_resort(expert));
            if let Some(node) = node {
                self.add(expert, node);
            }
        }
    }

    /// For an expert no node can take and which has no copy yet: a node with a free slot that
    /// cannot hold it (a placement gives every expert a node), the least used first.
    fn last_resort(&self, expert: usize) -> Option<usize> {
        if !self.holders[expert].is_empty() {
            return None;
        }
        (0..self.nodes())
            .filter(|&n| self.free(n))
            .min_by(|&a, &b| (self.used[a] * self.slots[b]).cmp(&(self.used[b] * self.slots[a])))
    }

    /// The node a copy of `expert` goes to: one with a free slot that can take the expert, first
    /// by its excess over the layer's spread cap, then expected tokens, then the used fraction of
    /// its slots, then index.
    pub(super) fn best_node(&self, expert: usize) -> Option<usize> {
        let base = expert / self.per_layer * self.nodes();
        let mut best: Option<(usize, usize)> = None;
        for &Lightness { node, .. } in &self.light {
            let over = (self.count[base + node] + 1).saturating_sub(self.cap[base + node]);
            if best.is_some_and(|(least, _)| least <= over) || !self.can_take(expert, node) {
                continue;
            }
            if over == 0 {
                return Some(node);
            }
            best = Some((over, node));
        }
        best.map(|(_, node)| node)
    }

    /// When every node with a free slot already holds `expert`: moves another expert's copy
    /// from a full node onto such a node, and returns the full node, now free for `expert`.
    pub(super) fn make_room(&mut self, expert: usize) -> Option<usize> {
        let free: Vec<usize> = (0..self.nodes()).filter(|&n| self.free(n)).collect();
        for &to in &free {
            for from in 0..self.nodes() {
                if from == to || !self.can_take(expert, from) {
                    continue;
                }
                if let Some(&other) = self.held[from].iter().find(|&&o| self.can_take(o, to)) {
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
    pub(super) fn repair_spread(&mut self) {
        for cell in 0..self.count.len() {
            while self.count[cell] > self.cap[cell] && self.shed(cell) {}
        }
    }

    /// One copy of the over-cap `cell` moved, or swapped with a copy of another layer, to a node
    /// under its cap: the exchange leaving the larger of the two nodes' loads smallest.
    pub(super) fn shed(&mut self, cell: usize) -> bool {
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
            for &expert in mine.iter().filter(|&&e| self.can_take(e, to)) {
                if self.free(to) {
                    consider(self.tau[expert], Exchange::Move(expert));
                    continue;
                }
                for &other in &self.held[to] {
                    if other / self.per_layer != layer
                        && self.can_take(other, from)
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
    pub(super) fn top_up(&mut self, joining: &[usize]) {
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
    pub(super) fn donation(&self, node: usize, copies: usize, aim: f64) -> Option<(usize, usize)> {
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
                .filter(|&e| self.can_take(e, node) && self.under_cap(e, node))
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
    pub(super) fn balance(&mut self, budget: usize) {
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
    pub(super) fn exchange(&self, donor: usize, to: usize, left: usize) -> Option<Exchange> {
        let gap = self.load[donor] - self.load[to];
        let mut theirs: Vec<(usize, usize)> = if left >= 2 {
            self.held[to]
                .iter()
                .filter(|&&f| self.can_take(f, donor))
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
            if !self.can_take(expert, to) {
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
pub(super) enum Exchange {
    Move(usize),
    /// The giving node's copy of the first expert for the receiving node's of the second.
    Swap(usize, usize),
}

/// A node with a free slot in the order the fill prefers: fewest expected tokens, then smallest
/// used fraction of its slots, then index. A snapshot: the state takes it out of its set before
/// the node changes and puts a new one in after.
#[derive(Debug, Clone, Copy)]
struct Lightness {
    load: f64,
    used: usize,
    slots: usize,
    node: usize,
}

impl Ord for Lightness {
    fn cmp(&self, other: &Lightness) -> Ordering {
        self.load
            .total_cmp(&other.load)
            .then((self.used * other.slots).cmp(&(other.used * self.slots)))
            .then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Lightness {
    fn partial_cmp(&self, other: &Lightness) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Lightness {
    fn eq(&self, other: &Lightness) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Lightness {}
