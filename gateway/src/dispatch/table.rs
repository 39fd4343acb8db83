//! The placement as the dispatcher reads it: each (layer, expert)'s replicas found by an index
//! built once per epoch, instead of a scan of every assignment per expert per layer.

use std::collections::{BTreeSet, HashMap};

use moe_state::records::{NodeId, Placement};

/// Where a placement puts each expert.
pub(super) trait Replicas {
    /// The placement itself (its epoch, for `NodeRecord::has_loaded`).
    fn placement(&self) -> &Placement;

    /// The nodes assigned (layer, expert), the primary first.
    fn nodes(&self, layer: u32, expert: u32) -> &[NodeId];
}

impl Replicas for Placement {
    fn placement(&self) -> &Placement {
        self
    }

    fn nodes(&self, layer: u32, expert: u32) -> &[NodeId] {
        Placement::nodes(self, layer, expert)
    }
}

/// A placement with its replicas indexed by (layer, expert).
#[derive(Debug)]
pub(super) struct RoutingTable {
    placement: Placement,
    /// (layer, expert) → its assignment's index in the placement.
    index: HashMap<(u32, u32), usize>,
    /// Every node the placement assigns an expert.
    holders: BTreeSet<NodeId>,
}

impl RoutingTable {
    pub(super) fn new(placement: Placement) -> RoutingTable {
        let index = placement
            .assignments
            .iter()
            .enumerate()
            .map(|(i, a)| ((a.layer, a.expert), i))
            .collect();
        let holders = placement
            .assignments
            .iter()
            .flat_map(|a| a.nodes.iter().cloned())
            .collect();
        RoutingTable {
            placement,
            index,
            holders,
        }
    }

    /// Whether the placement assigns `node` any expert.
    pub(super) fn names(&self, node: &NodeId) -> bool {
        self.holders.contains(node)
    }

    pub(super) fn epoch(&self) -> u64 {
        self.placement.epoch
    }
}

impl Replicas for RoutingTable {
    fn placement(&self) -> &Placement {
        &self.placement
    }

    fn nodes(&self, layer: u32, expert: u32) -> &[NodeId] {
        self.index
            .get(&(layer, expert))
            .map_or(&[], |&i| self.placement.assignments[i].nodes.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use moe_state::records::Assignment;

    use super::*;

    #[test]
    fn the_index_finds_what_a_scan_finds() {
        let assignments = (0..3)
            .flat_map(|layer| {
                (0..4).map(move |expert| Assignment {
                    layer,
                    expert,
                    nodes: vec![format!("n{layer}{expert}").into(), "spare".into()],
                })
            })
            .collect();
        let placement = Placement {
            epoch: 7,
            model: "m".into(),
            layers: 3,
            experts_per_layer: 4,
            assignments,
        };
        let table = RoutingTable::new(placement.clone());
        for (layer, expert) in [(0, 0), (2, 3), (1, 2), (5, 0), (0, 9)] {
            assert_eq!(
                Replicas::nodes(&table, layer, expert),
                Replicas::nodes(&placement, layer, expert)
            );
        }
        assert_eq!((table.epoch(), table.placement().epoch), (7, 7));
        assert!(table.names(&"spare".into()) && table.names(&"n23".into()));
        assert!(!table.names(&"n30".into()));
    }
}
