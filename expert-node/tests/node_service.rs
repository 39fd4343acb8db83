//! The node's gRPC service in this process on 127.0.0.1:0, for what only the library sets so far
//! (the placement epoch) and what needs a look inside (the hot set): a stale epoch refuses its
//! batch with ABORTED while the stream goes on; replies travel in the dtype the request asks for,
//! within that dtype's error budget; prefetch hints are counted, ignored when they name no held
//! expert, and stage the hinted expert; a cold expert is read from the RAM disk and joins the hot
//! set once it is used most; `Info` reports the node's capacity; a full compute queue refuses the
//! next batch with RESOURCE_EXHAUSTED at once and serves the queued ones; a request's ahead work
//! (a later layer on the same rows) is answered in the same reply as if sent on its own.

mod common;

use common::{
    HIDDEN, Stream, assert_error, batch_id, fixture, hidden_states, max_difference, one, request,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moe_expert_node::gpu::{Accelerator, Fetch, GpuRun, GpuSnapshot};
use moe_expert_node::hot_set::Budget;
use moe_expert_node::residency::Residency;
use moe_expert_node::selection::ExpertSelection;
use moe_expert_node::server::{Node, NodeService};
use moe_expert_node::{Epoch, LayerWork, PrecisionPair, ShardKey, WorkError, shard, store};
use moe_kernels::{Format, Pool};
use moe_proto::expert::expert_service_client::ExpertServiceClient;
use moe_proto::expert::expert_service_server::ExpertServiceServer;
use moe_proto::expert::{
    AheadWork, Dtype, InfoRequest, LayerReply, NodeInfo, Precision, PrefetchHint, server_message,
};
use moe_proto::tensor::{self, Limits};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;

const PAIR: PrecisionPair = PrecisionPair {
    high: Format::F16,
    low: Format::Q4,
};

/// A node serving `selection` of the fixture within `budget`, stopped on drop.
struct TestNode {
    node: Arc<Node>,
    address: SocketAddr,
    _stop: oneshot::Sender<()>,
    _shards: tempfile::TempDir,
}

impl TestNode {
    async fn start(selection: &str, budget: Budget) -> TestNode {
        TestNode::start_with(selection, budget, 8, None).await
    }

    /// A node with `queue_capacity` waiting batches at most, running on `gpu` when given.
    async fn start_with(
        selection: &str,
        budget: Budget,
        queue_capacity: usize,
        gpu: Option<Box<dyn Accelerator>>,
    ) -> TestNode {
        let shards = tempfile::tempdir().unwrap();
        let selection: ExpertSelection = selection.parse().unwrap();
        let (catalog, resident, _) =
            store::open(&fixture(), shards.path(), &selection, PAIR, budget).unwrap();
        let node = Arc::new(Node::new(
            "test-node".into(),
            PAIR,
            Limits::default(),
            queue_capacity,
        ));
        node.serve_experts(
            Arc::new(Residency::new(catalog, budget, resident)),
            Pool::new(1).unwrap(),
            gpu,
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = ExpertServiceServer::new(NodeService(Arc::clone(&node)));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                }),
        );
        TestNode {
            node,
            address,
            _stop: stop,
            _shards: shards,
        }
    }

    async fn client(&self) -> ExpertServiceClient<Channel> {
        ExpertServiceClient::connect(format!("http://{}", self.address))
            .await
            .unwrap()
    }
}

async fn info(client: &mut ExpertServiceClient<Channel>) -> NodeInfo {
    client.info(InfoRequest {}).await.unwrap().into_inner()
}

fn hint(epoch: u64, layer: u32, experts: Vec<u32>, precision: Precision) -> PrefetchHint {
    PrefetchHint {
        epoch,
        layer,
        experts,
        precision: precision as i32,
    }
}

