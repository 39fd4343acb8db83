//! The JSON documents stored in etcd (see `keys` for where): node records, the placement and
//! gateway popularity stats. They are a public interface — operators read them with `etcdctl` —
//! so every field is named for people and every document is checked when read.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

/// An expert node's id: the name it registers under (`nodes/<id>`, checked as a key `Name`),
/// in its record and in the placement's assignments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    pub fn new(id: impl Into<String>) -> NodeId {
        NodeId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for NodeId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(id: &str) -> NodeId {
        NodeId(id.to_string())
    }
}

impl From<String> for NodeId {
    fn from(id: String) -> NodeId {
        NodeId(id)
    }
}

impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NodeId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// What an expert node can hold and move, as it reports at registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Bytes of shard files (both precisions of every expert) the node's RAM disk may hold: the
    /// bound the planner respects.
    pub ram_disk_bytes: u64,
    /// Bytes of host memory for resident experts (0 = no limit).
    pub host_memory_bytes: u64,
    /// Bytes of GPU memory for the expert cache (0 on the CPU backend).
    pub gpu_bytes: u64,
    /// Measured network bandwidth of the node's link, bytes per second (0 = not measured).
    pub link_bytes_per_second: u64,
}

/// An expert node as registered under `nodes/<id>`, under the node's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    /// `host:port` gateways dial for `moe.expert.v1.ExpertService`.
    pub address: String,
    /// `cpu` or `cuda`.
    pub backend: String,
    /// The node's precision pair, e.g. `f16+q4`.
    pub precisions: String,
    pub capacity: Capacity,
    /// The placement epoch whose experts the node has loaded (0 before the first): gateways
    /// count a node as serving a placement once this reaches its epoch, for every expert it
    /// assigns the node but those listed in `unloadable`.
    #[serde(default)]
    pub epoch: u64,
    /// Experts the placement assigned that the node could not load, by cause (absent when
    /// none): the node keeps retrying them, and the coordinator places them elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unloadable: Vec<LoadFailure>,
}

/// Experts a node could not load for one cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFailure {
    /// What went wrong, e.g. `/dev/shm/moe/node-0: No space left on device (os error 28)`.
    pub cause: String,
    /// The node's shard directory had no room: it takes no more experts until it reports room
    /// again (the record no longer says so).
    #[serde(default)]
    pub no_room: bool,
    /// The (layer, expert) pairs, in order.
    pub experts: Vec<(u32, u32)>,
}

/// Which nodes serve one (layer, expert).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub layer: u32,
    pub expert: u32,
    /// Node ids, the first the preferred one; never empty in a valid placement.
    pub nodes: Vec<NodeId>,
}

/// The placement document under `placement`: every (layer, expert) of the model's MoE layers
/// with the nodes that serve it. `epoch` grows by one with every placement written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub epoch: u64,
    pub model: String,
    /// Decoder layers of the model (MoE or not).
    pub layers: u32,
    pub experts_per_layer: u32,
    pub assignments: Vec<Assignment>,
}

/// Tokens routed to one (layer, expert) in a gateway's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertCount {
    pub layer: u32,
    pub expert: u32,
    pub tokens: u64,
}

/// A gateway's popularity report under `stats/<gateway_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStats {
    pub gateway: String,
    /// Length of the window the counts cover.
    pub window_seconds: u64,
    pub counts: Vec<ExpertCount>,
}

/// Why a stored document was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("{what} is not valid JSON of the expected shape: {message}")]
    Json { what: &'static str, message: String },
    #[error("placement: {0}")]
    Placement(String),
}

fn from_json<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, RecordError> {
    serde_json::from_slice(bytes).map_err(|e| RecordError::Json {
        what,
        message: e.to_string(),
    })
}

impl NodeRecord {
    /// Node `id` at `address` as it first registers: the CPU backend, the default precision
    /// pair (`f16+q4`), no capacity reported, no placement loaded. Set the rest with struct
    /// update syntax.
    pub fn new(id: impl Into<NodeId>, address: impl Into<String>) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            address: address.into(),
            backend: "cpu".into(),
            precisions: "f16+q4".into(),
            capacity: Capacity::default(),
            epoch: 0,
            unloadable: Vec::new(),
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<NodeRecord, RecordError> {
        from_json("node record", bytes)
    }

    /// Why the node could not load (layer, expert), when it could not.
    pub fn load_failure(&self, layer: u32, expert: u32) -> Option<&LoadFailure> {
        self.unloadable
            .iter()
            .find(|f| f.experts.contains(&(layer, expert)))
    }

    /// Whether the node serves (layer, expert) as `placement` assigns it: it has loaded the
    /// placement's epoch and the expert is not among those it could not load. (Whether the
    /// placement assigns the expert to this node is the caller's question.)
    pub fn has_loaded(&self, placement: &Placement, layer: u32, expert: u32) -> bool {
        self.has_reached(placement) && self.load_failure(layer, expert).is_none()
    }

    /// Whether the node has taken `placement`'s epoch (or a newer one): it has loaded every
    /// expert of it that it could.
    pub fn has_reached(&self, placement: &Placement) -> bool {
        self.epoch >= placement.epoch
    }

    /// Whether the node reported its shard directory full.
    pub fn no_room(&self) -> bool {
        self.unloadable.iter().any(|f| f.no_room)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a node record serializes")
    }
}

