//! Following the placement the coordinator writes to etcd. For each newer epoch the node loads
//! the experts newly assigned to it (from their shards on the RAM disk, or quantized from the
//! checkpoint) before it takes the new epoch, so that requests routed by that placement find
//! them; experts no longer assigned are released after a grace period, so that work routed by the
//! previous placement finishes. Requests for experts the node does not hold are refused with
//! FAILED_PRECONDITION and the gateway retries a replica.
//!
//! An assigned expert the node cannot load (its RAM disk full, a broken tensor) is not held: the
//! node takes the epoch for the others and publishes the ones it could not load with their cause
//! in its record (gateways route them elsewhere, the coordinator re-places them), retries them
//! with backoff (1 s doubling to 60 s), and answers NOT_SERVING while it holds none of its
//! assignment. When the directory was full, shards it no longer holds are deleted to make room,
//! and the record says so until there is room for another expert again.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use moe_proto::expert::expert_service_server::ExpertServiceServer;
use moe_state::records::{LoadFailure, Placement};
use moe_state::watch::Snapshot;
use tokio::sync::{Mutex, watch};
use tonic_health::server::HealthReporter;

use crate::epoch::Epoch;
use crate::residency::Residency;
use crate::server::{Node, NodeService};
use crate::shard::{self, ShardKey};
use crate::store::{self, Failed};
use crate::unloadable::Backoff;
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

/// What the node's record says of its experts: the placement epoch it has loaded, and what of
/// that placement's assignment it could not load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    pub epoch: u64,
    pub unloadable: Vec<LoadFailure>,
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
    /// The node's standing, published for its record.
    standing: watch::Sender<Standing>,
    health: HealthReporter,
}

impl Follower {
    pub fn new(
        node: Arc<Node>,
        residency: Arc<Residency>,
        model: PathBuf,
        (node_id, pair): (String, PrecisionPair),
        grace: Duration,
        standing: watch::Sender<Standing>,
        health: HealthReporter,
    ) -> Arc<Follower> {
        Arc::new(Follower {
            node,
            residency,
            model,
            node_id,
            pair,
            grace,
            changing: Mutex::new(()),
            standing,
            health,
        })
    }

