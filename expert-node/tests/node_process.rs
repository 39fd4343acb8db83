//! A real `expert-node` process on the Mixtral fixture, driven over gRPC: its weighted sums equal
//! the single-process model's MoE block at high and low precision; bad batches get precise
//! statuses while the stream keeps serving; SIGTERM drains; a restart maps its shards, and with a
//! `--host-memory` smaller than its experts it still starts and serves the cold ones; the backend
//! follows `--backend` and what the machine has.

mod common;

use common::{HIDDEN, Stream, assert_error, fixture, hidden_states, max_difference, one, request};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moe_kernels::cuda::Availability;
use moe_kernels::{Format, Pool};
use moe_model::moe::Route;
use moe_model::{LoadOptions, Model};
use moe_proto::expert::expert_service_client::ExpertServiceClient;
use moe_proto::expert::{
    ClientMessage, ExpertWork, InfoRequest, Precision, client_message, server_message,
};
use moe_proto::tensor::{self, Limits};
use moe_tests::process::{self, Process};
use tonic::Code;
use tonic::transport::Channel;

/// An `expert-node` on the fixture with the test's flags, through the end-to-end harness.
struct NodeProcess {
    process: Process,
    address: String,
}

impl NodeProcess {
    fn start(shards: &Path, extra: &[&str]) -> NodeProcess {
        let model = fixture();
        let fixed = [
            "--model",
            model.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--shard-dir",
            shards.to_str().unwrap(),
            "--precisions",
            "f16+q4",
            "--max-rows",
            "64",
            "--max-message-bytes",
            "1048576",
            "--threads",
            "1",
            "--drain-seconds",
            "5",
        ];
        let args: Vec<String> = fixed.iter().chain(extra).map(|a| a.to_string()).collect();
        let process = process::start(Path::new(env!("CARGO_BIN_EXE_expert-node")), &args, &[]);
        let address = process.address.clone();
        NodeProcess { process, address }
    }

