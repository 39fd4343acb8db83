//! Following the placement the coordinator writes to etcd. For each newer epoch the node loads
//! the experts newly assigned to it (from their shards on the RAM disk, or quantized from the
//! checkpoint) before it takes the new epoch, so that requests routed by that placement find
//! them; experts no longer assigned are released after a grace period, so that work routed by the
//! previous placement finishes. Requests for experts the node does not hold are refused with
//! FAILED_PRECONDITION and the gateway retries a replica.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use moe_coordinator::records::Placement;
use moe_coordinator::watch::Snapshot;
use tokio::sync::{Mutex, watch};

use crate::epoch::Epoch;
use crate::residency::Residency;
use crate::server::Node;
use crate::shard::ShardKey;
use crate::store;
use crate::work::PrecisionPair;

/// What a placement asks of one node, against what the node holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    /// Assigned but not held: to load.
    pub add: Vec<ShardKey>,
    /// Held but not assigned: to release.
    pub release: Vec<ShardKey>,
}

/// The change `placement` asks of node `node` (both formats of `pair` per assigned expert).
pub fn change(
    placement: &Placement,
    node: &str,
    pair: PrecisionPair,
    held: impl IntoIterator<Item = ShardKey>,
) -> Change {
    let assigned: Vec<(u32, u32)> = placement.experts_of(node).collect();
    let wanted: BTreeSet<ShardKey> = store::shard_keys(&assigned, pair).into_iter().collect();
    let held: BTreeSet<ShardKey> = held.into_iter().collect();
    Change {
        add: wanted.difference(&held).copied().collect(),
        release: held.difference(&wanted).copied().collect(),
    }
}

/// Keeps a node's experts in line with the placement.
pub struct Follower {
    pub node: Arc<Node>,
    pub residency: Arc<Residency>,
    /// The checkpoint new experts are quantized from when their shards are missing.
    pub model: PathBuf,
    pub node_id: String,
    pub pair: PrecisionPair,
    /// How long released experts stay served.
    pub grace: Duration,
    /// Serialises catalog changes (loads and delayed releases).
    changing: Mutex<()>,
    /// The epoch whose experts are loaded, published for the node's record.
    loaded: watch::Sender<u64>,
}

impl Follower {
    pub fn new(
        node: Arc<Node>,
        residency: Arc<Residency>,
        model: PathBuf,
        node_id: String,
        pair: PrecisionPair,
        grace: Duration,
        loaded: watch::Sender<u64>,
    ) -> Arc<Follower> {
        Arc::new(Follower {
            node,
            residency,
            model,
            node_id,
            pair,
            grace,
            changing: Mutex::new(()),
            loaded,
        })
    }

    /// Applies every newer placement `placements` publishes until the channel closes.
    pub async fn run(self: Arc<Self>, mut placements: watch::Receiver<Snapshot<Placement>>) {
        loop {
            let latest = placements.borrow_and_update().single().cloned();
            if let Some(placement) = latest {
                self.apply(placement, placements.clone()).await;
            }
            if placements.changed().await.is_err() {
                return;
            }
        }
    }

    /// Loads what `placement` adds, takes its epoch, and schedules what it releases.
    async fn apply(
        self: &Arc<Self>,
        placement: Placement,
        placements: watch::Receiver<Snapshot<Placement>>,
    ) {
        if placement.epoch <= self.node.placement_epoch().0 {
            return;
        }
        let held = || {
            self.residency
                .catalog()
                .experts()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        let wanted = {
            let _changing = self.changing.lock().await;
            let wanted = change(&placement, &self.node_id, self.pair, held());
            if !wanted.add.is_empty() {
                self.load(&wanted.add).await;
            }
            wanted
        };
        self.node.set_placement_epoch(Epoch(placement.epoch));
        self.loaded.send_replace(placement.epoch);
        tracing::info!(
            epoch = placement.epoch,
            added = wanted.add.len(),
            releasing = wanted.release.len(),
            "following the placement"
        );
        if !wanted.release.is_empty() {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(this.grace).await;
                this.release(&wanted.release, &placements).await;
            });
        }
    }

    /// Checks or builds the shards of `keys` off the async threads and starts holding them.
    async fn load(&self, keys: &[ShardKey]) {
        let (catalog, model, keys) = (self.residency.catalog(), self.model.clone(), keys.to_vec());
        match tokio::task::spawn_blocking(move || catalog.extend(&model, &keys)).await {
            Ok(Ok((grown, report))) => {
                tracing::info!(
                    mapped = report.mapped,
                    built = report.built,
                    seconds = report.elapsed.as_secs_f64(),
                    "loaded newly assigned experts"
                );
                self.residency.set_catalog(grown);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot load the experts the placement assigns")
            }
            Err(e) => tracing::error!(error = %e, "the loading task failed"),
        }
    }

    /// Stops holding those of `keys` the latest placement still does not assign to this node.
    async fn release(&self, keys: &[ShardKey], placements: &watch::Receiver<Snapshot<Placement>>) {
        let _changing = self.changing.lock().await;
        let latest = placements.borrow().single().cloned();
        let release = match latest {
            Some(p) => change(&p, &self.node_id, self.pair, keys.iter().copied()).release,
            None => keys.to_vec(),
        };
        if release.is_empty() {
            return;
        }
        self.residency
            .set_catalog(self.residency.catalog().without(&release));
        tracing::info!(
            released = release.len(),
            "released experts no longer assigned"
        );
    }
}

#[cfg(test)]
mod tests {
    use moe_coordinator::records::Assignment;
    use moe_kernels::Format;

    use super::*;

    const PAIR: PrecisionPair = PrecisionPair {
        high: Format::F16,
        low: Format::Q4,
    };

    fn key(layer: u32, expert: u32, format: Format) -> ShardKey {
        ShardKey {
            layer,
            expert,
            format,
        }
    }

    #[test]
    fn a_change_adds_both_formats_of_new_experts_and_releases_the_rest() {
        let placement = Placement {
            epoch: 2,
            model: "m".into(),
            layers: 2,
            experts_per_layer: 4,
            assignments: vec![
                Assignment {
                    layer: 0,
                    expert: 1,
                    nodes: vec!["a".into(), "b".into()],
                },
                Assignment {
                    layer: 1,
                    expert: 3,
                    nodes: vec!["b".into()],
                },
            ],
        };
        let held = [
            key(0, 1, Format::F16),
            key(0, 1, Format::Q4),
            key(0, 2, Format::F16),
            key(0, 2, Format::Q4),
        ];
        let c = change(&placement, "b", PAIR, held);
        assert_eq!(c.add, [key(1, 3, Format::F16), key(1, 3, Format::Q4)]);
        assert_eq!(c.release, [key(0, 2, Format::F16), key(0, 2, Format::Q4)]);
        let none = change(&placement, "c", PAIR, []);
        assert_eq!(none, Change::default());
    }
}