impl GatewayStats {
    pub fn from_json(bytes: &[u8]) -> Result<GatewayStats, RecordError> {
        from_json("gateway stats", bytes)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("gateway stats serialize")
    }
}

impl Placement {
    /// Reads and checks a placement: assignments within the model's shape, each (layer, expert)
    /// once, each with at least one node.
    pub fn from_json(bytes: &[u8]) -> Result<Placement, RecordError> {
        let placement: Placement = from_json("placement", bytes)?;
        placement.check()?;
        Ok(placement)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a placement serializes")
    }

    fn check(&self) -> Result<(), RecordError> {
        let mut seen = std::collections::HashSet::new();
        for a in &self.assignments {
            if a.layer >= self.layers || a.expert >= self.experts_per_layer {
                return Err(RecordError::Placement(format!(
                    "layer {} expert {} is outside {} layers x {} experts",
                    a.layer, a.expert, self.layers, self.experts_per_layer
                )));
            }
            if !seen.insert((a.layer, a.expert)) {
                return Err(RecordError::Placement(format!(
                    "layer {} expert {} is assigned twice",
                    a.layer, a.expert
                )));
            }
            if a.nodes.is_empty() {
                return Err(RecordError::Placement(format!(
                    "layer {} expert {} has no node",
                    a.layer, a.expert
                )));
            }
        }
        Ok(())
    }

    /// The nodes serving (layer, expert), preferred first; empty when unassigned.
    pub fn nodes(&self, layer: u32, expert: u32) -> &[NodeId] {
        self.assignments
            .iter()
            .find(|a| a.layer == layer && a.expert == expert)
            .map_or(&[], |a| a.nodes.as_slice())
    }

    /// Every (layer, expert) `node` serves.
    pub fn experts_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = (u32, u32)> + 'a {
        self.assignments
            .iter()
            .filter(move |a| a.nodes.iter().any(|n| n == node))
            .map(|a| (a.layer, a.expert))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement() -> Placement {
        Placement {
            epoch: 3,
            model: "mixtral-small".into(),
            layers: 2,
            experts_per_layer: 2,
            assignments: vec![
                Assignment {
                    layer: 0,
                    expert: 0,
                    nodes: vec!["a".into(), "b".into()],
                },
                Assignment {
                    layer: 1,
                    expert: 1,
                    nodes: vec!["b".into()],
                },
            ],
        }
    }

    #[test]
    fn documents_round_trip_and_keep_their_field_names() {
        let p = placement();
        assert_eq!(Placement::from_json(&p.to_json()).unwrap(), p);
        let text = String::from_utf8(p.to_json()).unwrap();
        for field in [
            "\"epoch\"",
            "\"experts_per_layer\"",
            "\"assignments\"",
            "\"nodes\"",
        ] {
            assert!(text.contains(field), "{text}");
        }
        let node = NodeRecord {
            id: "node-a".into(),
            address: "10.0.0.5:50061".into(),
            backend: "cpu".into(),
            precisions: "f16+q4".into(),
            capacity: Capacity {
                ram_disk_bytes: 1 << 30,
                host_memory_bytes: 0,
                gpu_bytes: 0,
                link_bytes_per_second: 1_250_000_000,
            },
            epoch: 4,
            unloadable: Vec::new(),
        };
        assert_eq!(NodeRecord::from_json(&node.to_json()).unwrap(), node);
        assert!(
            !String::from_utf8(node.to_json())
                .unwrap()
                .contains("unloadable")
        );
        let full = NodeRecord {
            unloadable: vec![LoadFailure {
                cause: "/dev/shm/x: No space left on device (os error 28)".into(),
                no_room: true,
                experts: vec![(0, 1), (1, 0)],
            }],
            ..node.clone()
        };
        assert_eq!(NodeRecord::from_json(&full.to_json()).unwrap(), full);
        let at_epoch = Placement {
            epoch: 4,
            ..p.clone()
        };
        assert!(node.has_loaded(&at_epoch, 0, 1));
        assert!(!full.has_loaded(&at_epoch, 0, 1) && full.has_loaded(&at_epoch, 0, 0));
        assert!(!node.has_loaded(
            &Placement {
                epoch: 5,
                ..p.clone()
            },
            0,
            0
        ));
        assert!(full.no_room() && !node.no_room());
        assert!(full.load_failure(1, 0).unwrap().cause.contains("No space"));
        let stats = GatewayStats {
            gateway: "gw-1".into(),
            window_seconds: 60,
            counts: vec![ExpertCount {
                layer: 0,
                expert: 1,
                tokens: 42,
            }],
        };
        assert_eq!(GatewayStats::from_json(&stats.to_json()).unwrap(), stats);
        assert_eq!(p.nodes(0, 0), ["a", "b"]);
        assert!(p.nodes(0, 1).is_empty());
        assert_eq!(p.experts_of("b").collect::<Vec<_>>(), [(0, 0), (1, 1)]);
    }

    #[test]
    fn malformed_placements_are_refused() {
        assert!(matches!(
            Placement::from_json(b"{\"epoch\": 1}"),
            Err(RecordError::Json { .. })
        ));
        let mut twice = placement();
        twice.assignments.push(twice.assignments[0].clone());
        let mut outside = placement();
        outside.assignments[0].expert = 2;
        let mut empty = placement();
        empty.assignments[1].nodes.clear();
        for bad in [twice, outside, empty] {
            assert!(matches!(
                Placement::from_json(&bad.to_json()),
                Err(RecordError::Placement(_))
            ));
        }
    }
}