fn replied(kind: server_message::Kind) -> LayerReply {
    match kind {
        server_message::Kind::Reply(r) => r,
        server_message::Kind::Error(e) => panic!("refused: {:?} {}", e.code, e.message),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_placement_epoch_refuses_its_batch_and_the_stream_goes_on() {
    let node = TestNode::start("0:0-1", Budget::Unlimited).await;
    let mut client = node.client().await;
    let mut stream = Stream::open(&mut client).await;
    let h = hidden_states(3);
    let at = |batch, epoch| {
        let mut r = request(batch, 0, &h, 3, vec![one(1, vec![0, 2])]);
        r.epoch = epoch;
        r
    };

    // Without a placement the node serves every epoch.
    replied(stream.call(at(1, 0)).await);
    replied(stream.call(at(2, 3)).await);

    node.node.set_placement_epoch(Epoch(5));
    for (batch, epoch) in [(3, 4), (4, 0)] {
        let server_message::Kind::Error(e) = stream.call(at(batch, epoch)).await else {
            panic!("epoch {epoch} is older than the node's 5");
        };
        assert_eq!(e.code, Code::Aborted as i32, "{}", e.message);
        assert!(
            e.message.contains(&format!("epoch {epoch}")) && e.message.contains("epoch 5"),
            "{}",
            e.message
        );
    }
    replied(stream.call(at(5, 5)).await);
    replied(stream.call(at(6, 6)).await);

    stream.hint(hint(4, 0, vec![1], Precision::High)).await;
    replied(stream.call(at(7, 5)).await);
    let info = info(&mut client).await;
    assert_eq!(info.epoch, 5);
    assert_eq!(
        (info.prefetch_hints_received, info.prefetch_hints_acted_on),
        (1, 0),
        "a hint for a stale epoch is ignored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_travel_in_the_dtype_asked_for_within_its_budget() {
    let node = TestNode::start("1:0-7", Budget::Unlimited).await;
    let mut client = node.client().await;
    let mut stream = Stream::open(&mut client).await;
    let n = 6;
    let h = hidden_states(n);
    let work = || vec![one(3, vec![0, 1, 4]), one(6, vec![1, 2, 3, 5])];
    let asking = |batch, dtype: Dtype| {
        let mut r = request(batch, 1, &h, n, work());
        r.reply_dtype = dtype as i32;
        r
    };
    let exact = replied(stream.call(asking(1, Dtype::Unspecified)).await);
    let exact_output = exact.output.unwrap();
    assert_eq!(exact_output.dtype, Dtype::F32 as i32, "f32 by default");
    let want = tensor::decode(&exact_output, HIDDEN, &Limits::default())
        .unwrap()
        .data;
    assert!(want.iter().any(|v| *v != 0.0));

    for (batch, dtype, element_bytes) in [
        (2, Dtype::F16, 2),
        (3, Dtype::Bf16, 2),
        (4, Dtype::I8RowScaled, 1),
    ] {
        let output = replied(stream.call(asking(batch, dtype)).await)
            .output
            .unwrap();
        assert_eq!(output.dtype, dtype as i32);
        assert_eq!(output.data.len(), n * HIDDEN * element_bytes);
        let got = tensor::decode(&output, HIDDEN, &Limits::default())
            .unwrap()
            .data;
        for (row, (want_row, got_row)) in want.chunks(HIDDEN).zip(got.chunks(HIDDEN)).enumerate() {
            for (w, g) in want_row.iter().zip(got_row) {
                let budget = match dtype {
                    // Half an ulp: 11 significant bits, 8 for bf16; f16 subnormals below 2^-14.
                    Dtype::F16 => (w.abs() / 2048.0).max(2f32.powi(-25)),
                    Dtype::Bf16 => w.abs() / 256.0,
                    _ => output.row_scales[row] / 2.0 * 1.0001,
                };
                assert!(
                    (w - g).abs() <= budget,
                    "{dtype:?} row {row}: {w} came back as {g} (budget {budget})"
                );
            }
        }
    }

    let mut unknown = asking(5, Dtype::F32);
    unknown.reply_dtype = 42;
    assert_error(stream.call(unknown).await, Code::InvalidArgument);
    replied(stream.call(asking(6, Dtype::I8RowScaled)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ahead_work_answers_a_later_layer_on_the_same_rows_in_the_same_reply() {
    let node = TestNode::start("0:0-7,1:0-7", Budget::Unlimited).await;
    let mut client = node.client().await;
    let mut stream = Stream::open(&mut client).await;
    let n = 4;
    let h = hidden_states(n);
    let decode = |t: &Option<moe_proto::expert::Tensor>| {
        let t = t.as_ref().expect("an output");
        tensor::decode(t, HIDDEN, &Limits::default()).unwrap().data
    };
    let now = || vec![one(2, vec![0, 3])];
    let later = || vec![one(5, vec![1, 2, 3]), one(7, vec![0])];
    let alone_now = decode(&replied(stream.call(request(1, 0, &h, n, now())).await).output);
    let alone_later = decode(&replied(stream.call(request(2, 1, &h, n, later())).await).output);

    let mut both = request(3, 0, &h, n, now());
    both.ahead = Some(AheadWork {
        layer: 1,
        experts: later(),
    });
    let reply = replied(stream.call(both.clone()).await);
    assert_eq!(reply.layer, 0);
    assert_eq!(decode(&reply.output), alone_now, "the layer's own sums");
    assert_eq!(
        decode(&reply.ahead_output),
        alone_later,
        "the later layer's sums"
    );
    let ran: Vec<u32> = reply.ahead_precisions.iter().map(|p| p.expert).collect();
    assert_eq!(ran, vec![5, 7]);

    let mut not_held = both.clone();
    not_held.batch_id = 4;
    not_held.ahead.as_mut().unwrap().layer = 2;
    assert_error(stream.call(not_held).await, Code::FailedPrecondition);
    let mut per_pair = both;
    per_pair.batch_id = 5;
    per_pair.per_pair = true;
    assert_error(stream.call(per_pair).await, Code::InvalidArgument);
}

/// Polls `Info` until `done` holds, for at most ten seconds.
async fn info_when(
    client: &mut ExpertServiceClient<Channel>,
    done: impl Fn(&NodeInfo) -> bool,
) -> NodeInfo {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = info(client).await;
        if done(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "Info never got there: {info:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_stage_experts_and_the_hot_set_follows_use_within_the_budget() {
    let f16 = shard::payload_bytes(Format::F16, HIDDEN, 128) as u64;
    let q4 = shard::payload_bytes(Format::Q4, HIDDEN, 128) as u64;
    // Room for expert 0 at both formats, the first two in key order.
    let budget = f16 + q4;
    let node = TestNode::start("0:0-3", Budget::Bytes(budget)).await;
    let mut client = node.client().await;

    let start = info(&mut client).await;
    assert_eq!(start.backend, "cpu");
    assert_eq!(
        (start.high, start.low),
        (Precision::F16 as i32, Precision::Q4 as i32)
    );
    assert_eq!(start.experts.len(), 4);
    assert_eq!(
        (start.host_memory_bytes, start.hot_set_bytes),
        (budget, budget)
    );
    assert_eq!((start.hot_experts, start.cold_experts), (2, 6));
    assert_eq!(
        start.ram_disk_bytes,
        4 * (f16 + q4) + 8 * shard::HEADER_BYTES as u64
    );
    assert_eq!((start.gpu_memory_bytes, start.queue_capacity), (0, 8));

    let mut stream = Stream::open(&mut client).await;
    let h = hidden_states(4);
    stream.hint(hint(0, 0, vec![9], Precision::Low)).await;
    stream.hint(hint(0, 4, vec![0], Precision::Low)).await;
    stream.hint(hint(0, 0, vec![2], Precision::Low)).await;
    // The stream handles messages in order: once this batch is answered, so are the hints.
    replied(
        stream
            .call(request(1, 0, &h, 4, vec![one(0, vec![0, 1])]))
            .await,
    );
    let hinted = info(&mut client).await;
    assert_eq!(
        (
            hinted.prefetch_hints_received,
            hinted.prefetch_hints_acted_on
        ),
        (3, 1),
        "hints naming no held expert are ignored"
    );
    let staged = info_when(&mut client, |i| i.prefetch_loads == 1).await;
    assert_eq!(staged.hot_experts, 2);
    assert!(staged.hot_set_bytes <= budget);

    // Expert 3 at f16 is cold: read for each batch until it is used more than expert 0 (which
    // ties it after one batch and wins on key order), then kept.
    let shards = tempfile::tempdir().unwrap();
    let (all, _) = store::load(
        &fixture(),
        shards.path(),
        &"0:3".parse::<ExpertSelection>().unwrap(),
        PAIR,
    )
    .unwrap();
    let pool = Pool::new(1).unwrap();
    let work = LayerWork::from_pairs(
        0,
        4,
        h.clone(),
        [(1, 3, 1.0), (3, 3, 1.0)],
        moe_expert_node::Precision::High,
    );
    let want = all.execute(&work, PAIR, &pool).unwrap();
    let mut cold_loads = Vec::new();
    for batch in 2..5 {
        let reply = replied(
            stream
                .call(request(batch, 0, &h, 4, vec![one(3, vec![1, 3])]))
                .await,
        );
        let got = tensor::decode(&reply.output.unwrap(), HIDDEN, &Limits::default())
            .unwrap()
            .data;
        assert!(max_difference(&got, &want) <= 1e-6);
        let timings = reply.timings.unwrap();
        assert!(timings.load_us <= timings.compute_us);
        let now = info(&mut client).await;
        assert!(now.hot_set_bytes <= budget, "{now:?}");
        cold_loads.push(now.cold_loads);
    }
    assert_eq!(cold_loads, vec![1, 2, 2]);
}

/// Holds the compute thread inside a batch until the test lets it go, then leaves the batch to
/// the CPU kernels.
struct Gate {
    entered: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

impl Accelerator for Gate {
    fn execute(&mut self, _: &LayerWork, _: &Fetch<'_>) -> Result<Option<GpuRun>, WorkError> {
        let _ = self.entered.send(());
        self.release
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| WorkError::Expert("the test never released the batch".into()))?;
        Ok(None)
    }

    fn prefetch(&mut self, _: &[ShardKey], _: &Fetch<'_>) {}

    fn snapshot(&self) -> GpuSnapshot {
        GpuSnapshot {
            capacity_bytes: 0,
            used_bytes: 0,
            stats: Default::default(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_the_next_batch_at_once_and_serves_the_queued_ones() {
    let (entered, running) = std::sync::mpsc::channel();
    let (release, gate) = std::sync::mpsc::channel();
    let gpu = Gate {
        entered,
        release: gate,
    };
    let node = TestNode::start_with("0:0-1", Budget::Unlimited, 1, Some(Box::new(gpu))).await;
    let mut client = node.client().await;
    let mut stream = Stream::open(&mut client).await;
    let h = hidden_states(2);
    let batch = |id| request(id, 0, &h, 2, vec![one(1, vec![0, 1])]);

    // Batch 1 is being computed and batch 2 fills the one queue slot: batch 3 is refused.
    stream.send(batch(1)).await;
    tokio::task::spawn_blocking(move || running.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the compute thread takes batch 1");
    // The refusal arrives while batch 1 is still held: it does not wait for the queue.
    stream.send(batch(2)).await;
    assert_error(stream.call(batch(3)).await, Code::ResourceExhausted);

    release.send(()).unwrap();
    release.send(()).unwrap();
    let mut answered: Vec<u64> = Vec::new();
    for _ in 0..2 {
        let kind = stream.next().await;
        answered.push(batch_id(&kind));
        replied(kind);
    }
    assert_eq!(answered, [1, 2]);
}
