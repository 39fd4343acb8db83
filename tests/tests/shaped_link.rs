//! The link-aware precision policy on a real shaped link. One `expert-node` runs in its own
//! network namespace behind a veth pair; etcd, a `coordinator` and a `gateway` run here. Eight
//! streams of `auto` completions run while `tc` limits the link to 64 kbit/s each way, so that
//! even int8 activations keep it busy: the gateway's ladder for that node climbs to its top rung
//! (int8 activations, then low-precision weights for pairs above T1) and sends low-precision
//! pairs. `exact` completions sent meanwhile equal the single-process model's. Then a second node
//! joins on loopback, holding a replica of every expert, and the pairs planned low on the
//! saturated link go to it instead. Then the shaping is taken off and, under a light load, the
//! ladder comes back down to full precision. The times each step took are printed.
//!
//! Needs root and iproute2 (`ip netns`, `tc`); without them it prints why and does nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use moe_service::netns::Namespace;
use moe_tests::EtcdServer;
use moe_tests::http::{get_text, metric, post, wait_ready};
use moe_tests::servers::{self, fixture};

const CLUSTER: &str = "shaped";

/// The value of the gateway's series `name{node="far"}`.
async fn node_series(gateway: &str, name: &str) -> f64 {
    let metrics = get_text(gateway, "/metrics")
        .await
        .expect("the gateway's metrics");
    metric(&metrics, name, &[("node", "far")]).unwrap_or(0.0)
}

async fn rung(gateway: &str) -> u32 {
    node_series(gateway, "moe:expert_link_rung").await as u32
}

