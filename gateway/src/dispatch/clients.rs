//! The gateway's streams to the expert nodes, one per node, opened when first needed and opened
//! again when one has ended or its node moved to another address.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use moe_proto::expert::PrefetchHint;
use tokio::sync::Mutex;
use tonic::transport::ClientTlsConfig;

use crate::node_client::{CallError, NodeClient};

pub(super) struct Clients {
    clients: Mutex<HashMap<String, Arc<NodeClient>>>,
    /// TLS towards the nodes (`None`: plaintext).
    pub(super) tls: Option<ClientTlsConfig>,
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

    /// The stream to node `id` at `registered` (its record's address), opened (again) when
    /// there is none or it has ended. A node whose record is gone (its lease lapsed, e.g. while
    /// etcd was away) is still called at its last known address while the placement names it: a
    /// lapsed lease is no proof of death, and a dead node fails the call or misses the deadline,
    /// and its replicas take over.
    pub(super) async fn get(
        &self,
        id: &str,
        registered: Option<String>,
    ) -> Result<Arc<NodeClient>, CallError> {
        let mut clients = self.clients.lock().await;
        let address = match (registered, clients.get(id)) {
            (Some(address), _) => address,
            (None, Some(known)) => known.address().to_string(),
            (None, None) => {
                return Err(CallError::Connect {
                    address: id.to_string(),
                    reason: "the node is not registered".into(),
                });
            }
        };
        if let Some(c) = clients.get(id)
            && c.is_alive()
            && c.address() == address
        {
            return Ok(Arc::clone(c));
        }
        let client =
            NodeClient::connect(&address, self.tls.as_ref(), self.deadline, self.max_bytes).await?;
        let client = Arc::new(client);
        clients.insert(id.to_string(), Arc::clone(&client));
        Ok(client)
    }

    /// Queues `hint` on node `id`'s stream if one is open; never connects or waits. Whether it
    /// was queued.
    pub(super) async fn hint(&self, id: &str, hint: PrefetchHint) -> bool {
        let clients = self.clients.lock().await;
        clients
            .get(id)
            .filter(|c| c.is_alive())
            .is_some_and(|c| c.hint(hint))
    }
}
