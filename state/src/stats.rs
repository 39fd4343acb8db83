//! A gateway's popularity report under `stats/<gateway_id>`: the tokens it routed to each
//! (layer, expert) in its last window, the input of the leader's rebalancing. The key lives under
//! the gateway's own lease, so the counts of a gateway that died disappear with it.

use std::time::Duration;

use etcd_client::PutOptions;
use tokio::sync::watch;

use crate::etcd::{Etcd, EtcdError};
use crate::keys::{ClusterKeys, Name};
use crate::lease::{Lease, LeaseState, publish_alive};
use crate::records::GatewayStats;

/// Writes one gateway's stats under its lease.
pub struct StatsPublisher {
    etcd: Etcd,
    key: String,
    ttl: Duration,
    lease: Lease,
    state: watch::Sender<LeaseState>,
}

impl StatsPublisher {
    /// Grants the gateway's lease of `ttl`; nothing is written until [`StatsPublisher::publish`].
    pub async fn start(
        etcd: &Etcd,
        keys: &ClusterKeys,
        gateway: &str,
        ttl: Duration,
    ) -> Result<StatsPublisher, EtcdError> {
        let key = keys.stats(&Name::new("gateway id", gateway)?);
        let (state, _) = watch::channel(LeaseState::Lost { lease: 0 });
        let lease = Lease::grant(etcd, ttl, state.clone()).await?;
        publish_alive(&state, lease.id());
        Ok(StatsPublisher {
            etcd: etcd.clone(),
            key,
            ttl,
            lease,
            state,
        })
    }

    /// Replaces the stored stats with `stats`, under a fresh lease when the old one was lost.
    pub async fn publish(&mut self, stats: &GatewayStats) -> Result<(), EtcdError> {
        if matches!(*self.state.borrow(), LeaseState::Lost { .. }) {
            self.lease.revoke().await?;
            self.lease = Lease::grant(&self.etcd, self.ttl, self.state.clone()).await?;
            publish_alive(&self.state, self.lease.id());
        }
        let options = PutOptions::new().with_lease(self.lease.id());
        let mut client = self.etcd.client();
        let put = client.put(self.key.as_str(), stats.to_json(), Some(options));
        self.etcd.call("publish gateway stats", put).await?;
        Ok(())
    }
}
