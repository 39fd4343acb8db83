//! Copies per expert (step 1 of the planner): the replication floor where the slots allow, then
//! redundant copies for the experts whose copies carry the most tokens, while a copy carries
//! more than its grain of a node's mean load — with a tolerance around the grain for the counts
//! of a previous placement, so that re-plans keep them. It decides counts only, never nodes.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::LOAD_GRAIN;

/// A previous count is kept while a copy carries at least this fraction of the grain...
const KEEP_DOWN_TO: (u128, u128) = (3, 4);
/// ...and raised only when a copy carries more than this fraction of it.
const RAISE_ABOVE: (u128, u128) = (5, 4);

/// What the counts depend on, per expert index.
pub(super) struct Demand<'a> {
    /// Experts hottest first.
    pub rank: &'a [usize],
    pub tokens: &'a [u64],
    /// Nodes with a slot that can hold the expert.
    pub reach: &'a [usize],
    /// Copies in the placement in force.
    pub previous: Option<&'a [usize]>,
}

/// Copies per expert index, with `slots` per node and `floor` = `min(r, N)`; see "Replica
/// counts" in the module docs.
pub(super) fn replica_counts(demand: Demand<'_>, slots: &[usize], floor: usize) -> Vec<usize> {
    let mut room = Room::new(slots);
    let mut counts = vec![0; demand.rank.len()];
    for level in 0..floor {
        for &e in demand.rank {
            if counts[e] != level || !room.fits(level) {
                break;
            }
            room.add(level);
            counts[e] = level + 1;
        }
    }
    if counts.iter().all(|&d| d == floor) {
        redundant(&mut counts, &demand, slots, &mut room);
    }
    counts
}

/// The redundant copies: one more copy at a time for the expert whose copies carry the most
/// tokens, while that is above the grain `T / (LOAD_GRAIN * n)` (`T` all tokens, `n` the nodes
/// with a slot) and the slots can take it on distinct nodes that can hold it. Below its previous
/// count an expert gets copies while they carry more than 3/4 of the grain, at or above it while
/// they carry more than 5/4 of it.
fn redundant(counts: &mut [usize], demand: &Demand<'_>, slots: &[usize], room: &mut Room) {
    let tokens = demand.tokens;
    let total: u128 = tokens.iter().map(|&t| u128::from(t)).sum();
    let nodes = slots.iter().filter(|&&s| s > 0).count();
    let grain = u128::from(LOAD_GRAIN) * nodes as u128;
    let too_hot = |load: &PerCopy| {
        let (num, den) = match demand.previous {
            None => (1, 1),
            Some(had) if load.copies < had[load.expert] => KEEP_DOWN_TO,
            Some(_) => RAISE_ABOVE,
        };
        u128::from(load.tokens) * grain * den > total * load.copies as u128 * num
    };
    let mut heap: BinaryHeap<PerCopy> = (0..counts.len())
        .map(|expert| PerCopy {
            tokens: tokens[expert],
            copies: counts[expert],
            expert,
        })
        .filter(|load| load.copies > 0 && too_hot(load))
        .collect();
    while let Some(load) = heap.pop() {
        if load.copies >= demand.reach[load.expert] || !room.fits(load.copies) {
            continue;
        }
        room.add(load.copies);
        counts[load.expert] += 1;
        let next = PerCopy {
            copies: load.copies + 1,
            ..load
        };
        if too_hot(&next) {
            heap.push(next);
        }
    }
}

/// What the slots can still take: an expert with `d` copies can have one more on distinct
/// nodes iff for every `m <= d`, `sum_e max(0, d_e - m)` stays within the slots outside the
/// `m` largest nodes (the min-cut of the expert-to-node flow).
struct Room {
    /// Slots outside the `m` largest nodes, per `m`.
    outside: Vec<usize>,
    /// `sum_e max(0, d_e - m)` per `m`.
    above: Vec<usize>,
}

impl Room {
    fn new(slots: &[usize]) -> Room {
        let mut largest = slots.to_vec();
        largest.sort_unstable_by(|a, b| b.cmp(a));
        let mut left: usize = slots.iter().sum();
        let outside = largest
            .iter()
            .map(|&s| {
                let here = left;
                left -= s;
                here
            })
            .collect();
        Room {
            outside,
            above: vec![0; slots.len()],
        }
    }

    /// Whether an expert of `copies` copies can have one more.
    fn fits(&self, copies: usize) -> bool {
        copies < self.outside.len() && (0..=copies).all(|m| self.above[m] < self.outside[m])
    }

    fn add(&mut self, copies: usize) {
        for above in &mut self.above[..=copies] {
            *above += 1;
        }
    }
}

/// An expert's tokens per copy, compared exactly; the hotter per copy, then the lower index, is
/// greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PerCopy {
    tokens: u64,
    copies: usize,
    expert: usize,
}

impl Ord for PerCopy {
    fn cmp(&self, other: &PerCopy) -> Ordering {
        let mine = u128::from(self.tokens) * other.copies as u128;
        let theirs = u128::from(other.tokens) * self.copies as u128;
        mine.cmp(&theirs).then(other.expert.cmp(&self.expert))
    }
}

impl PartialOrd for PerCopy {
    fn partial_cmp(&self, other: &PerCopy) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
