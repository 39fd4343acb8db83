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
/// tokens, while that is above the grain and the slots can take it on distinct nodes that can
/// hold it. The grain is `W / (LOAD_GRAIN * n)` (`W` all tokens, `n` the nodes with a slot); in a
/// re-plan, it is at least what each copy of the hottest expert the slots stop carries in a
/// fresh count, and below its previous count an expert gets copies while they carry more than
/// 3/4 of the grain, at or above it while they carry more than 5/4 of it.
fn redundant(counts: &mut [usize], demand: &Demand<'_>, slots: &[usize], room: &mut Room) {
    let nodes = slots.iter().filter(|&&s| s > 0).count() as u128;
    let mut grain = Share {
        tokens: demand.tokens.iter().map(|&t| u128::from(t)).sum(),
        copies: u128::from(LOAD_GRAIN) * nodes,
    };
    let Some(had) = demand.previous else {
        add_copies(counts, demand, room, |load| load.share().exceeds(grain));
        return;
    };
    let mut fresh = counts.to_vec();
    let stopped = add_copies(&mut fresh, demand, &mut room.clone(), |load| {
        load.share().exceeds(grain)
    });
    if let Some(stopped) = stopped.filter(|s| s.exceeds(grain)) {
        grain = stopped;
    }
    let (keep, raise) = (grain.scaled(KEEP_DOWN_TO), grain.scaled(RAISE_ABOVE));
    add_copies(counts, demand, room, |load| {
        let over = if load.copies < had[load.expert] {
            keep
        } else {
            raise
        };
        load.share().exceeds(over)
    });
}

/// Adds copies one at a time, to the expert whose copies carry the most tokens first, while
/// `wanted` says so and the expert's nodes and the slots allow; returns what each copy of the
/// hottest expert the slots stopped carries.
fn add_copies(
    counts: &mut [usize],
    demand: &Demand<'_>,
    room: &mut Room,
    wanted: impl Fn(&PerCopy) -> bool,
) -> Option<Share> {
    let mut heap: BinaryHeap<PerCopy> = (0..counts.len())
        .map(|expert| PerCopy {
            tokens: demand.tokens[expert],
            copies: counts[expert],
            expert,
        })
        .filter(|load| load.copies > 0 && wanted(load))
        .collect();
    let mut stopped = None;
    while let Some(load) = heap.pop() {
        if load.copies >= demand.reach[load.expert] {
            continue;
        }
        if !room.fits(load.copies) {
            stopped = stopped.or(Some(load.share()));
            continue;
        }
        room.add(load.copies);
        counts[load.expert] += 1;
        let next = PerCopy {
            copies: load.copies + 1,
            ..load
        };
        if wanted(&next) {
            heap.push(next);
        }
    }
    stopped
}

/// What the slots can still take: an expert with `d` copies can have one more on distinct
/// nodes iff for every `m <= d`, `sum_e max(0, d_e - m)` stays within the slots outside the
/// `m` largest nodes (the min-cut of the expert-to-node flow).
#[derive(Debug, Clone)]
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

impl PerCopy {
    fn share(&self) -> Share {
        Share {
            tokens: u128::from(self.tokens),
            copies: self.copies as u128,
        }
    }
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

/// Tokens per copy as an exact fraction.
#[derive(Debug, Clone, Copy)]
struct Share {
    tokens: u128,
    copies: u128,
}

impl Share {
    fn exceeds(self, other: Share) -> bool {
        self.tokens.saturating_mul(other.copies) > other.tokens.saturating_mul(self.copies)
    }

    /// This share times `num / den`.
    fn scaled(self, (num, den): (u128, u128)) -> Share {
        Share {
            tokens: self.tokens.saturating_mul(num),
            copies: self.copies.saturating_mul(den),
        }
    }
}
