//! Whether the gateway can serve: every expert of the placement has a node that has loaded it
//! (`NodeRecord::has_loaded`). When some have none, what is missing is said per expert with each
//! of its nodes' state as their records tell it — still loading, could not load it (with the
//! node's cause), not registered — and an expert whose every node could not load it is
//! *unservable*: no wait will help until an operator or the coordinator acts. Pure: computed from
//! the placement and the node records.

use moe_state::records::{NodeId, NodeRecord, Placement};
use moe_state::watch::Snapshot;
use serde_json::{Value, json};

/// How many missing experts the readiness body lists in full.
const LISTED: usize = 16;

/// Where one node stands with an expert the placement assigns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// Its record has not reached the placement's epoch yet.
    Loading,
    /// It reported it could not load the expert, with why.
    Unloadable(String),
    /// It has no record (its lease lapsed, or it never registered).
    Unregistered,
}

impl NodeState {
    fn describe(&self, node: &str) -> String {
        match self {
            NodeState::Loading => format!("{node} is still loading it"),
            NodeState::Unloadable(cause) => format!("{node} could not load it: {cause}"),
            NodeState::Unregistered => format!("{node} is not registered"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            NodeState::Loading => "loading",
            NodeState::Unloadable(_) => "unloadable",
            NodeState::Unregistered => "unregistered",
        }
    }
}

/// An expert of the placement that no node has loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub layer: u32,
    pub expert: u32,
    /// Its nodes in the placement's order, each with its state.
    pub nodes: Vec<(String, NodeState)>,
}

impl Missing {
    /// Whether every node of the expert could not load it.
    pub fn unservable(&self) -> bool {
        self.nodes
            .iter()
            .all(|(_, s)| matches!(s, NodeState::Unloadable(_)))
    }

    /// One line: the expert and its nodes' states.
    pub fn describe(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|(n, s)| s.describe(n)).collect();
        format!(
            "layer {} expert {}: {}",
            self.layer,
            self.expert,
            nodes.join("; ")
        )
    }
}

/// The gateway's readiness: the placement's epoch and experts, and those without a serving node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// `None` before any placement is known.
    pub epoch: Option<u64>,
    pub experts: usize,
    pub missing: Vec<Missing>,
}

impl Readiness {
    /// Readiness under `placement` with the nodes' `records`.
    pub fn of(placement: Option<&Placement>, records: &Snapshot<NodeRecord>) -> Readiness {
        let Some(p) = placement else {
            return Readiness {
                epoch: None,
                experts: 0,
                missing: Vec::new(),
            };
        };
        let missing = p
            .assignments
            .iter()
            .filter(|a| {
                let serving = |n: &NodeId| {
                    records
                        .get(n)
                        .is_some_and(|r| r.has_loaded(p, a.layer, a.expert))
                };
                !a.nodes.iter().any(serving)
            })
            .map(|a| Missing {
                layer: a.layer,
                expert: a.expert,
                nodes: a
                    .nodes
                    .iter()
                    .map(|n| (n.to_string(), state(records.get(n), a.layer, a.expert)))
                    .collect(),
            })
            .collect();
        Readiness {
            epoch: Some(p.epoch),
            experts: p.assignments.len(),
            missing,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.epoch.is_some() && self.experts > 0 && self.missing.is_empty()
    }

    /// The missing experts no wait will bring (every node of theirs could not load them).
    pub fn unservable(&self) -> impl Iterator<Item = &Missing> {
        self.missing.iter().filter(|m| m.unservable())
    }

    /// One line for people: ready, or what is missing (the first expert's nodes in full).
    pub fn summary(&self) -> String {
        let Some(epoch) = self.epoch else {
            return "no placement is known yet".to_string();
        };
        if self.experts == 0 {
            return format!("placement epoch {epoch} assigns no experts");
        }
        let Some(first) = self.unservable().next().or_else(|| self.missing.first()) else {
            return format!("ready: every expert of placement epoch {epoch} has a serving node");
        };
        let unservable = self.unservable().count();
        format!(
            "{} of {} experts of placement epoch {epoch} have no serving node ({unservable} no node can load); {}",
            self.missing.len(),
            self.experts,
            first.describe()
        )
    }

    /// The details `/health/ready` returns: the epoch, counts, and the first missing experts
    /// (unservable ones first) with each node's state.
    pub fn to_json(&self) -> Value {
        let mut listed: Vec<&Missing> = self.unservable().collect();
        listed.extend(self.missing.iter().filter(|m| !m.unservable()));
        let missing: Vec<Value> = listed
            .into_iter()
            .take(LISTED)
            .map(|m| {
                let nodes: Vec<Value> = m
                    .nodes
                    .iter()
                    .map(|(node, s)| match s {
                        NodeState::Unloadable(cause) => {
                            json!({"node": node, "state": s.name(), "cause": cause})
                        }
                        _ => json!({"node": node, "state": s.name()}),
                    })
                    .collect();
                json!({"layer": m.layer, "expert": m.expert, "nodes": nodes})
            })
            .collect();
        json!({
            "ready": self.is_ready(),
            "placement_epoch": self.epoch,
            "experts": self.experts,
            "missing_count": self.missing.len(),
            "unservable_count": self.unservable().count(),
            "missing": missing,
        })
    }
}

fn state(record: Option<&NodeRecord>, layer: u32, expert: u32) -> NodeState {
    match record {
        None => NodeState::Unregistered,
        Some(r) => match r.load_failure(layer, expert) {
            Some(f) => NodeState::Unloadable(f.cause.clone()),
            None => NodeState::Loading,
        },
    }
}

/// Why no node can serve (layer, expert) of `placement`, when every node the placement names
/// for it reported it could not load it; `None` while one may still serve or load it.
pub fn unavailable(
    placement: &Placement,
    records: &Snapshot<NodeRecord>,
    layer: u32,
    expert: u32,
) -> Option<String> {
    let nodes = placement.nodes(layer, expert);
    let causes: Vec<String> = nodes
        .iter()
        .map(|n| {
            let failure = records.get(n)?.load_failure(layer, expert)?;
            Some(NodeState::Unloadable(failure.cause.clone()).describe(n))
        })
        .collect::<Option<_>>()?;
    (!causes.is_empty()).then(|| causes.join("; "))
}

#[cfg(test)]
mod tests {
    use moe_state::records::{Assignment, Capacity, LoadFailure};

