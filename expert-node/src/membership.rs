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
use moe_state::etcd::{Etcd, EtcdError};
use moe_state::keys::ClusterKeys;
use moe_state::lease::LeaseState;
use moe_state::records::{Capacity, NodeRecord, Placement};
use moe_state::registry::Registration;
use moe_state::watch::Watcher;
use tokio::sync::{oneshot, watch};
use tonic_health::server::HealthReporter;

use crate::config::Config;
use crate::follower::{Follower, Standing};
use crate::residency::Residency;
use crate::server::Node;
use crate::work::PrecisionPair;

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

/// The record the node registers: where to reach it and what it can hold. A `--ram-disk-bytes`
/// larger than the filesystem under the shard directory is registered as given, with a warning:
/// the experts that do not fit fail to load, and the node's record then says so (see
/// `follower`), which is how the coordinator learns the room the node really has.
pub fn record(
    config: &Config,
    pair: PrecisionPair,
    address: SocketAddr,
    (backend, gpu_bytes): (&str, u64),
) -> std::io::Result<NodeRecord> {
    let filesystem = filesystem_bytes(&config.shard_dir)?;
    let ram_disk_bytes = match config.ram_disk_bytes {
        0 => filesystem,
        n => {
            if n > filesystem {
                tracing::warn!(
                    ram_disk_bytes = n,
                    filesystem,
                    shard_dir = %config.shard_dir.display(),
                    "--ram-disk-bytes is larger than the filesystem under --shard-dir: what does not fit will fail to load"
                );
            }
            n
        }
    };
    let advertised = config.advertise.unwrap_or(address).to_string();
    Ok(NodeRecord {
        backend: backend.to_string(),
        precisions: pair.to_string(),
        capacity: Capacity {
            ram_disk_bytes,
            host_memory_bytes: config.host_memory,
            gpu_bytes,
            ..Capacity::default()
        },
        ..NodeRecord::new(config.node_id.clone(), advertised)
    })
}

/// Registers `record` in the cluster `config` names and follows the placement from now on,
/// reporting the node's health to `health`.
pub async fn join(
    (config, pair): (&Config, PrecisionPair),
    record: NodeRecord,
    (node, residency): (Arc<Node>, Arc<Residency>),
    health: HealthReporter,
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
    let (standing, standings) = watch::channel(Standing::default());
    let follower = Follower::new(
        node,
        residency,
        config.model.clone(),
        (config.node_id.clone(), pair),
        Duration::from_secs(config.release_grace_seconds),
        standing,
        health,
    );
    tokio::spawn(follower.run(placements.subscribe()));
    let (leave, left) = oneshot::channel();
    tokio::spawn(keep_registered(registration, standings, left));
    tracing::info!(cluster = %config.cluster, node = %config.node_id, "joined the cluster");
    Ok(Membership {
        leave,
        _placements: placements,
    })
}

/// Registers again whenever the lease is lost, records each placement epoch the node has
/// loaded and what it could not load of it, until asked to leave; then deregisters.
async fn keep_registered(
    mut registration: Registration,
    mut standings: watch::Receiver<Standing>,
    mut leave: oneshot::Receiver<oneshot::Sender<Result<(), EtcdError>>>,
) {
    let mut state = registration.state();
    loop {
        tokio::select! {
            changed = standings.changed(), if !standings.is_closed() => {
                if changed.is_ok() {
                    let mut record = registration.record().clone();
                    let standing = standings.borrow_and_update().clone();
                    record.epoch = standing.epoch;
                    record.unloadable = standing.unloadable;
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
