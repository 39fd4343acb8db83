//! The gateway's streams to the expert nodes, one per node: opened when first needed, opened
//! again when one has ended or its node's record moved to another address, and closed when no
//! placement the dispatcher reads (the current one or the previous) names the node any more.
//! Opening a stream never holds the pool: a node slow to answer delays only its own calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use moe_proto::expert::PrefetchHint;
use moe_state::records::NodeId;
use tonic::transport::ClientTlsConfig;

use crate::node_client::{CallError, NodeClient};

pub(super) struct Clients {
    clients: Mutex<HashMap<NodeId, Arc<NodeClient>>>,
    /// TLS towards the nodes (`None`: plaintext).
    tls: Option<ClientTlsConfig>,
    deadline: Duration,
    max_bytes: usize,
}

impl Clients {
    pub(super) fn new(deadline: Duration, max_bytes: usize) -> Clients {
        Clients {
            clients: Mutex::new(HashMap::new()),
            tls: None,
            deadline,
            max_bytes,
        }
    }

    /// An empty pool with this one's deadlines that speaks TLS to the nodes.
    pub(super) fn speaking_tls(&self, tls: ClientTlsConfig) -> Clients {
        Clients {
            tls: Some(tls),
            ..Clients::new(self.deadline, self.max_bytes)
        }
    }

    fn pool(&self) -> MutexGuard<'_, HashMap<NodeId, Arc<NodeClient>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stream to node `id` at `registered` (its record's address), opened (again) when
    /// there is none or it has ended. A node whose record is gone (its lease lapsed, e.g. while
    /// etcd was away) is still called at its last known address while the placement names it: a
    /// lapsed lease is no proof of death, and a dead node fails the call or misses the deadline,
    /// and its replicas take over.
    pub(super) async fn get(
        &self,
        id: &NodeId,
        registered: Option<String>,
    ) -> Result<Arc<NodeClient>, CallError> {
        let known = self.pool().get(id).cloned();
        let address = match (registered, &known) {
            (Some(address), _) => address,
            (None, Some(known)) => known.address().to_string(),
            (None, None) => {
                return Err(CallError::Connect {
                    address: id.to_string(),
                    reason: "the node is not registered".into(),
                });
            }
        };
        if let Some(c) = known
            && c.is_alive()
            && c.address() == address
        {
            return Ok(c);
        }
        let client =
            NodeClient::connect(&address, self.tls.as_ref(), self.deadline, self.max_bytes).await?;
        let client = Arc::new(client);
        self.pool().insert(id.clone(), Arc::clone(&client));
        Ok(client)
    }

    /// Queues `hint` on node `id`'s stream if one is open; never connects or waits. Whether it
    /// was queued.
    pub(super) fn hint(&self, id: &NodeId, hint: PrefetchHint) -> bool {
        self.pool()
            .get(id)
            .filter(|c| c.is_alive())
            .is_some_and(|c| c.hint(hint))
    }

    /// Closes the streams of the nodes `named` says no placement names any more.
    pub(super) fn retain(&self, named: impl Fn(&NodeId) -> bool) {
        self.pool().retain(|id, _| named(id));
    }
}
