//! The model's forward pass with its routed experts on expert nodes served over real gRPC (in
//! this process, on 127.0.0.1:0): the logits and greedy tokens equal the single-process model's
//! exactly on every fixture architecture (experts at f16 on both sides; `exact` requests, so
//! top-4 and top-8 sums are taken in the same order); a node that goes away mid-run is replaced
//! by the replica the placement names, with the same results; an expert without any live
//! replica fails the step with a clear error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use moe_expert_node::hot_set::Budget;
use moe_expert_node::residency::Residency;
use moe_expert_node::selection::ExpertSelection;
use moe_expert_node::server::{Node, NodeService};
use moe_expert_node::{PrecisionPair, store};
use moe_gateway::dispatch::{Dispatcher, Precision, RemoteExperts};
use moe_kernels::{Format, Pool};
use moe_model::{LoadOptions, Logits, Model, ModelConfig};
use moe_proto::expert::expert_service_client::ExpertServiceClient;
use moe_proto::expert::expert_service_server::ExpertServiceServer;
use moe_proto::tensor::Limits;
use moe_state::records::{Assignment, Capacity, NodeRecord, Placement};
use moe_state::watch::Snapshot;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

const PAIR: PrecisionPair = PrecisionPair {
    high: Format::F16,
    low: Format::Q4,
};

const ARCHS: [&str; 5] = [
    "mixtral",
    "qwen2-moe",
    "qwen3-moe",
    "olmoe",
    "mixtral-window",
];

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(arch)
}

