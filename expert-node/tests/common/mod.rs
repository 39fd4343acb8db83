//! Shared helpers of the expert node's integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use moe_proto::expert::expert_service_client::ExpertServiceClient;
use moe_proto::expert::{
    ClientMessage, ExpertWork, LayerRequest, PrefetchHint, ServerMessage, client_message,
    server_message,
};
use moe_proto::tensor::{self, WireDtype};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

/// The hidden size of the Mixtral fixture.
pub const HIDDEN: usize = 64;

/// The Mixtral fixture checkpoint.
pub fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mixtral")
}

/// The largest element-wise difference of two equally long slices.
pub fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Deterministic hidden states for `n` tokens of the fixture.
pub fn hidden_states(n: usize) -> Vec<f32> {
    (0..n * HIDDEN)
        .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 300.0)
        .collect()
}

/// A layer request at epoch 0 with an f32 reply; `tokens` is `n` rows.
pub fn request(
    batch_id: u64,
    layer: u32,
    tokens: &[f32],
    n: usize,
    experts: Vec<ExpertWork>,
) -> LayerRequest {
    LayerRequest {
        batch_id,
        epoch: 0,
        layer,
        tokens: Some(tensor::encode(tokens, n, tokens.len() / n.max(1), WireDtype::F32).unwrap()),
        experts,
        reply_dtype: 0,
        per_pair: false,
        traceparent: String::new(),
        ahead: None,
    }
}

/// All `rows` to `expert` with weight 1, at the node's high precision.
pub fn one(expert: u32, rows: Vec<u32>) -> ExpertWork {
    ExpertWork {
        expert,
        weights: vec![1.0; rows.len()],
        rows,
        precisions: Vec::new(),
        unimportance: Vec::new(),
    }
}

pub fn assert_error(kind: server_message::Kind, code: Code) {
    match kind {
        server_message::Kind::Error(e) => assert_eq!(e.code, code as i32, "{}", e.message),
        server_message::Kind::Reply(_) => panic!("expected {code:?}, got a reply"),
    }
}

/// An open `Process` stream: send requests and hints, receive messages.
pub struct Stream {
    pub send: mpsc::Sender<ClientMessage>,
    pub receive: tonic::Streaming<ServerMessage>,
}

impl Stream {
    pub async fn open(client: &mut ExpertServiceClient<Channel>) -> Stream {
        let (send, outbound) = mpsc::channel(16);
        let receive = client
            .process(ReceiverStream::new(outbound))
            .await
            .unwrap()
            .into_inner();
        Stream { send, receive }
    }

    /// Sends `req` without waiting for its answer.
    pub async fn send(&mut self, req: LayerRequest) {
        let message = ClientMessage {
            kind: Some(client_message::Kind::Layer(req)),
        };
        self.send.send(message).await.unwrap();
    }

    /// The next message on the stream, whichever batch it answers.
    pub async fn next(&mut self) -> server_message::Kind {
        let reply = tokio::time::timeout(Duration::from_secs(10), self.receive.message())
            .await
            .expect("a reply within the deadline")
            .unwrap()
            .unwrap();
        reply.kind.unwrap()
    }

    /// Sends `req` and returns the answer to it.
    pub async fn call(&mut self, req: LayerRequest) -> server_message::Kind {
        let batch = req.batch_id;
        self.send(req).await;
        let kind = self.next().await;
        assert_eq!(batch_id(&kind), batch);
        kind
    }

    /// Sends a prefetch hint; nothing answers it.
    pub async fn hint(&mut self, hint: PrefetchHint) {
        let message = ClientMessage {
            kind: Some(client_message::Kind::Prefetch(hint)),
        };
        self.send.send(message).await.unwrap();
    }
}

/// The batch a message answers.
pub fn batch_id(kind: &server_message::Kind) -> u64 {
    match kind {
        server_message::Kind::Reply(r) => r.batch_id,
        server_message::Kind::Error(e) => e.batch_id,
    }
}
