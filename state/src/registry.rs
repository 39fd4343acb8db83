//! An expert node's membership: its [`NodeRecord`] under `nodes/<id>`, held by a lease kept
//! alive on a thread of its own (see `lease`). Watching the records is `watch`'s job; what the
//! records mean is the planner's.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::watch;

use crate::etcd::{Etcd, EtcdError};
use crate::keys::{ClusterKeys, Name};
use crate::lease::{Lease, LeaseState, publish_alive};
use crate::records::NodeRecord;

/// The lease TTL of a node registration unless configured otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// An expert node's registration: its record under `nodes/<id>` with a kept-alive lease.
/// Dropping it revokes the lease in the background; [`Registration::deregister`] waits for that.
pub struct Registration {
    etcd: Etcd,
    key: String,
    record: NodeRecord,
    ttl: Duration,
    lease: Lease,
    state: watch::Sender<LeaseState>,
}

impl Registration {
    /// Registers `record` under a fresh lease of `ttl` ([`DEFAULT_TTL`] in production). Fails
    /// with [`EtcdError::NodeIdTaken`] while another live node holds the same id.
    pub async fn register(
        etcd: &Etcd,
        keys: &ClusterKeys,
        record: NodeRecord,
        ttl: Duration,
    ) -> Result<Registration, EtcdError> {
        let key = keys.node(&Name::new("node id", &record.id)?);
        let (state, _) = watch::channel(LeaseState::Lost { lease: 0 });
        let absent = Compare::create_revision(key.as_str(), CompareOp::Equal, 0);
        let lease = claim(etcd, &key, &record, ttl, &state, absent).await?;
        Ok(Registration {
            etcd: etcd.clone(),
            key,
            record,
            ttl,
            lease,
            state,
        })
    }

    /// The registration's state; it turns [`LeaseState::Lost`] when the lease is lost, and
    /// back to [`LeaseState::Alive`] after a successful [`Registration::reregister`].
    pub fn state(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    pub fn lease_id(&self) -> i64 {
        self.lease.id()
    }

    pub fn record(&self) -> &NodeRecord {
        &self.record
    }

    /// The etcd key the record lives under.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Replaces the record (e.g. a new capacity) under the same lease; fails with
    /// [`EtcdError::NotRegistered`] when the key no longer carries this registration's lease.
    pub async fn update(&mut self, record: NodeRecord) -> Result<(), EtcdError> {
        if record.id != self.record.id {
            return Err(EtcdError::IdChanged {
                registered: self.record.id.to_string(),
                requested: record.id.to_string(),
            });
        }
        let lease = self.lease.id();
        let txn = Txn::new()
            .when([Compare::lease(self.key.as_str(), CompareOp::Equal, lease)])
            .and_then([TxnOp::put(
                self.key.as_str(),
                record.to_json(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let response = self
            .etcd
            .call("update node record", self.etcd.client().txn(txn))
            .await?;
        if !response.succeeded() {
            return Err(EtcdError::NotRegistered {
                id: record.id.to_string(),
            });
        }
        self.record = record;
        Ok(())
    }

    /// Registers again under a fresh lease, typically after the state turned
    /// [`LeaseState::Lost`]. While the record is still under the old lease (etcd kept it, e.g.
    /// through its own restart), it moves to the fresh one in one transaction, so that watchers
    /// never see it disappear. Otherwise the old lease is revoked and the same create-if-absent
    /// rule as [`Registration::register`] applies, so this fails while another node has taken
    /// the id meanwhile.
    pub async fn reregister(&mut self) -> Result<(), EtcdError> {
        let ours = Compare::lease(self.key.as_str(), CompareOp::Equal, self.lease.id());
        let (etcd, key, record) = (&self.etcd, &self.key, &self.record);
        match claim(etcd, key, record, self.ttl, &self.state, ours).await {
            Ok(lease) => {
                let mut old = std::mem::replace(&mut self.lease, lease);
                if let Err(error) = old.revoke().await {
                    tracing::warn!(%error, "could not revoke the replaced lease; it will expire");
                }
            }
            Err(EtcdError::NodeIdTaken { .. }) => {
                self.lease.revoke().await?;
                let absent = Compare::create_revision(key.as_str(), CompareOp::Equal, 0);
                self.lease = claim(etcd, key, record, self.ttl, &self.state, absent).await?;
            }
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// Revokes the lease: the record disappears at once.
    pub async fn deregister(mut self) -> Result<(), EtcdError> {
        self.lease.revoke().await
    }

    /// Stops the keep-alive without revoking, as if the node had died: the record stays until
    /// the lease's TTL runs out.
    pub fn abandon(mut self) {
        self.lease.abandon();
    }
}

/// Grants a lease and puts `record` under `key` with it, only if `free` holds (the key is absent,
/// or still under a lease of ours); [`EtcdError::NodeIdTaken`] otherwise.
async fn claim(
    etcd: &Etcd,
    key: &str,
    record: &NodeRecord,
    ttl: Duration,
    state: &watch::Sender<LeaseState>,
    free: Compare,
) -> Result<Lease, EtcdError> {
    let mut lease = Lease::grant(etcd, ttl, state.clone()).await?;
    let txn = Txn::new()
        .when([free])
        .and_then([TxnOp::put(
            key,
            record.to_json(),
            Some(PutOptions::new().with_lease(lease.id())),
        )])
        .or_else([TxnOp::get(key, None)]);
    let response = etcd.call("register node", etcd.client().txn(txn)).await?;
    if response.succeeded() {
        publish_alive(state, lease.id());
        return Ok(lease);
    }
    let holder = response
        .op_responses()
        .into_iter()
        .find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.lease()),
            _ => None,
        })
        .unwrap_or_default();
    if let Err(error) = lease.revoke().await {
        tracing::warn!(%error, "could not revoke the unused lease; it will expire");
    }
    Err(EtcdError::NodeIdTaken {
        id: record.id.to_string(),
        lease: holder,
    })
}