    use super::*;

    fn placement() -> Placement {
        let assignment = |expert: u32, nodes: &[&str]| Assignment {
            layer: 0,
            expert,
            nodes: nodes.iter().map(|&n| n.into()).collect(),
        };
        Placement {
            epoch: 2,
            model: "m".into(),
            layers: 1,
            experts_per_layer: 3,
            assignments: vec![
                assignment(0, &["a", "b"]),
                assignment(1, &["a"]),
                assignment(2, &["b", "c"]),
            ],
        }
    }

    fn record(id: &str, epoch: u64, unloadable: &[(u32, u32)]) -> NodeRecord {
        NodeRecord {
            capacity: Capacity {
                ram_disk_bytes: 1 << 20,
                ..Capacity::default()
            },
            epoch,
            unloadable: if unloadable.is_empty() {
                Vec::new()
            } else {
                vec![LoadFailure {
                    cause: "/dev/shm/x: No space left on device (os error 28)".into(),
                    no_room: true,
                    experts: unloadable.to_vec(),
                }]
            },
            ..NodeRecord::new(id, "127.0.0.1:1")
        }
    }

    fn records(list: Vec<NodeRecord>) -> Snapshot<NodeRecord> {
        Snapshot {
            revision: 1,
            entries: list.into_iter().map(|r| (r.id.to_string(), r)).collect(),
        }
    }

    #[test]
    fn ready_when_every_expert_has_a_node_that_loaded_it() {
        let p = placement();
        let all = records(vec![record("a", 2, &[]), record("b", 2, &[])]);
        let r = Readiness::of(Some(&p), &all);
        assert!(r.is_ready(), "{}", r.summary());
        assert_eq!(r.to_json()["ready"], true);
        assert!(!Readiness::of(None, &all).is_ready());
    }

    #[test]
    fn what_is_missing_is_said_with_each_nodes_cause() {
        let p = placement();
        // a could not load expert 1 (its only node) nor 0; b still loads epoch 2; c is gone.
        let nodes = records(vec![record("a", 2, &[(0, 0), (0, 1)]), record("b", 1, &[])]);
        let r = Readiness::of(Some(&p), &nodes);
        assert!(!r.is_ready());
        let missing: Vec<(u32, bool)> = r
            .missing
            .iter()
            .map(|m| (m.expert, m.unservable()))
            .collect();
        assert_eq!(missing, [(0, false), (1, true), (2, false)]);
        let summary = r.summary();
        assert!(summary.starts_with("3 of 3 experts"), "{summary}");
        assert!(
            summary.contains("layer 0 expert 1: a could not load it: /dev/shm/x: No space"),
            "{summary}"
        );
        let body = r.to_json();
        assert_eq!(
            (
                body["missing_count"].clone(),
                body["unservable_count"].clone()
            ),
            (json!(3), json!(1))
        );
        assert_eq!(body["missing"][0]["expert"], 1);
        assert_eq!(body["missing"][0]["nodes"][0]["state"], "unloadable");
        assert_eq!(
            body["missing"][2]["nodes"][1],
            json!({"node": "c", "state": "unregistered"})
        );
        assert!(
            unavailable(&p, &nodes, 0, 1)
                .unwrap()
                .contains("No space left")
        );
        assert_eq!(unavailable(&p, &nodes, 0, 0), None, "b may still load it");
    }
}