/// Waits up to `within` until the far node's rung satisfies `ok`; how long it took.
async fn wait_rung(
    gateway: &str,
    what: &str,
    within: Duration,
    ok: impl Fn(u32) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let now = rung(gateway).await;
        if ok(now) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{what}: the rung is still {now} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `streams` tasks sending `auto` completions of `max_tokens` back to back (pausing `pause`
/// between them) until `stop`.
fn load(
    gateway: &str,
    streams: u32,
    max_tokens: u32,
    pause: Duration,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u32>> {
    (0..streams)
        .map(|i| {
            let (gateway, stop) = (gateway.to_string(), Arc::clone(stop));
            tokio::spawn(async move {
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = serde_json::json!({"model": "mixtral", "prompt": [1 + i, 30 + i, 7], "max_tokens": max_tokens, "temperature": 0});
                    let (status, body) = post(&gateway, "/v1/completions", &body).await;
                    assert_eq!(status, 200, "{body}");
                    done += 1;
                    tokio::time::sleep(pause).await;
                }
                done
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_link_downgrades_and_recovers_while_exact_stays_exact() {
    let ns = match Namespace::create("link", 0) {
        Ok(ns) => ns,
        Err(why) => {
            println!("cannot run: a test network needs root and iproute2 ({why})");
            return;
        }
    };
    let etcd = EtcdServer::start_also_on(ns.host_ip).await;
    let shards = tempfile::tempdir().unwrap();
    let _coordinator =
        servers::coordinator(&etcd.endpoint(), CLUSTER, &["--lease-ttl-seconds", "2"]);
    // The node's lease keep-alives to etcd cross the shaped link too: with the default TTL (30 s)
    // they ride out the saturation, where a 2 s one can expire behind the queued layer traffic.
    let listen = format!("{}:0", ns.ns_ip);
    let command = ns.command(&servers::node_binary());
    let far = etcd.endpoint_on(ns.host_ip);
    let node = servers::node(command, &far, CLUSTER, "far", &listen, shards.path());
    assert!(
        node.address.starts_with(&ns.ns_ip.to_string()),
        "{}",
        node.address
    );
    let gateway = servers::gateway(
        &etcd.endpoint(),
        CLUSTER,
        &[
            "--expert-deadline-ms",
            "20000",
            "--prefetch-layers",
            "0",
            "--precision-ladder",
            "low-weights",
        ],
    );
    wait_ready(&gateway.address).await;

    // The single-process model with its experts at the node's high precision (f16).
    let model = fixture();
    let pool = Arc::new(moe_kernels::Pool::new(1).unwrap());
    let options = moe_model::LoadOptions::with_expert_format(Some(moe_kernels::Format::F16));
    let reference = moe_model::Model::load(&model, &options, pool).unwrap();
    let tokenizer = moe_model::Tokenizer::from_dir(&model).unwrap();
    let prompts: [&[u32]; 2] = [&[1, 17, 42, 7, 99, 3], &[5, 9, 11]];
    let params = moe_model::GenerateParams {
        max_tokens: 8,
        ..moe_model::GenerateParams::default()
    };
    let expected: Vec<String> = prompts
        .iter()
        .map(|p| {
            moe_model::generate(&reference, Some(&tokenizer), p, &params)
                .unwrap()
                .text
                .unwrap()
        })
        .collect();
    let exact = |prompt: &[u32]| serde_json::json!({"model": "mixtral", "prompt": prompt, "max_tokens": 8, "temperature": 0, "precision": "exact"});
    let check_exact = |when: &'static str| {
        let gateway = gateway.address.clone();
        let (prompts, expected) = (prompts.map(<[u32]>::to_vec), expected.clone());
        async move {
            for (prompt, want) in prompts.iter().zip(&expected) {
                let (status, body) = post(&gateway, "/v1/completions", &exact(prompt)).await;
                assert_eq!(status, 200, "{when}: {body}");
                assert_eq!(body["choices"][0]["text"], want.as_str(), "{when}: {body}");
            }
        }
    };
    check_exact("unshaped").await;
    assert_eq!(rung(&gateway.address).await, 0);

    // Eight streams on a 64 kbit/s link: the ladder climbs to its top.
    ns.shape("64kbit", 500).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let streams = load(&gateway.address, 8, 16, Duration::ZERO, &stop);
    let engaged = wait_rung(
        &gateway.address,
        "under saturation",
        Duration::from_secs(60),
        |r| r == 2,
    )
    .await;
    println!("shaped to 64 kbit/s: at the low-weights rung after {engaged:?}");
    assert_eq!(
        node_series(&gateway.address, "moe:expert_link_saturated").await,
        1.0
    );
    let started = Instant::now();
    check_exact("on the saturated link").await;
    println!(
        "two exact completions on the saturated link in {:?}",
        started.elapsed()
    );
    let low_pairs = || async {
        let metrics = get_text(&gateway.address, "/metrics").await.unwrap();
        let low = [("node", "far"), ("precision", "low")];
        metric(&metrics, "moe:expert_pairs_total", &low).unwrap_or(0.0) as u64
    };
    let low = low_pairs().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        low_pairs().await > low,
        "low-precision pairs are being sent"
    );

    // A second node joins on an unshaped link, holding a replica of every expert: the pairs
    // planned low on the saturated link go to it instead.
    let near_shards = tempfile::tempdir().unwrap();
    let near_command = std::process::Command::new(servers::node_binary());
    let _near = servers::node(
        near_command,
        &etcd.endpoint(),
        CLUSTER,
        "near",
        "127.0.0.1:0",
        near_shards.path(),
    );
    let joined = Instant::now();
    let both_loaded = |metrics: Option<String>| {
        let metrics = metrics.unwrap_or_default();
        ["far", "near"].iter().all(|n| {
            let node = [("node", *n)];
            metric(&metrics, "moe:expert_node_placement_loaded", &node) == Some(1.0)
        })
    };
    while !both_loaded(get_text(&gateway.address, "/metrics").await) {
        assert!(
            joined.elapsed() < Duration::from_secs(60),
            "the second node never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rerouted = || node_series(&gateway.address, "moe:expert_pairs_rerouted_total");
    let before = rerouted().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rerouted().await;
    println!(
        "a second node serving {:?} after it started: {} pairs rerouted from the saturated link \
         in 1 s",
        joined.elapsed(),
        after - before
    );
    assert!(after > before, "low pairs are rerouted to the calm replica");
    stop.store(true, Ordering::Relaxed);
    let mut completed = 0;
    for s in streams {
        completed += s.await.unwrap();
    }
    println!("{completed} auto completions while shaped");

    // The link recovers: under a light load the ladder comes back down to full precision.
    ns.unshape().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let streams = load(&gateway.address, 1, 4, Duration::from_millis(50), &stop);
    let recovered = wait_rung(
        &gateway.address,
        "after the link recovered",
        Duration::from_secs(60),
        |r| r == 0,
    )
    .await;
    println!("unshaped: back at full precision after {recovered:?}");
    stop.store(true, Ordering::Relaxed);
    for s in streams {
        s.await.unwrap();
    }
    assert_eq!(
        node_series(&gateway.address, "moe:expert_link_saturated").await,
        0.0
    );
    check_exact("after recovery").await;
    drop(node);
}