/// An expert node serving `selection` of the fixture on a runtime of its own, so that killing
/// it closes its connections as a dead process would.
struct TestNode {
    address: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    _shards: tempfile::TempDir,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl TestNode {
    fn start(arch: &str, id: &str, selection: &str) -> TestNode {
        let shards = tempfile::tempdir().unwrap();
        let selection: ExpertSelection = selection.parse().unwrap();
        let (catalog, resident, _) = store::open(
            &fixture(arch),
            shards.path(),
            &selection,
            PAIR,
            Budget::Unlimited,
        )
        .unwrap();
        let node = Arc::new(Node::new(id.into(), PAIR, Limits::default(), 64));
        let residency = Arc::new(Residency::new(catalog, Budget::Unlimited, resident));
        node.serve_experts(residency, Pool::new(1).unwrap(), None)
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            let _ = tonic::transport::Server::builder()
                .add_service(ExpertServiceServer::new(NodeService(node)))
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        TestNode {
            address,
            runtime: Some(runtime),
            _shards: shards,
        }
    }

    /// Stops serving at once: every connection of the node closes.
    fn kill(self) {
        drop(self);
    }
}

fn record(id: &str, address: SocketAddr) -> NodeRecord {
    NodeRecord {
        capacity: Capacity {
            ram_disk_bytes: 1 << 30,
            ..Capacity::default()
        },
        epoch: 1,
        ..NodeRecord::new(id, address.to_string())
    }
}

/// Node `x` holds every expert; `y` holds the upper half of each MoE layer's experts and is
/// their preferred node, with `x` as the replica. Also `y`'s `--experts` selection.
fn placement(arch: &str) -> (Placement, String) {
    let cfg = ModelConfig::from_file(&fixture(arch).join("config.json")).unwrap();
    let experts = cfg.num_experts as u32;
    let layers: Vec<u32> = cfg.moe_layers().map(|l| l as u32).collect();
    let assignments = layers
        .iter()
        .flat_map(|&layer| {
            (0..experts).map(move |expert| Assignment {
                layer,
                expert,
                nodes: if expert < experts / 2 {
                    vec!["x".into()]
                } else {
                    vec!["y".into(), "x".into()]
                },
            })
        })
        .collect();
    let upper: Vec<String> = layers
        .iter()
        .map(|l| format!("{l}:{}-{}", experts / 2, experts - 1))
        .collect();
    let placement = Placement {
        epoch: 1,
        model: arch.into(),
        layers: cfg.num_layers as u32,
        experts_per_layer: experts,
        assignments,
    };
    (placement, upper.join(","))
}

fn snapshot<T>(entries: Vec<(&str, T)>) -> Snapshot<T> {
    Snapshot {
        revision: 1,
        entries: entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// Prefill `prompt`, then `steps` greedy tokens; with `dispatcher` the routed experts run on the
/// nodes. Returns every position's logits of the prefill and the generated tokens.
fn greedy(
    model: &Model,
    dispatcher: Option<&Dispatcher>,
    prompt: &[u32],
    steps: usize,
) -> moe_model::Result<(Vec<f32>, Vec<u32>)> {
    let mut cache = model.new_cache();
    let runtime = tokio::runtime::Handle::current();
    let forward = |tokens: &[u32], cache: &mut moe_model::kv_cache::KvCache, want| match dispatcher
    {
        Some(d) => {
            let sequences = [tokens.len()];
            let pass = (Precision::Exact, model);
            let mut remote = RemoteExperts::new(d, runtime.clone(), pass, &sequences);
            model.forward_with(tokens, cache, want, &mut remote)
        }
        None => model.forward(tokens, cache, want),
    };
    let prefill = forward(prompt, &mut cache, Logits::All)?;
    let vocab = model.config().vocab_size;
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
            .unwrap()
    };
    let mut next = argmax(&prefill[prefill.len() - vocab..]);
    let mut tokens = vec![next];
    for _ in 1..steps {
        let logits = forward(&[next], &mut cache, Logits::Last)?;
        next = argmax(&logits);
        tokens.push(next);
    }
    Ok((prefill, tokens))
}

/// A cluster of two in-process nodes for `arch`, the whole model and the model without its
/// routed experts, and a dispatcher over the nodes.
struct Setup {
    x: TestNode,
    y: TestNode,
    whole: Arc<Model>,
    dense: Arc<Model>,
    dispatcher: Arc<Dispatcher>,
    channels: (
        watch::Sender<Snapshot<Placement>>,
        watch::Sender<Snapshot<NodeRecord>>,
    ),
}

fn setup(arch: &str) -> Setup {
    let (placement, upper) = placement(arch);
    let x = TestNode::start(arch, "x", "all");
    let y = TestNode::start(arch, "y", &upper);
    let (placement_tx, placements) = watch::channel(snapshot(vec![("placement", placement)]));
    let (nodes_tx, nodes) = watch::channel(snapshot(vec![
        ("x", record("x", x.address)),
        ("y", record("y", y.address)),
    ]));
    let pool = Arc::new(Pool::new(2).unwrap());
    let f16 = LoadOptions::with_expert_format(Some(Format::F16));
    let whole = Model::load(&fixture(arch), &f16, Arc::clone(&pool)).unwrap();
    let options = LoadOptions {
        skip_routed_experts: true,
        ..f16
    };
    let dense = Model::load(&fixture(arch), &options, pool).unwrap();
    let hidden = whole.config().hidden_size;
    let dispatcher = Dispatcher::new(
        placements,
        nodes,
        hidden,
        Duration::from_secs(5),
        Limits::default(),
    )
    .with_prefetch_layers(2);
    Setup {
        x,
        y,
        whole: Arc::new(whole),
        dense: Arc::new(dense),
        dispatcher: Arc::new(dispatcher),
        channels: (placement_tx, nodes_tx),
    }
}

const PROMPT: [u32; 6] = [1, 17, 42, 7, 99, 3];

async fn run(
    dispatcher: Option<Arc<Dispatcher>>,
    model: Arc<Model>,
) -> moe_model::Result<(Vec<f32>, Vec<u32>)> {
    tokio::task::spawn_blocking(move || greedy(&model, dispatcher.as_deref(), &PROMPT, 12))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_architecture_through_nodes_equals_the_single_process_model() {
    for arch in ARCHS {
        let s = setup(arch);
        let want = run(None, Arc::clone(&s.whole)).await.unwrap();
        let got = run(Some(Arc::clone(&s.dispatcher)), Arc::clone(&s.dense))
            .await
            .unwrap();
        assert_eq!(got.0, want.0, "{arch}: prefill logits");
        assert_eq!(got.1, want.1, "{arch}: greedy tokens");
        assert_eq!(s.dispatcher.retries(), 0);
        // Every token of every step went to top_k experts of every MoE layer.
        let cfg = s.whole.config();
        let steps = PROMPT.len() + 11;
        let routed: u64 = s.dispatcher.take_counts().iter().map(|c| c.tokens).sum();
        let layers = cfg.moe_layers().count();
        assert_eq!(routed as usize, steps * cfg.top_k * layers, "{arch}");
        assert!(
            s.dispatcher.take_counts().is_empty(),
            "taking the counts resets them"
        );
        let traffic = s.dispatcher.traffic();
        assert!(
            traffic.sent_bytes > 0 && traffic.received_bytes > 0,
            "{arch}: {traffic:?}"
        );
        assert!(traffic.seconds > 0.0, "{arch}: {traffic:?}");
        // Both nodes answered, and the per-node series account for every byte.
        let links = s.dispatcher.links().snapshot();
        assert_eq!(links.keys().collect::<Vec<_>>(), ["x", "y"], "{arch}");
        assert!(
            links
                .values()
                .all(|l| l.calls > 0 && l.failures == 0 && l.rtt_seconds > 0.0)
        );
        let sent: u64 = links.values().map(|l| l.sent_bytes).sum();
        assert_eq!(sent, traffic.sent_bytes, "{arch}");
        // Each layer predicted the next MoE layer's experts, hinted them, and was scored.
        let (hits, pairs) = s.dispatcher.accuracy().at(1);
        println!("{arch}: next-layer prediction {hits} of {pairs} pairs");
        if layers > 1 {
            assert!(pairs > 0 && hits <= pairs, "{arch}: {hits} of {pairs}");
            assert!(s.dispatcher.hints() > 0, "{arch}");
            let mut received = 0;
            for node in [&s.x, &s.y] {
                received += node_info(node.address).await.prefetch_hints_received;
            }
            assert!(received > 0, "{arch}: the nodes received the hints");
        }
    }
}

async fn node_info(address: SocketAddr) -> moe_proto::expert::NodeInfo {
    let mut client = ExpertServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    client
        .info(moe_proto::expert::InfoRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_fails_over_to_its_replicas_with_the_same_results() {
    let s = setup("mixtral");
    let want = run(None, Arc::clone(&s.whole)).await.unwrap();

    // y goes away: its experts fail over to x within the same steps.
    s.y.kill();
    let failed_over = run(Some(Arc::clone(&s.dispatcher)), Arc::clone(&s.dense))
        .await
        .unwrap();
    assert_eq!(failed_over, want, "the replica gives the same results");
    assert!(s.dispatcher.retries() > 0, "y's experts were retried on x");

    // x goes away too: the lower experts have no replica left.
    s.x.kill();
    let refused = run(Some(s.dispatcher), s.dense).await.unwrap_err();
    let message = refused.to_string();
    assert!(message.contains("no replica could serve it"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_until_every_expert_has_a_node_that_loaded_the_placement() {
    let s = setup("mixtral");
    assert!(
        s.dispatcher.ready(),
        "both nodes report epoch 1, the placement's"
    );
    let (_, nodes) = &s.channels;
    // x has not loaded epoch 1 yet: the lower experts, on x alone, have no serving node.
    nodes.send_modify(|snapshot| {
        snapshot.entries.get_mut("x").unwrap().epoch = 0;
    });
    assert!(!s.dispatcher.ready());
    nodes.send_modify(|snapshot| {
        snapshot.entries.get_mut("x").unwrap().epoch = 1;
    });
    assert!(s.dispatcher.ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expert_no_node_could_load_fails_at_once_with_the_cause_and_the_rest_serve() {
    use moe_state::records::LoadFailure;
    let s = setup("mixtral");
    let want = run(None, Arc::clone(&s.whole)).await.unwrap();
    let (_, nodes) = &s.channels;
    let cause = "/dev/shm/x: No space left on device (os error 28)";
    let unloadable = |experts: Vec<(u32, u32)>| {
        vec![LoadFailure {
            cause: cause.into(),
            no_room: true,
            experts,
        }]
    };
    // x could not load the upper experts: y serves them alone, with the same results.
    let cfg = s.whole.config().clone();
    let upper: Vec<(u32, u32)> = cfg
        .moe_layers()
        .flat_map(|l| {
            (cfg.num_experts as u32 / 2..cfg.num_experts as u32).map(move |e| (l as u32, e))
        })
        .collect();
    nodes.send_modify(|snapshot| {
        snapshot.entries.get_mut("x").unwrap().unloadable = unloadable(upper.clone());
    });
    assert!(
        s.dispatcher.ready(),
        "{}",
        s.dispatcher.readiness().summary()
    );
    let served = run(Some(Arc::clone(&s.dispatcher)), Arc::clone(&s.dense))
        .await
        .unwrap();
    assert_eq!(served, want);

    // x could not load expert 0 of the first MoE layer either, and nothing else holds it.
    let first = cfg.moe_layers().next().unwrap() as u32;
    nodes.send_modify(|snapshot| {
        snapshot.entries.get_mut("x").unwrap().unloadable = unloadable(vec![(first, 0)]);
    });
    let readiness = s.dispatcher.readiness();
    assert!(!readiness.is_ready());
    assert_eq!(readiness.unservable().count(), 1);
    assert!(
        readiness.summary().contains(cause),
        "{}",
        readiness.summary()
    );
    let started = std::time::Instant::now();
    let refused = run(Some(Arc::clone(&s.dispatcher)), Arc::clone(&s.dense)).await;
    let waited = started.elapsed();
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains("no node can serve it") && message.contains(cause),
        "{message}"
    );
    assert!(
        waited < Duration::from_secs(1),
        "refused after {waited:?}, not at once"
    );
}
