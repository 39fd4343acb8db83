//! The cluster's control plane end to end, with real processes: one etcd, two `coordinator`s and
//! `expert-node`s serving the Mixtral fixture (2 MoE layers x 8 experts). Nodes register, the
//! leader's placement covers every expert and the nodes load what it assigns them; a node
//! SIGKILLed leaves the placement when its lease expires and its experts are re-homed; a joining
//! node takes a share; the leader SIGKILLed is replaced by the standby and epochs only grow;
//! etcd restarted, everyone carries on. The times each step took are printed.
//!
//! A second test puts a `gateway` in front and checks that greedy completions over HTTP equal the
//! single-process model's — one at a time, 16 at once, and after an expert node is SIGKILLed —
//! and that the processes' spans reach an OTLP collector with the nodes' spans inside the
//! gateway's traces.
//!
//! `expert-node` and `gateway` are taken from the directory `coordinator` was built into: `cargo
//! test --workspace` (what `scripts/test.sh` runs) builds them all.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use moe_proto::expert::expert_service_client::ExpertServiceClient;
use moe_proto::expert::{InfoRequest, NodeInfo};
use moe_proto::gateway::gateway_service_client::GatewayServiceClient;
use moe_proto::gateway::{GenerateRequest, TokenIds, generate_request, generate_response};
use moe_state::etcd::Etcd;
use moe_state::keys::ClusterKeys;
use moe_state::records::Placement;
use moe_tests::collector::Collector;
use moe_tests::grpc;
use moe_tests::http::{get_text, metric, post, post_raw, post_streamed, wait_ready};
use moe_tests::process::{self, Process, sibling_binary};
use moe_tests::servers::{self, fixture};
use moe_tests::{EtcdServer, get};

const CLUSTER: &str = "e2e";
/// Lease TTL of nodes and coordinators.
const TTL_SECONDS: u64 = 2;
const LAYERS: [u32; 2] = [0, 1];
const EXPERTS: u32 = 8;

struct Cluster {
    etcd: EtcdServer,
    shards: tempfile::TempDir,
    /// Where every process of the cluster exports its spans.
    collector: Collector,
}

impl Cluster {
    /// A fresh etcd, an empty shard directory and a trace collector.
    async fn start() -> Cluster {
        Cluster {
            etcd: EtcdServer::start().await,
            shards: tempfile::tempdir().unwrap(),
            collector: Collector::start().await,
        }
    }

    fn coordinator(&self, id: &str) -> Process {
        let extra = ["--lease-ttl-seconds", "2"];
        let (etcd, env) = (self.etcd.endpoint(), self.collector.env());
        servers::coordinator_named(&etcd, CLUSTER, id, &extra, &env)
    }

    /// A node whose RAM disk has room for 56 of the fixture's experts (both shard files each).
    fn node(&self, id: &str) -> Process {
        let dir = self.shards.path().join(id);
        let mut command = Command::new(servers::node_binary());
        command.envs(self.collector.env());
        let extra = [
            "--ram-disk-bytes",
            "4000000",
            "--lease-ttl-seconds",
            "2",
            "--release-grace-seconds",
            "1",
        ];
        let etcd = self.etcd.endpoint();
        servers::node_with(command, &etcd, CLUSTER, id, "127.0.0.1:0", &dir, &extra)
    }

    async fn placement(&self, etcd: &Etcd) -> Option<Placement> {
        let value = get(etcd, ClusterKeys::new(CLUSTER).unwrap().placement()).await?;
        Some(Placement::from_json(&value).unwrap())
    }

    async fn leader(&self, etcd: &Etcd) -> Option<String> {
        let value = get(etcd, ClusterKeys::new(CLUSTER).unwrap().leader()).await?;
        Some(String::from_utf8(value).unwrap())
    }

