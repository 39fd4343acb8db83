//! Where a layer's shares go: per expert the replica to call (loaded, healthy, least loaded, in
//! the placement's order, the previous holders while new ones load) and, on a downgrading link,
//! the replica its low pairs are rerouted to; and one attempt's routing table built from them.
//! Pure: the node records and each link's health come in as arguments.

use std::collections::{BTreeMap, BTreeSet};

use moe_state::records::{NodeId, NodeRecord};
use moe_state::watch::Snapshot;

use super::pairs::Pair;
use super::table::Replicas;
use crate::links::Health;
use crate::policy::{PairPlan, Rung, Thresholds};

/// The node to send `expert` of `layer` to, among its replicas not `excluded`: one that has
/// loaded the placement, then one that held the expert in the `previous` placement and has not
/// moved on (a node keeps an expert it lost for a grace period, so work finds it while the new
/// replicas load), then one still loading it; within each, one whose calls have not failed
/// lately, then the one with the fewest calls in flight, then the placements' order (the
/// coordinator's choice of primary first). Under light load with healthy nodes that is always
/// the first replica; a replica takes over from a busy or failing one.
pub(super) fn replica<P: Replicas>(
    (placement, previous): (&P, Option<&P>),
    nodes: &Snapshot<NodeRecord>,
    health: &dyn Fn(&str) -> Health,
    layer: usize,
    expert: usize,
    excluded: &BTreeSet<NodeId>,
) -> Option<NodeId> {
    let (l, e) = (layer as u32, expert as u32);
    let holds = |node: &NodeId, p: &P| {
        nodes
            .get(node)
            .is_some_and(|r| r.has_loaded(p.placement(), l, e))
    };
    // A node that reported it cannot load the expert is no candidate, even as one still loading.
    let unloadable = |node: &NodeId| {
        nodes
            .get(node)
            .is_some_and(|r| r.load_failure(l, e).is_some())
    };
    let current = placement.nodes(l, e);
    let current_tiers = current
        .iter()
        .filter(|n| !unloadable(n))
        .map(|n| (if holds(n, placement) { 0 } else { 2 }, n));
    let earlier = previous.into_iter().flat_map(|p| {
        p.nodes(layer as u32, expert as u32)
            .iter()
            .filter(|n| !current.contains(*n) && holds(n, p))
            .map(|n| (1, n))
    });
    current_tiers
        .chain(earlier)
        .filter(|(_, n)| !excluded.contains(*n))
        .enumerate()
        .min_by_key(|(order, (tier, n))| {
            let h = health(n);
            (*tier, h.failed_recently, h.in_flight, *order)
        })
        .map(|(_, (_, n))| n.clone())
}

/// A share of one expert's pairs in a layer (the one dispatched, or a later one pre-calculated
/// with it): all of them, or the share rerouted (its pairs
/// planned low on a saturated link, sent to a replica on a less loaded one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Unit {
    pub(super) layer: usize,
    pub(super) expert: usize,
    pub(super) rerouted: bool,
}

/// Where `expert`'s pairs planned low at `from`'s rung go instead, when `from`'s link is at or
/// above the low-weights rung: a replica not `excluded` that has loaded the placement, has not
/// failed lately, and whose own link is below that rung with measured room for the rows (not
/// crowded: a link as loaded as `from`'s, only a rung lower for now, would saturate in turn);
/// the lowest rung, then the fewest calls in flight, then the placement's order.
pub(super) fn reroute_target<'p, P: Replicas>(
    placement: &'p P,
    nodes: &Snapshot<NodeRecord>,
    health: &dyn Fn(&str) -> Health,
    (layer, expert): (usize, usize),
    from: &str,
    excluded: &BTreeSet<NodeId>,
) -> Option<&'p NodeId> {
    if health(from).rung < Rung::LowWeights {
        return None;
    }
    placement
        .nodes(layer as u32, expert as u32)
        .iter()
        .enumerate()
        .filter(|(_, n)| *n != from && !excluded.contains(*n))
        .filter(|(_, n)| {
            let (l, e) = (layer as u32, expert as u32);
            nodes
                .get(n)
                .is_some_and(|r| r.has_loaded(placement.placement(), l, e))
        })
        .map(|(order, n)| (order, n, health(n)))
        .filter(|(_, _, h)| !h.failed_recently && !h.crowded && h.rung < Rung::LowWeights)
        .min_by_key(|(order, _, h)| (h.rung, h.in_flight, *order))
        .map(|(_, n, _)| n)
}

/// The replica a share goes to, and the one its low pairs are rerouted to, if any.
pub(super) type Choice = (NodeId, Option<NodeId>);

/// One attempt of a layer: the shares each node gets, and the low pairs moved off a downgrading
/// link (with how many moved from each node).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Attempt {
    pub(super) by_node: BTreeMap<NodeId, Vec<Unit>>,
    pub(super) rerouted: Vec<(NodeId, u64)>,
}

/// The routing of one attempt: every share of `remaining` sent to its replica (`choose`), and on
/// the first attempt the low pairs of a share whose node's link is downgrading moved to the
/// replica `reroute` names (their share split off `remaining`). `Err` is a share no replica
/// can take now.
pub(super) fn assign(
    remaining: &mut BTreeMap<Unit, Vec<Pair>>,
    choose: &dyn Fn(&Unit) -> Option<Choice>,
    low: &dyn Fn(&Pair, &str) -> bool,
) -> Result<Attempt, Unit> {
    let mut attempt = Attempt::default();
    let mut reroutes = Vec::new();
    for &unit in remaining.keys() {
        let (node, reroute) = choose(&unit).ok_or(unit)?;
        if let Some(to) = reroute {
            reroutes.push((unit, node.clone(), to));
        }
        attempt.by_node.entry(node).or_default().push(unit);
    }
    for (unit, from, to) in reroutes {
        let (moved, kept): (Vec<Pair>, Vec<Pair>) =
            remaining[&unit].iter().partition(|p| low(p, &from));
        if moved.is_empty() {
            continue;
        }
        attempt.rerouted.push((from.clone(), moved.len() as u64));
        let share = Unit {
            rerouted: true,
            ..unit
        };
        remaining.insert(share, moved);
        attempt.by_node.entry(to).or_default().push(share);
        if kept.is_empty() {
            remaining.remove(&unit);
            attempt
                .by_node
                .entry(from)
                .or_default()
                .retain(|u| *u != unit);
        } else {
            remaining.insert(unit, kept);
        }
    }
    attempt.by_node.retain(|_, units| !units.is_empty());
    Ok(attempt)
}

/// The rung a node's message for `units` is built at, given its link's `rung`: rerouted shares
/// came off a link at the low-weights rung or above, whose pairs already accept int8 rows, so a
/// message carrying them travels at least as int8 (a quarter of f32's bytes), and the calm link
/// they move to is not loaded with four times the bytes the saturated one would have carried.
pub(super) fn message_rung(rung: Rung, units: &[Unit]) -> Rung {
    if units.iter().any(|u| u.rerouted) {
        rung.max(Rung::Int8Wire)
    } else {
        rung
    }
}

/// Whether `pair` runs low on a link at `rung` under `thresholds`.
pub(super) fn runs_low(thresholds: Thresholds, pair: &Pair, rung: Rung) -> bool {
    thresholds.plan(pair.unimportance, rung) == PairPlan::Low
}