    /// Applies every newer placement `placements` publishes until the channel closes, and
    /// meanwhile retries what the node could not load.
    pub async fn run(self: Arc<Self>, mut placements: watch::Receiver<Snapshot<Placement>>) {
        let mut backoff = Backoff::new();
        loop {
            let latest = placements.borrow_and_update().single().cloned();
            if let Some(placement) = latest {
                self.apply(placement, placements.clone()).await;
            }
            loop {
                let pending = !self.node.unloadable().is_empty();
                let wait = backoff.wait();
                tokio::select! {
                    changed = placements.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        backoff.reset();
                        break;
                    }
                    () = tokio::time::sleep(wait), if pending => {
                        let latest = placements.borrow().single().cloned();
                        if let Some(placement) = latest
                            && self.retry(&placement).await
                        {
                            backoff.reset();
                        }
                    }
                }
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
        let wanted = {
            let _changing = self.changing.lock().await;
            let wanted = change(&placement, &self.node_id, self.pair, self.held());
            let failed = self.load(&wanted.add).await;
            self.account(&placement, &failed).await;
            wanted
        };
        self.node.set_placement_epoch(Epoch(placement.epoch));
        self.publish();
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

    /// Tries again to load what `placement` assigns and the node does not hold, after making room
    /// when the directory was full; whether anything changed.
    async fn retry(&self, placement: &Placement) -> bool {
        let _changing = self.changing.lock().await;
        let before = self.node.unloadable();
        if before.no_room() {
            self.make_room();
        }
        let wanted = change(placement, &self.node_id, self.pair, self.held());
        let failed = self.load(&wanted.add).await;
        self.account(placement, &failed).await;
        let mut after = self.node.unloadable();
        if after.no_room() && !failed.iter().any(|f| f.no_room) && self.has_room() {
            after.room_returned();
            self.node
                .set_unloadable(after.clone(), assigned(placement, &self.node_id).len());
        }
        let changed = after != before;
        if changed {
            tracing::info!(
                still_unloadable = after.experts().count(),
                no_room = after.no_room(),
                "retried the experts the node could not load"
            );
            self.publish();
        }
        changed
    }

    /// Every (layer, expert, format) the node holds.
    fn held(&self) -> Vec<ShardKey> {
        self.residency.catalog().experts().map(|(k, _)| k).collect()
    }

    /// Checks or builds the shards of `keys` off the async threads and starts holding those it
    /// could; the ones it could not, with why.
    async fn load(&self, keys: &[ShardKey]) -> Vec<Failed> {
        if keys.is_empty() {
            return Vec::new();
        }
        let (catalog, model, owned) = (self.residency.catalog(), self.model.clone(), keys.to_vec());
        let whole_failure = |cause: String| -> Vec<Failed> {
            let failed = keys.iter().map(|&key| Failed {
                key,
                cause: cause.clone(),
                no_room: false,
            });
            failed.collect()
        };
        match tokio::task::spawn_blocking(move || catalog.extend(&model, &owned)).await {
            Ok(Ok((grown, report))) => {
                tracing::info!(
                    mapped = report.mapped,
                    built = report.built,
                    failed = report.failed.len(),
                    seconds = report.elapsed.as_secs_f64(),
                    "loaded newly assigned experts"
                );
                if let Some(first) = report.failed.first() {
                    tracing::error!(
                        shards = report.failed.len(),
                        cause = %first.cause,
                        "cannot load some of the experts the placement assigns"
                    );
                }
                self.residency.set_catalog(grown);
                report.failed
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot load the experts the placement assigns");
                whole_failure(e.to_string())
            }
            Err(e) => {
                tracing::error!(error = %e, "the loading task failed");
                whole_failure(format!("the loading task failed: {e}"))
            }
        }
    }

    /// Records what the node could not load of `placement`'s assignment, and answers
    /// NOT_SERVING while it holds none of it.
    async fn account(&self, placement: &Placement, failed: &[Failed]) {
        let assigned = assigned(placement, &self.node_id);
        let catalog = self.residency.catalog();
        let held = |(layer, expert): (u32, u32)| {
            store::shard_keys(&[(layer, expert)], self.pair)
                .into_iter()
                .all(|k| catalog.contains(k))
        };
        let mut unloadable = self.node.unloadable();
        unloadable.update(&assigned, held, failed);
        self.node.set_unloadable(unloadable, assigned.len());
        match self.node.not_serving() {
            Some(reason) => {
                tracing::error!(%reason, "not serving");
                self.health
                    .set_not_serving::<ExpertServiceServer<NodeService>>()
                    .await;
            }
            None => {
                self.health
                    .set_serving::<ExpertServiceServer<NodeService>>()
                    .await
            }
        }
    }

    /// Deletes the shard files of experts the node no longer holds.
    fn make_room(&self) {
        let catalog = self.residency.catalog();
        let held: BTreeSet<String> = catalog.experts().map(|(k, _)| k.file_name()).collect();
        let freed = shard::reclaim(catalog.dir(), |name| held.contains(name));
        if freed > 0 {
            tracing::info!(
                freed,
                "deleted shards of experts no longer held to make room"
            );
        }
    }

    /// Whether the shard directory has room for one more expert at both formats.
    fn has_room(&self) -> bool {
        let catalog = self.residency.catalog();
        let (hidden, intermediate) = (catalog.hidden(), catalog.intermediate());
        let expert: u64 = store::shard_keys(&[(0, 0)], self.pair)
            .iter()
            .map(|k| {
                (shard::payload_bytes(k.format, hidden, intermediate) + shard::HEADER_BYTES) as u64
            })
            .sum();
        rustix::fs::statvfs(catalog.dir())
            .is_ok_and(|s| s.f_bavail.saturating_mul(s.f_frsize) > expert)
    }

    /// Publishes the node's epoch and what it could not load, for its record.
    fn publish(&self) {
        self.standing.send_replace(Standing {
            epoch: self.node.placement_epoch().0,
            unloadable: self.node.unloadable().records(),
        });
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

/// The (layer, expert) pairs `placement` assigns to `node`.
fn assigned(placement: &Placement, node: &str) -> BTreeSet<(u32, u32)> {
    placement.experts_of(node).collect()
}

#[cfg(test)]
mod tests {
    use moe_kernels::Format;
    use moe_state::records::Assignment;

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
