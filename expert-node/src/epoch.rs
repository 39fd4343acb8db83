//! The placement epoch: the version of the expert placement a gateway routed a request by, and the
//! rule a node applies to it. The node's own epoch is 0 ("no placement") until it is set through
//! `Node::set_placement_epoch`; the coordinator sets it from the placement it watches.

use std::fmt;

/// A placement version; 0 means "no placement".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl Epoch {
    /// Whether a node at epoch `self` serves work routed by `request`: anything not older than its
    /// own. A newer epoch is served, because gateways may learn of a placement before the node does
    /// and whether the node holds each expert is checked on its own. So epoch 0 is served only
    /// while the node's own epoch is 0.
    pub fn admits(self, request: Epoch) -> Result<(), StaleEpoch> {
        if request < self {
            Err(StaleEpoch {
                request,
                node: self,
            })
        } else {
            Ok(())
        }
    }
}

/// Work routed by a placement older than the node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "placement epoch {request} is older than this node's epoch {node}; refresh the placement and route again"
)]
pub struct StaleEpoch {
    pub request: Epoch,
    pub node: Epoch,
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_epochs_are_refused_and_zero_only_without_placement() {
        assert!(Epoch(0).admits(Epoch(0)).is_ok());
        assert!(Epoch(0).admits(Epoch(7)).is_ok());
        assert!(Epoch(5).admits(Epoch(5)).is_ok());
        assert!(Epoch(5).admits(Epoch(6)).is_ok());
        assert_eq!(
            Epoch(5).admits(Epoch(4)),
            Err(StaleEpoch {
                request: Epoch(4),
                node: Epoch(5)
            })
        );
        let refused = Epoch(5).admits(Epoch(0)).unwrap_err().to_string();
        assert!(
            refused.contains("epoch 0") && refused.contains("epoch 5"),
            "{refused}"
        );
    }
}
