//! One expert node as the gateway sees it: a single long-lived bidirectional `Process` stream
//! that every caller shares. Each call gets a fresh batch id; a reader task hands each reply (or
//! `BatchError`) to the call waiting for that id, so replies may come back in any order. Every
//! call has a deadline. When the stream ends, every waiting call fails at once and the client
//! reports itself dead, so the dispatcher reconnects or routes to a replica.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use moe_proto::expert::expert_service_client::ExpertServiceClient;
use moe_proto::expert::{
    ClientMessage, LayerReply, LayerRequest, PrefetchHint, client_message, server_message,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::ClientTlsConfig;

/// Why a call to a node failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("expert node {address}: no reply within {deadline:?}")]
    Timeout { address: String, deadline: Duration },
    #[error("expert node {address}: the stream is closed ({reason})")]
    Closed { address: String, reason: String },
    #[error("expert node {address} refused the batch: {code:?}: {message}")]
    Refused {
        address: String,
        code: Code,
        message: String,
    },
    #[error("expert node {address}: cannot connect: {reason}")]
    Connect { address: String, reason: String },
}

impl CallError {
    /// Whether another replica may succeed where this node failed (everything but a malformed
    /// request, which would fail anywhere).
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            CallError::Refused {
                code: Code::InvalidArgument,
                ..
            }
        )
    }
}

type Waiting = oneshot::Sender<Result<LayerReply, CallError>>;

/// Calls waiting for their reply, by batch id; `None` once the stream has ended.
struct Pending(Mutex<Option<HashMap<u64, Waiting>>>);

impl Pending {
    fn lock(&self) -> MutexGuard<'_, Option<HashMap<u64, Waiting>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connected expert node.
pub struct NodeClient {
    address: String,
    send: mpsc::Sender<ClientMessage>,
    pending: Arc<Pending>,
    next_batch: AtomicU64,
    alive: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for NodeClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl NodeClient {
    /// Connects to `address` (`host:port`) within `deadline`, over TLS with `tls` (the node's
    /// certificate checked against its CA) or in plaintext without, and opens the stream.
    pub async fn connect(
        address: &str,
        tls: Option<&ClientTlsConfig>,
        deadline: Duration,
        max_message_bytes: usize,
    ) -> Result<NodeClient, CallError> {
        let failed = |reason: String| CallError::Connect {
            address: address.to_string(),
            reason,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|e| failed(e.to_string()))?;
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| failed(e.to_string()))?;
        }
        let endpoint = endpoint
            .connect_timeout(deadline)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(deadline);
        let channel = tokio::time::timeout(deadline, endpoint.connect())
            .await
            .map_err(|_| failed(format!("no connection within {deadline:?}")))?
            .map_err(|e| failed(moe_service::causes(&e)))?;
        let mut client = ExpertServiceClient::new(channel)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let (send, outbound) = mpsc::channel(64);
        let inbound = tokio::time::timeout(deadline, client.process(ReceiverStream::new(outbound)))
            .await
            .map_err(|_| failed(format!("the stream did not open within {deadline:?}")))?
            .map_err(|e| failed(e.to_string()))?
            .into_inner();
        let pending = Arc::new(Pending(Mutex::new(Some(HashMap::new()))));
        let alive = Arc::new(AtomicBool::new(true));
        let reader = tokio::spawn(read(
            inbound,
            Arc::clone(&pending),
            Arc::clone(&alive),
            address.to_string(),
        ));
        Ok(NodeClient {
            address: address.to_string(),
            send,
            pending,
            next_batch: AtomicU64::new(1),
            alive,
            reader,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the stream is still open.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Queues a prefetch hint without waiting: a hint is advice, so one that finds the stream's
    /// queue full or the stream closed is dropped. Returns whether it was queued.
    pub fn hint(&self, hint: PrefetchHint) -> bool {
        let message = ClientMessage {
            kind: Some(client_message::Kind::Prefetch(hint)),
        };
        self.send.try_send(message).is_ok()
    }

    /// Sends `request` (its batch id is replaced by a fresh one) and waits for its reply.
    pub async fn call(
        &self,
        mut request: LayerRequest,
        deadline: Duration,
    ) -> Result<LayerReply, CallError> {
        let batch = self.next_batch.fetch_add(1, Ordering::Relaxed);
        request.batch_id = batch;
        let closed = |reason: &str| CallError::Closed {
            address: self.address.clone(),
            reason: reason.to_string(),
        };
        let (reply, replied) = oneshot::channel();
        match self.pending.lock().as_mut() {
            Some(waiting) => waiting.insert(batch, reply),
            None => return Err(closed("ended earlier")),
        };
        let message = ClientMessage {
            kind: Some(client_message::Kind::Layer(request)),
        };
        let outcome = tokio::time::timeout(deadline, async {
            self.send
                .send(message)
                .await
                .map_err(|_| closed("the sender is gone"))?;
            replied.await.map_err(|_| closed("the reader stopped"))?
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                if let Some(waiting) = self.pending.lock().as_mut() {
                    waiting.remove(&batch);
                }
                Err(CallError::Timeout {
                    address: self.address.clone(),
                    deadline,
                })
            }
        }
    }
}

/// Hands each message on the stream to the call waiting for it; when the stream ends, fails
/// every waiting call and marks the client dead.
async fn read(
    mut inbound: tonic::Streaming<moe_proto::expert::ServerMessage>,
    pending: Arc<Pending>,
    alive: Arc<AtomicBool>,
    address: String,
) {
    let reason = loop {
        let message = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break "the node ended the stream".to_string(),
            Err(status) => break status.to_string(),
        };
        let (batch, result) = match message.kind {
            Some(server_message::Kind::Reply(r)) => (r.batch_id, Ok(r)),
            Some(server_message::Kind::Error(e)) => (
                e.batch_id,
                Err(CallError::Refused {
                    address: address.clone(),
                    code: Code::from_i32(e.code),
                    message: e.message,
                }),
            ),
            None => continue,
        };
        let waiting = pending.lock().as_mut().and_then(|w| w.remove(&batch));
        if let Some(waiting) = waiting {
            let _ = waiting.send(result);
        }
    };
    alive.store(false, Ordering::Release);
    let waiting = pending.lock().take().unwrap_or_default();
    for (_, call) in waiting {
        let _ = call.send(Err(CallError::Closed {
            address: address.clone(),
            reason: reason.clone(),
        }));
    }
}
