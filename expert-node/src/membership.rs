//! The node's place in a cluster (with `--etcd`): its record registered under a lease, kept
//! alive by a thread of its own; the placement followed (see `follower`), the record updated
//! with each epoch whose experts are loaded (gateways route to the node from then on); the
//! registration renewed when its lease is lost; and revoked when the node drains, so that the
//! coordinator moves its experts at once.
//!
//! A lost lease does not stop the node serving. While etcd cannot be reached nobody can change
//! the placement, so the experts the node holds are still the ones gateways route to it; once
//! etcd answers, the node registers again and follows whatever the placement says by then, and
//! the epoch rule refuses work routed by a placement older than the one it follows.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use moe_coordinator::etcd::{Etcd, EtcdError};
use moe_coordinator::keys::ClusterKeys;
use moe_coordinator::lease::LeaseState;
use moe_coordinator::records::{Capacity, NodeRecord, Placement};
use moe_coordinator::registry::Registration;
use moe_coordinator::watch::Watcher;
use tokio::sync::{oneshot, watch};

use crate::config::Config;
use crate::follower::Follower;
use crate::residency::Residency;
use crate::server::Node;

/// A joined node; [`Membership::leave`] deregisters it.
pub struct Membership {
    leave: oneshot::Sender<oneshot::Sender<Result<(), EtcdError>>>,
    _placements: Watcher<Placement>,
}

/// Bytes of the filesystem holding `dir`: the RAM disk's size.
fn filesystem_bytes(dir: &Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(dir)?;
    Ok(stats.f_blocks.saturating_mul(stats.f_frsize))
}

/// The record the node registers: where to reach it and what it can hold.
pub fn record(
    config: &Config,
    address: SocketAddr,
    backend: &str,
    gpu_bytes: u64,
) -> std::io::Result<NodeRecord> {
    let pair = config.precisions.0;
    let ram_disk_bytes = match config.ram_disk_bytes {
        0 => filesystem_bytes(&config.shard_dir)?,
        n => n,
    };
    Ok(NodeRecord {
        id: config.node_id.clone(),
        address: config.advertise.unwrap_or(address).to_string(),
        backend: backend.to_string(),
        precisions: format!("{}+{}", pair.high, pair.low),
        capacity: Capacity {
            ram_disk_bytes,
            host_memory_bytes: config.host_memory,
            gpu_bytes,
            link_bytes_per_second: 0,
        },
        epoch: 0,
    })
}

/// Registers `record` in the cluster `config` names and follows the placement from now on.
pub async fn join(
    config: &Config,
    record: NodeRecord,
    node: Arc<Node>,
    residency: Arc<Residency>,
) -> anyhow::Result<Membership> {
    let keys = ClusterKeys::new(&config.cluster).context("--cluster")?;
    let timeout = Duration::from_secs(config.etcd_timeout_seconds);
    let tls = config.etcd_tls().map_err(anyhow::Error::msg)?;
    let etcd = Etcd::connect_patiently(&config.etcd, tls, timeout).await;
    let ttl = Duration::from_secs(config.lease_ttl_seconds);
    let registration = Registration::register(&etcd, &keys, record, ttl)
        .await
        .context("registering in etcd")?;
    let placements = Watcher::placement(&etcd, &keys)
        .await
        .context("watching the placement")?;
    let (loaded, epochs) = watch::channel(0);
    let follower = Follower::new(
        node,
        residency,
        config.model.clone(),
        config.node_id.clone(),
        config.precisions.0,
        Duration::from_secs(config.release_grace_seconds),
        loaded,
    );
    tokio::spawn(follower.run(placements.subscribe()));
    let (leave, left) = oneshot::channel();
    tokio::spawn(keep_registered(registration, epochs, left));
    tracing::info!(cluster = %config.cluster, node = %config.node_id, "joined the cluster");
    Ok(Membership {
        leave,
        _placements: placements,
    })
}

/// Registers again whenever the lease is lost, records each placement epoch the node has
/// loaded, until asked to leave; then deregisters.
async fn keep_registered(
    mut registration: Registration,
    mut epochs: watch::Receiver<u64>,
    mut leave: oneshot::Receiver<oneshot::Sender<Result<(), EtcdError>>>,
) {
    let mut state = registration.state();
    loop {
        tokio::select! {
            changed = epochs.changed(), if !epochs.is_closed() => {
                if changed.is_ok() {
                    let mut record = registration.record().clone();
                    record.epoch = *epochs.borrow_and_update();
                    if let Err(e) = registration.update(record).await {
                        tracing::warn!(error = %e, "recording the loaded epoch failed");
                    }
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                let lost = matches!(*state.borrow_and_update(), LeaseState::Lost { .. });
                if lost {
                    tracing::warn!("the node's lease is lost; registering again");
                    let mut wait = Duration::from_millis(200);
                    while let Err(e) = registration.reregister().await {
                        tracing::warn!(error = %e, "registering again failed; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                    tracing::info!("registered again");
                }
            }
            reply = &mut leave => {
                let left = registration.deregister().await;
                if let Ok(reply) = reply {
                    let _ = reply.send(left);
                }
                return;
            }
        }
    }
}

impl Membership {
    /// Revokes the registration: the node's record disappears and the coordinator re-plans.
    pub async fn leave(self) -> Result<(), EtcdError> {
        let (reply, replied) = oneshot::channel();
        if self.leave.send(reply).is_err() {
            return Ok(());
        }
        replied.await.unwrap_or(Ok(()))
    }
}