    /// The node's "serving ..." line, printed once its experts are loaded.
    fn serving_line(&self) -> String {
        self.process
            .next_line(Duration::from_secs(60))
            .expect("the node reports it is serving")
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let service = "moe.expert.v1.ExpertService".to_string();
        loop {
            let channel = Channel::from_shared(format!("http://{}", self.address)).unwrap();
            if let Ok(channel) = channel.connect().await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let request = tonic_health::pb::HealthCheckRequest {
                    service: service.clone(),
                };
                let serving =
                    tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
                if let Ok(r) = health.check(request).await
                    && r.into_inner().status == serving
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the node did not become SERVING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn terminate(self) -> std::process::ExitStatus {
        self.process
            .terminate(Duration::from_secs(15))
            .expect("the node exits on SIGTERM")
    }
}

/// The fixture's 8 experts of one layer with the rows and gate weights `routes` send them, all at
/// `precision`.
fn routed_work(routes: &[Route], precision: Precision) -> Vec<ExpertWork> {
    (0..8u32)
        .map(|e| {
            let (rows, weights): (Vec<u32>, Vec<f32>) = routes
                .iter()
                .enumerate()
                .flat_map(|(t, r)| {
                    r.experts
                        .iter()
                        .zip(&r.weights)
                        .filter(|(x, _)| **x == e as usize)
                        .map(move |(_, w)| (t as u32, *w))
                })
                .unzip();
            ExpertWork {
                expert: e,
                rows,
                weights,
                precisions: vec![precision as i32],
                unimportance: Vec::new(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_the_models_experts_and_survives_bad_input_and_restarts() {
    let shards = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let node = NodeProcess::start(shards.path(), &[]);
    let serving = node.serving_line();
    assert!(serving.contains("(0 mapped, 32 built)"), "{serving}");
    assert!(serving.contains("32 resident, 0 cold"), "{serving}");
    node.wait_healthy().await;
    println!(
        "first start: SERVING after {:.3} s",
        start.elapsed().as_secs_f64()
    );

    let mut client = ExpertServiceClient::connect(format!("http://{}", node.address))
        .await
        .unwrap();
    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (info.experts.len(), info.hidden_size, info.max_rows),
        (16, HIDDEN as u32, 64)
    );
    assert!(info.experts.iter().all(|e| e.precisions.len() == 2));

    // What it serves, and nothing else, in both reflection versions.
    let served = ["grpc.health.v1.Health", "moe.expert.v1.ExpertService"];
    for listed in moe_tests::grpc::reflected_services(&node.address).await {
        assert_eq!(listed, served);
    }

    let pool = Arc::new(Pool::new(1).unwrap());
    let mut stream = Stream::open(&mut client).await;
    let n = 7;
    let h = hidden_states(n);
    let mut batch = 0;
    for (precision, format) in [(Precision::High, Format::F16), (Precision::Low, Format::Q4)] {
        let model = Model::load(
            &fixture(),
            &LoadOptions::with_expert_format(Some(format)),
            Arc::clone(&pool),
        )
        .unwrap();
        for layer in 0..2 {
            let block = model.moe_block(layer).unwrap();
            let experts = routed_work(&block.route(&pool, &h, n).unwrap(), precision);
            batch += 1;
            let server_message::Kind::Reply(reply) = stream
                .call(request(batch, layer as u32, &h, n, experts))
                .await
            else {
                panic!("layer {layer} {precision:?}: refused");
            };
            let got = tensor::decode(reply.output.as_ref().unwrap(), HIDDEN, &Limits::default())
                .unwrap()
                .data;
            let want = block.forward(&pool, &h, n).unwrap();
            let worst = max_difference(&got, &want);
            assert!(
                worst <= 1e-6,
                "layer {layer} {precision:?}: max difference {worst}"
            );
            let used = Precision::try_from(reply.precisions[0].used[0]).unwrap();
            assert_eq!(
                used,
                if format == Format::F16 {
                    Precision::F16
                } else {
                    Precision::Q4
                }
            );
        }
    }

    let wide: Vec<f32> = vec![0.5; 2 * (HIDDEN + 1)];
    assert_error(
        stream
            .call(request(100, 0, &wide, 2, vec![one(0, vec![0])]))
            .await,
        Code::InvalidArgument,
    );
    assert_error(
        stream
            .call(request(101, 0, &h, n, vec![one(99, vec![0])]))
            .await,
        Code::FailedPrecondition,
    );
    assert_error(
        stream
            .call(request(102, 5, &h, n, vec![one(0, vec![0])]))
            .await,
        Code::FailedPrecondition,
    );
    assert_error(
        stream
            .call(request(103, 0, &h, n, vec![one(0, vec![n as u32])]))
            .await,
        Code::InvalidArgument,
    );
    let too_many = hidden_states(65);
    assert_error(
        stream
            .call(request(104, 0, &too_many, 65, vec![one(0, vec![0])]))
            .await,
        Code::ResourceExhausted,
    );
    let mut short = request(105, 0, &h, n, vec![one(0, vec![0])]);
    short.tokens.as_mut().unwrap().data = short.tokens.as_ref().unwrap().data.slice(..10);
    assert_error(stream.call(short).await, Code::InvalidArgument);
    let still = stream
        .call(request(106, 1, &h, n, vec![one(3, vec![0, 6])]))
        .await;
    assert!(
        matches!(still, server_message::Kind::Reply(_)),
        "the stream keeps serving after bad batches"
    );

    drop(stream);

    // A message over --max-message-bytes ends only its own stream.
    let mut oversized = Stream::open(&mut client).await;
    let huge = hidden_states(5000);
    let message = ClientMessage {
        kind: Some(client_message::Kind::Layer(request(
            200,
            0,
            &huge,
            5000,
            vec![one(0, vec![0])],
        ))),
    };
    oversized.send.send(message).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), oversized.receive.message())
        .await
        .expect("an answer within the deadline")
        .expect_err("an oversized message fails its stream");
    println!(
        "oversized message: {:?} {}",
        status.code(),
        status.message()
    );
    assert_eq!(status.code(), Code::OutOfRange);
    let mut fresh = Stream::open(&mut client).await;
    let server_message::Kind::Reply(warm) = fresh
        .call(request(201, 0, &h, n, vec![one(2, vec![1])]))
        .await
    else {
        panic!("a new stream is served");
    };
    drop(fresh);

    assert!(
        node.terminate().success(),
        "SIGTERM drains and exits cleanly"
    );

    // Room for one f16 expert: the node starts anyway and reads the others from the RAM disk.
    let budget = moe_expert_node::shard::payload_bytes(Format::F16, HIDDEN, 128) as u64;
    let restart = Instant::now();
    let node = NodeProcess::start(shards.path(), &["--host-memory", &budget.to_string()]);
    let serving = node.serving_line();
    assert!(serving.contains("(32 mapped, 0 built)"), "{serving}");
    assert!(serving.contains("1 resident, 31 cold"), "{serving}");
    node.wait_healthy().await;
    println!(
        "restart from shards: SERVING after {:.3} s",
        restart.elapsed().as_secs_f64()
    );
    let mut client = ExpertServiceClient::connect(format!("http://{}", node.address))
        .await
        .unwrap();
    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (info.host_memory_bytes, info.hot_set_bytes),
        (budget, budget)
    );
    assert_eq!((info.hot_experts, info.cold_experts), (1, 31));
    let mut stream = Stream::open(&mut client).await;
    let server_message::Kind::Reply(cold) = stream
        .call(request(300, 0, &h, n, vec![one(2, vec![1])]))
        .await
    else {
        panic!("a cold expert is served");
    };
    assert_eq!(cold.output, warm.output, "the same sums from the RAM disk");
    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.cold_loads, 1);
    assert!(info.hot_set_bytes <= budget);
}

/// `auto` takes the GPU when the machine has one and says why not otherwise; `cuda` refuses to
/// start without one, naming what is missing; `cpu` never looks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_follows_the_flag_and_the_machine() {
    let shards = tempfile::tempdir().unwrap();
    let cpu = NodeProcess::start(shards.path(), &["--backend", "cpu"]);
    let serving = cpu.serving_line();
    assert!(serving.ends_with("; backend cpu"), "{serving}");
    assert!(cpu.terminate().success());

    match Availability::probe() {
        Availability::Unavailable(reason) => {
            println!("this machine has no CUDA backend: {reason}");
            let auto = NodeProcess::start(shards.path(), &["--backend", "auto"]);
            let serving = auto.serving_line();
            let expected = format!("; backend cpu (CUDA unavailable: {reason})");
            assert!(serving.ends_with(&expected), "{serving}");
            assert!(auto.terminate().success());

            let refused = Command::new(env!("CARGO_BIN_EXE_expert-node"))
                .args([
                    "--model",
                    fixture().to_str().unwrap(),
                    "--listen",
                    "127.0.0.1:0",
                ])
                .args(["--shard-dir", shards.path().to_str().unwrap()])
                .args(["--backend", "cuda"])
                .output()
                .unwrap();
            assert!(!refused.status.success());
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(
                stderr.contains(&format!("error: --backend cuda: {reason}")),
                "{stderr}"
            );
        }
        Availability::Ready { devices } => {
            println!("this machine has {devices} CUDA device(s)");
            let cuda = NodeProcess::start(shards.path(), &["--backend", "cuda"]);
            let serving = cuda.serving_line();
            assert!(serving.contains("; backend cuda ("), "{serving}");
            cuda.wait_healthy().await;
            let mut client = ExpertServiceClient::connect(format!("http://{}", cuda.address))
                .await
                .unwrap();
            let info = client.info(InfoRequest {}).await.unwrap().into_inner();
            assert_eq!(info.backend, "cuda");
            assert!(info.gpu_memory_bytes > 0);
            // Each layer's weighted sum from the GPU kernels equals the model's MoE block on
            // the weights each expert actually ran at (a low-precision request may be served by
            // a resident high-precision copy), up to f32 summation order.
            let pool = Arc::new(Pool::new(1).unwrap());
            let models: Vec<(Format, Model)> = [Format::F16, Format::Q4]
                .into_iter()
                .map(|format| {
                    let options = LoadOptions::with_expert_format(Some(format));
                    let model = Model::load(&fixture(), &options, Arc::clone(&pool)).unwrap();
                    (format, model)
                })
                .collect();
            let mut stream = Stream::open(&mut client).await;
            let n = 7;
            let h = hidden_states(n);
            let mut batch = 0;
            for precision in [Precision::High, Precision::Low] {
                for layer in 0..2u32 {
                    let routes = models[0].1.moe_block(layer as usize).unwrap();
                    let experts = routed_work(&routes.route(&pool, &h, n).unwrap(), precision);
                    batch += 1;
                    let kind = stream.call(request(batch, layer, &h, n, experts)).await;
                    let server_message::Kind::Reply(reply) = kind else {
                        panic!("layer {layer} {precision:?}: refused");
                    };
                    let used: Vec<Precision> = reply
                        .precisions
                        .iter()
                        .flat_map(|p| &p.used)
                        .map(|&u| Precision::try_from(u).unwrap())
                        .collect();
                    let format = match used[..] {
                        [Precision::F16, ..] => Format::F16,
                        [Precision::Q4, ..] => Format::Q4,
                        _ => panic!("layer {layer} {precision:?}: used {used:?}"),
                    };
                    assert!(used.iter().all(|&u| u == used[0]), "{used:?}");
                    let model = &models.iter().find(|(f, _)| *f == format).unwrap().1;
                    let block = model.moe_block(layer as usize).unwrap();
                    let output = reply.output.as_ref().unwrap();
                    let got = tensor::decode(output, HIDDEN, &Limits::default())
                        .unwrap()
                        .data;
                    let want = block.forward(&pool, &h, n).unwrap();
                    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let worst = max_difference(&got, &want);
                    println!(
                        "GPU layer {layer}, {precision:?} asked, {format} used: max difference {worst:.2e} (largest output {scale:.2e})"
                    );
                    assert!(
                        worst <= 1e-5 * scale + 1e-6,
                        "layer {layer} {format}: {worst}"
                    );
                }
            }
            assert!(cuda.terminate().success());
        }
    }
}