    /// Waits until the stored placement satisfies `ok`; returns it and how long that took.
    async fn wait_placement(
        &self,
        etcd: &Etcd,
        what: &str,
        ok: impl Fn(&Placement) -> bool,
    ) -> (Placement, Duration) {
        let start = Instant::now();
        loop {
            if let Some(p) = self.placement(etcd).await
                && ok(&p)
            {
                return (p, start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The nodes named anywhere in `placement`.
fn nodes_of(placement: &Placement) -> BTreeSet<String> {
    placement
        .assignments
        .iter()
        .flat_map(|a| a.nodes.iter().map(|n| n.to_string()))
        .collect()
}

/// Every expert of the fixture is served by at least one node.
fn covers(placement: &Placement) -> bool {
    LAYERS
        .iter()
        .all(|&l| (0..EXPERTS).all(|e| !placement.nodes(l, e).is_empty()))
}

async fn info(address: &str) -> NodeInfo {
    let mut client = ExpertServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();
    client.info(InfoRequest {}).await.unwrap().into_inner()
}

/// Waits until the node at `address` follows `placement`: its epoch, and exactly the experts
/// assigned to `id`.
async fn wait_following(address: &str, id: &str, placement: &Placement) {
    let wanted: BTreeSet<(u32, u32)> = placement.experts_of(id).collect();
    let start = Instant::now();
    loop {
        let info = info(address).await;
        let held: BTreeSet<(u32, u32)> = info.experts.iter().map(|e| (e.layer, e.expert)).collect();
        if info.epoch >= placement.epoch && held == wanted {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "node {id} holds {held:?} at epoch {}, placement {} wants {wanted:?}",
            info.epoch,
            placement.epoch
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinators_place_every_expert_and_follow_failures() {
    let cluster = Cluster::start().await;
    let etcd = cluster.etcd.connect().await;
    let co1 = cluster.coordinator("co-1");
    let co2 = cluster.coordinator("co-2");
    let nodes = ["a", "b", "c"].map(|id| (id, cluster.node(id)));

    // Registration and the first placement.
    let ids = |p: &Placement| nodes_of(p) == BTreeSet::from(["a", "b", "c"].map(String::from));
    let (first, took) = cluster
        .wait_placement(&etcd, "a placement over a, b and c", |p| {
            covers(p) && ids(p)
        })
        .await;
    println!(
        "placement over 3 nodes after {took:?} (epoch {})",
        first.epoch
    );
    for a in &first.assignments {
        assert_eq!(a.nodes.len(), 2, "two replicas where room allows: {a:?}");
    }
    for (id, process) in &nodes {
        wait_following(&process.address, id, &first).await;
    }

    // A node SIGKILLed leaves when its lease expires; its experts are re-homed.
    let [(_, a), (_, b), (_, c)] = nodes;
    let killed = Instant::now();
    c.kill().expect("node c killed");
    let (after_kill, took) = cluster
        .wait_placement(&etcd, "c gone from the placement", |p| {
            covers(p) && !nodes_of(p).contains("c")
        })
        .await;
    println!(
        "node c SIGKILLed: re-placed after {:?} (lease TTL {TTL_SECONDS} s), epoch {}",
        killed.elapsed(),
        after_kill.epoch
    );
    assert!(
        took >= Duration::from_millis(500),
        "not before the lease could expire"
    );
    assert!(after_kill.epoch > first.epoch);
    wait_following(&a.address, "a", &after_kill).await;
    wait_following(&b.address, "b", &after_kill).await;

    // A joining node takes a share.
    let d = cluster.node("d");
    let (after_join, took) = cluster
        .wait_placement(&etcd, "d in the placement", |p| nodes_of(p).contains("d"))
        .await;
    let moved = after_join
        .assignments
        .iter()
        .filter(|x| x.nodes.iter().any(|n| n == "d"))
        .count();
    println!("node d joined: placed after {took:?}, holds {moved} of 32 copies");
    assert!(covers(&after_join) && after_join.epoch > after_kill.epoch);
    assert!(
        (6..=16).contains(&moved),
        "a fair share, not a reshuffle: {moved}"
    );
    wait_following(&d.address, "d", &after_join).await;

    // The leader SIGKILLed: the standby takes over and later placements have larger epochs.
    let leader = cluster.leader(&etcd).await.expect("a leader");
    let (dead, standby) = if leader == "co-1" {
        (co1, co2)
    } else {
        (co2, co1)
    };
    let killed = Instant::now();
    dead.kill().expect("the leader killed");
    loop {
        if cluster.leader(&etcd).await.is_some_and(|l| l != leader) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "no standby took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "leader {leader} SIGKILLed: the standby leads after {:?}",
        killed.elapsed()
    );
    let e = cluster.node("e");
    let (after_failover, _) = cluster
        .wait_placement(&etcd, "e placed by the new leader", |p| {
            nodes_of(p).contains("e")
        })
        .await;
    assert!(after_failover.epoch > after_join.epoch);

    // etcd restarted: coordinators and nodes carry on.
    let mut server = cluster.etcd;
    let stopped = Instant::now();
    server.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart().await;
    let etcd = server.connect().await;
    let cluster = Cluster {
        etcd: server,
        shards: cluster.shards,
        collector: cluster.collector,
    };
    let f = cluster.node("f");
    let (after_restart, took) = cluster
        .wait_placement(&etcd, "f placed after the etcd restart", |p| {
            nodes_of(p).contains("f")
        })
        .await;
    println!(
        "etcd restarted: f placed {took:?} after the restart ({:?} after the stop), epoch {}",
        stopped.elapsed(),
        after_restart.epoch
    );
    assert!(after_restart.epoch > after_failover.epoch && covers(&after_restart));
    for (id, node) in [("a", &a), ("b", &b), ("d", &d), ("e", &e), ("f", &f)] {
        wait_following(&node.address, id, &after_restart).await;
    }
    drop(standby);
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_completes_like_the_single_process_model_through_a_node_failure() {
    let cluster = Cluster::start().await;
    let etcd = cluster.etcd.connect().await;
    let _coordinator = cluster.coordinator("co-1");
    let a = cluster.node("a");
    let b = cluster.node("b");
    let (placement, _) = cluster
        .wait_placement(&etcd, "a placement over a and b", |p| {
            covers(p) && nodes_of(p).len() == 2
        })
        .await;
    wait_following(&a.address, "a", &placement).await;
    wait_following(&b.address, "b", &placement).await;
    let model = fixture();
    let grpc_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let grpc = format!("127.0.0.1:{grpc_port}");
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--etcd",
        &cluster.etcd.endpoint(),
        "--cluster",
        CLUSTER,
        "--http",
        "127.0.0.1:0",
        "--grpc",
        &grpc,
        "--threads",
        "1",
        "--expert-deadline-ms",
        "2000",
        "--gateway-id",
        "gw-test",
        "--stats-seconds",
        "1",
        // Two groups per step, so every result below also checks that running a step's
        // sequences as concurrent micro-batches changes nothing.
        "--micro-batches",
        "2",
    ];
    let gateway = process::start(
        &sibling_binary("gateway", "moe-gateway"),
        &args.map(String::from),
        &cluster.collector.env(),
    );
    wait_ready(&gateway.address).await;

    // The gRPC API lists what it serves, and nothing else, in both reflection versions; its
    // health by service name follows readiness (checked every second).
    let served = ["grpc.health.v1.Health", "moe.gateway.v1.GatewayService"];
    for listed in grpc::reflected_services(&grpc).await {
        assert_eq!(listed, served);
    }
    let serving = Instant::now();
    while grpc::health(&grpc, "moe.gateway.v1.GatewayService").await != Ok(1) {
        assert!(serving.elapsed() < Duration::from_secs(5), "never SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(grpc::health(&grpc, "").await, Ok(1));
    let unknown = grpc::health(&grpc, "moe.expert.v1.ExpertService").await;
    assert_eq!(
        unknown,
        Err(tonic::Code::NotFound),
        "the gateway serves no expert API"
    );

    // The single-process model with its experts at the nodes' high precision (f16).
    let pool = std::sync::Arc::new(moe_kernels::Pool::new(1).unwrap());
    let options = moe_model::LoadOptions::with_expert_format(Some(moe_kernels::Format::F16));
    let reference = moe_model::Model::load(&model, &options, pool).unwrap();
    let tokenizer = moe_model::Tokenizer::from_dir(&model).unwrap();
    let prompts: [&[u32]; 2] = [&[1, 17, 42, 7, 99, 3], &[5, 9, 11]];
    // The single-process model's 12 tokens after `prompt`, sampled with `sampling`.
    let reference_run = |prompt: &[u32], sampling: moe_model::SamplingParams| {
        let params = moe_model::GenerateParams {
            max_tokens: 12,
            sampling,
            ..moe_model::GenerateParams::default()
        };
        moe_model::generate(&reference, Some(&tokenizer), prompt, &params).unwrap()
    };
    let greedy_text = |prompt: &[u32]| reference_run(prompt, Default::default()).text.unwrap();
    let expected: Vec<String> = prompts.iter().map(|p| greedy_text(p)).collect();
    let complete = |prompt: &[u32]| serde_json::json!({"model": "mixtral", "prompt": prompt, "max_tokens": 12, "temperature": 0, "precision": "exact"});
    let mut completion_tokens = 0;
    for (prompt, want) in prompts.iter().zip(&expected) {
        let (status, body) = post(&gateway.address, "/v1/completions", &complete(prompt)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["text"], want.as_str(), "{body}");
        assert_eq!(body["usage"]["prompt_tokens"], prompt.len(), "{body}");
        completion_tokens += body["usage"]["completion_tokens"].as_u64().unwrap();
        println!("completion of {prompt:?}: {:?}", body["choices"][0]["text"]);
    }

    // 16 concurrent requests, batched together by the gateway: each equals its sequential result.
    let many: Vec<Vec<u32>> = (0..16u32)
        .map(|i| vec![1 + i, 40 + 3 * i, 7, i % 5 + 2])
        .collect();
    let sequential: Vec<String> = many.iter().map(|p| greedy_text(p)).collect();
    let started = Instant::now();
    let calls: Vec<_> = many
        .iter()
        .map(|p| {
            let (address, body) = (gateway.address.clone(), complete(p));
            tokio::spawn(async move { post(&address, "/v1/completions", &body).await })
        })
        .collect();
    for (i, (call, want)) in calls.into_iter().zip(&sequential).enumerate() {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(
            body["choices"][0]["text"],
            want.as_str(),
            "request {i}: {body}"
        );
        completion_tokens += body["usage"]["completion_tokens"].as_u64().unwrap();
    }
    println!(
        "16 concurrent completions of 12 tokens in {:?}",
        started.elapsed()
    );
    let metrics = get_text(&gateway.address, "/metrics").await.unwrap();
    let generated = metric(&metrics, "moe:generation_tokens_total", &[]);
    assert_eq!(generated, Some(completion_tokens as f64), "{metrics}");
    let labelled = metrics.lines().filter(|l| !l.starts_with('#'));
    assert!(
        labelled.clone().count() > 0
            && labelled
                .clone()
                .all(|l| l.contains("model_name=\"mixtral\"")),
        "every series carries model_name: {metrics}"
    );
    // `moe status --json` sees both nodes serving every expert, the leader and the gateway.
    let status = Command::new(sibling_binary("moe", "moe-cli"))
        .args([
            "status",
            "--etcd",
            &cluster.etcd.endpoint(),
            "--cluster",
            CLUSTER,
        ])
        .args(["--json", "--gateway", &gateway.address])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let ids: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"], "{status}");
    for node in status["nodes"].as_array().unwrap() {
        assert!(
            node["address"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{status}"
        );
        assert!(node["experts"].as_u64().unwrap() > 0, "{status}");
        assert_eq!(node["serving"], true, "{status}");
    }
    assert_eq!(status["placement"]["coverage"], 1.0, "{status}");
    assert!(
        status["placement"]["epoch"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert_eq!(status["leader"], "co-1", "{status}");
    assert!(status["gateways"][0]["error"].is_null(), "{status}");
    println!("moe status --json: {status}");

    // Every finished sequence gives its KV blocks back (the engine drops a sequence just after
    // sending its last event, so the count may lag the responses by a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = get_text(&gateway.address, "/metrics").await.unwrap();
        if metric(&now, "moe:kv_cache_blocks_in_use", &[]) == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "KV blocks still held:\n{now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Per-node series for both nodes, and the next layer's experts predicted and hinted. Each
    // series' labels, without the model_name every one carries.
    let series = |name: &str| -> Vec<(String, f64)> {
        metrics
            .lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
            .filter_map(|l| {
                let (labels, value) = l.rsplit_once(' ')?;
                let labels = labels.trim_end_matches('}');
                let labels = labels.trim_end_matches("model_name=\"mixtral\"");
                Some((
                    labels.trim_end_matches(',').to_string(),
                    value.parse().ok()?,
                ))
            })
            .collect()
    };
    // The nodes the placement names first served every layer request.
    let calls = series("moe:expert_node_calls_total");
    assert!(!calls.is_empty(), "{metrics}");
    for (labels, n) in &calls {
        assert!(
            ["node=\"a\"", "node=\"b\""].contains(&labels.as_str()),
            "{metrics}"
        );
        assert!(*n > 0.0, "{metrics}");
    }
    let loaded = series("moe:expert_node_placement_loaded");
    assert_eq!(
        loaded,
        [
            ("node=\"a\"".to_string(), 1.0),
            ("node=\"b\"".to_string(), 1.0)
        ],
        "{metrics}"
    );
    let received = series("moe:expert_node_bytes_received_total");
    assert!(received.iter().all(|(_, n)| *n > 0.0), "{metrics}");
    let accuracy = series("moe:expert_prediction_accuracy");
    assert_eq!(accuracy.len(), 1, "{metrics}");
    assert!((0.0..=1.0).contains(&accuracy[0].1), "{metrics}");
    println!("next-layer prediction accuracy: {}", accuracy[0].1);
    let hints = info(&a.address).await.prefetch_hints_received
        + info(&b.address).await.prefetch_hints_received;
    assert!(hints > 0, "the nodes received prefetch hints");

    // Each expert call's span in the gateway is the parent of the node's span for it, in the
    // same trace, across the two processes, both exported to the collector.
    let deadline = Instant::now() + Duration::from_secs(10);
    let joined = loop {
        let spans = cluster.collector.spans();
        let calls: Vec<_> = spans
            .iter()
            .filter(|s| s.service == "moe-gateway" && s.name == "expert_call")
            .collect();
        let joined = spans
            .iter()
            .filter(|s| s.service == "moe-expert-node" && s.name == "layer_request")
            .filter(|s| {
                calls
                    .iter()
                    .any(|c| c.trace_id == s.trace_id && c.span_id == s.parent_span_id)
            })
            .count();
        if joined > 0 || Instant::now() > deadline {
            break joined;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(joined > 0, "no node span joined a gateway trace");
    println!("{joined} node spans joined the gateway's traces");

    // Node b dies: its experts are served by their replicas on a, within the same steps.
    b.kill().expect("node b killed");
    for (prompt, want) in prompts.iter().zip(&expected) {
        let (status, body) = post(&gateway.address, "/v1/completions", &complete(prompt)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["choices"][0]["text"],
            want.as_str(),
            "after b died: {body}"
        );
    }
    let (status, body) = post(
        &gateway.address,
        "/v1/completions",
        &serde_json::json!({"model": "other", "prompt": "hi"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // The same through the gRPC API.
    let mut client = GatewayServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let request = GenerateRequest {
        model: "mixtral".into(),
        prompt: Some(generate_request::Prompt::TokenIds(TokenIds {
            ids: prompts[0].to_vec(),
        })),
        max_tokens: 12,
        temperature: Some(0.0),
        precision: "exact".into(),
        ..GenerateRequest::default()
    };
    let mut stream = client.generate(request.clone()).await.unwrap().into_inner();
    let (mut text, mut finished) = (String::new(), None);
    while let Some(message) = stream.message().await.unwrap() {
        match message.kind {
            Some(generate_response::Kind::Token(t)) => text.push_str(&t.text),
            Some(generate_response::Kind::Finished(f)) => finished = Some(f),
            Some(generate_response::Kind::Prompt(_)) | None => {}
        }
    }
    assert_eq!(text, expected[0]);
    let finished = finished.expect("a final message");
    assert_eq!(
        finished.usage.unwrap().prompt_tokens as usize,
        prompts[0].len()
    );
    let other = GenerateRequest {
        model: "other".into(),
        prompt: Some(generate_request::Prompt::Text("hi".into())),
        ..GenerateRequest::default()
    };
    let refused = client.generate(other).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused}");
    // A request message past the body limit (1 MiB) is refused before it is read.
    let huge = GenerateRequest {
        model: "mixtral".into(),
        prompt: Some(generate_request::Prompt::Text("x".repeat(2 << 20))),
        ..GenerateRequest::default()
    };
    let refused = client.generate(huge).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused}");
    // vLLM's filters through gRPC too: top_k 1 is greedy at any temperature; top_k -5 is refused.
    let only_best = GenerateRequest {
        temperature: Some(1.5),
        top_k: Some(1),
        ..request
    };
    let mut stream = client
        .generate(only_best.clone())
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(generate_response::Kind::Token(t)) = message.kind {
            text.push_str(&t.text);
        }
    }
    assert_eq!(text, expected[0]);
    let bad = GenerateRequest {
        top_k: Some(-5),
        ..only_best
    };
    let refused = client.generate(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("top_k"), "{refused}");

    // The prompt's log-probabilities through the cluster (echo with logprobs) are the
    // single-process model's, teacher-forced; gRPC's prompt_logprobs gives the same.
    let text_prompt = "The quick brown fox jumps over the lazy dog";
    let ids = tokenizer.encode(text_prompt).unwrap();
    let logits = reference
        .forward(&ids, &mut reference.new_cache(), moe_model::Logits::All)
        .unwrap();
    let vocab = logits.len() / ids.len();
    let want: Vec<f64> = (1..ids.len())
        .map(|i| {
            let row = &logits[(i - 1) * vocab..i * vocab];
            moe_model::ops::log_softmax(row)[ids[i] as usize]
        })
        .collect();
    let scored = serde_json::json!({"model": "mixtral", "prompt": text_prompt, "echo": true, "logprobs": 0, "max_tokens": 1, "temperature": 0, "precision": "exact"});
    let (status, body) = post(&gateway.address, "/v1/completions", &scored).await;
    assert_eq!(status, 200, "{body}");
    let got = body["choices"][0]["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(got.len(), ids.len() + 1, "{body}");
    assert!(got[0].is_null(), "{body}");
    for (g, w) in got[1..ids.len()].iter().zip(&want) {
        assert!((g.as_f64().unwrap() - w).abs() < 1e-5, "{g} vs {w}: {body}");
    }
    assert!(
        body["choices"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with(text_prompt)
    );
    let request = GenerateRequest {
        model: "mixtral".into(),
        prompt: Some(generate_request::Prompt::Text(text_prompt.into())),
        max_tokens: 1,
        temperature: Some(0.0),
        precision: "exact".into(),
        prompt_logprobs: true,
        ..GenerateRequest::default()
    };
    let mut stream = client.generate(request).await.unwrap().into_inner();
    let mut prompt_tokens = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(generate_response::Kind::Prompt(p)) = message.kind {
            prompt_tokens = p.tokens;
        }
    }
    let ids_back: Vec<u32> = prompt_tokens.iter().map(|t| t.id).collect();
    assert_eq!(ids_back, ids);
    assert_eq!(prompt_tokens[0].logprob, None);
    for (t, g) in prompt_tokens[1..].iter().zip(&got[1..]) {
        let http = g.as_f64().map(|v| v as f32);
        assert_eq!(t.logprob, http, "gRPC and HTTP agree");
    }

    // A streamed completion adds up to the same text.
    let mut streamed = complete(prompts[0]);
    streamed["stream"] = serde_json::Value::Bool(true);
    assert_eq!(
        post_streamed(&gateway.address, &streamed).await,
        expected[0]
    );

    // vLLM's filters and penalties by their effect: `top_k` 1 and `min_p` 1 leave only the most
    // likely token at any temperature; the penalties give what the single-process model gives
    // with them.
    for only_best in [
        serde_json::json!({"top_k": 1, "temperature": 1.5}),
        serde_json::json!({"min_p": 1.0, "temperature": 1.5, "seed": 3}),
    ] {
        let mut body = complete(prompts[0]);
        for (k, v) in only_best.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, body) = post(&gateway.address, "/v1/completions", &body).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["choices"][0]["text"],
            expected[0].as_str(),
            "{only_best}"
        );
    }
    let penalized = moe_model::SamplingParams {
        shaping: moe_model::sampling::Shaping {
            repetition_penalty: 1.8,
            presence_penalty: 0.7,
            frequency_penalty: 0.4,
            ..Default::default()
        },
        ..Default::default()
    };
    let want = reference_run(prompts[0], penalized).text.unwrap();
    let mut body = complete(prompts[0]);
    body["repetition_penalty"] = 1.8.into();
    body["presence_penalty"] = 0.7.into();
    body["frequency_penalty"] = 0.4.into();
    let (status, body) = post(&gateway.address, "/v1/completions", &body).await;
    assert_eq!(
        (status, body["choices"][0]["text"].as_str()),
        (200, Some(want.as_str()))
    );
    println!("penalized completion: {want:?}, greedy: {:?}", expected[0]);
    // A bias of +100 forces a token.
    let mut body = complete(prompts[0]);
    body["logit_bias"] = serde_json::json!({"7": 100});
    let (status, forced) = post(&gateway.address, "/v1/completions", &body).await;
    let sevens = tokenizer.decode(&[7; 12]).unwrap();
    assert_eq!(
        (status, forced["choices"][0]["text"].as_str()),
        (200, Some(sevens.as_str()))
    );
    // n choices are sampled on their own, choice j as a single request seeded seed + j would be.
    let sampled = |seed: u64, n: usize| {
        let mut body = complete(prompts[0]);
        body["temperature"] = 1.0.into();
        body["seed"] = seed.into();
        body["n"] = n.into();
        body
    };
    let (status, both) = post(&gateway.address, "/v1/completions", &sampled(5, 2)).await;
    assert_eq!(status, 200, "{both}");
    for (j, seed) in [5, 6].into_iter().enumerate() {
        let (_, single) = post(&gateway.address, "/v1/completions", &sampled(seed, 1)).await;
        assert_eq!(
            both["choices"][j]["text"], single["choices"][0]["text"],
            "{both}"
        );
        assert_eq!(both["choices"][j]["index"], j, "{both}");
    }
    assert_ne!(
        both["choices"][0]["text"], both["choices"][1]["text"],
        "{both}"
    );
    // A stop token ends generation where greedy would sample it, but not before min_tokens.
    let first = reference_run(prompts[0], Default::default()).token_ids[0];
    let mut body = complete(prompts[0]);
    body["stop_token_ids"] = serde_json::json!([first]);
    let (status, stopped) = post(&gateway.address, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop", "{stopped}");
    assert_eq!(stopped["choices"][0]["stop_reason"], first, "{stopped}");
    assert_eq!(stopped["choices"][0]["text"], "", "{stopped}");
    // The stop token was generated, so it is counted, as vLLM counts it.
    assert_eq!(stopped["usage"]["completion_tokens"], 1, "{stopped}");
    body["min_tokens"] = 4.into();
    let (status, held) = post(&gateway.address, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{held}");
    assert!(
        held["usage"]["completion_tokens"].as_u64().unwrap() >= 4,
        "{held}"
    );

    // Bad requests get OpenAI error JSON with the right status, and the gateway goes on serving.
    let (status, body) = post_raw(&gateway.address, "/v1/completions", "{\"model\": ").await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (400, Some("BadRequestError"))
    );
    let too_hot = serde_json::json!({"model": "mixtral", "prompt": [1, 2], "temperature": 5});
    let (status, body) = post(&gateway.address, "/v1/completions", &too_hot).await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("temperature")),
        "{body}"
    );
    let long: Vec<u32> = (0..400).map(|i| 3 + i % 200).collect();
    let too_long = serde_json::json!({"model": "mixtral", "prompt": long, "max_tokens": 8});
    let (status, body) = post(&gateway.address, "/v1/completions", &too_long).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("This model's maximum context length is"),
        "{body}"
    );
    let (status, body) = post(&gateway.address, "/v1/completions", &complete(prompts[0])).await;
    assert_eq!(
        (status, body["choices"][0]["text"].as_str()),
        (200, Some(expected[0].as_str()))
    );

    // The gateway reports the tokens it routed, under its lease, for the leader's rebalancing.
    let key = ClusterKeys::new(CLUSTER)
        .unwrap()
        .stats(&moe_state::keys::Name::new("gateway", "gw-test").unwrap());
    let start = Instant::now();
    let stats = loop {
        if let Some(value) = get(&etcd, key.clone()).await {
            let stats = moe_state::records::GatewayStats::from_json(&value).unwrap();
            if !stats.counts.is_empty() {
                break stats;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no popularity report"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stats.gateway, "gw-test");
    assert!(
        stats
            .counts
            .iter()
            .all(|c| c.layer < 2 && c.expert < EXPERTS && c.tokens > 0)
    );
    drop(a);
}
