//! A node whose shard filesystem fills up tells the truth: it loads what fits, lists the experts
//! it could not load with the cause in its record and `Info`, the gateway's readiness says what
//! is missing and why, and a completion that needs a missing expert fails at once with the cause.
//! Once a healthy node joins, the coordinator moves the experts the full node could not load to
//! it, and every completion succeeds, equal to the single-process model's. Real processes: etcd,
//! a `coordinator`, two `expert-node`s (one on a 2 MiB tmpfs nearly filled beforehand) and the
//! `gateway`.
//!
//! Needs root to mount the tmpfs; without it the test prints why and does nothing else.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use moe_state::keys::{ClusterKeys, Name};
use moe_state::records::{NodeRecord, Placement};
use moe_tests::http::{self, post_with_head, wait_ready};
use moe_tests::{EtcdServer, get, servers};

const CLUSTER: &str = "full-disk";
/// Room left on the tmpfs: the shards of about four of the fixture's sixteen experts (f16 and q4,
/// about 68 KiB together in whole pages).
const LEFT_BYTES: u64 = 300 * 1024;

/// A small tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// A 2 MiB tmpfs with all but `left` bytes taken by a file; `None` (saying why) when it
    /// cannot be mounted.
    fn mount(left: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let why = String::from_utf8_lossy(&out.stderr);
                println!("cannot run: mounting a tmpfs needs root ({})", why.trim());
                return None;
            }
            Err(e) => {
                println!("cannot run: no mount command ({e})");
                return None;
            }
        }
        let disk = SmallDisk { dir };
        let filler = vec![0u8; (2 << 20) - left as usize];
        std::fs::write(disk.path().join("filler"), filler).unwrap();
        Some(disk)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

async fn record(etcd: &moe_state::etcd::Etcd, id: &str) -> Option<NodeRecord> {
    let name = Name::new("node id", id).unwrap();
    let value = get(etcd, ClusterKeys::new(CLUSTER).unwrap().node(&name)).await?;
    Some(NodeRecord::from_json(&value).unwrap())
}

/// Waits until `GET /health/ready` reports experts that no node can load; returns its body.
async fn wait_unservable(address: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let response = http::get(address, "/health/ready").await;
        if let Some(response) = &response
            && response.status() == 503
        {
            let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
            if body["readiness"]["unservable_count"].as_u64() > Some(0) {
                return body;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "readiness never reported an unservable expert: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_says_so_and_a_healthy_node_beside_it_serves_everything() {
    let Some(disk) = SmallDisk::mount(LEFT_BYTES) else {
        return;
    };
    let etcd = EtcdServer::start().await;
    let endpoint = etcd.endpoint();
    let client = etcd.connect().await;
    let _coordinator = servers::coordinator(&endpoint, CLUSTER, &[]);
    let binary = servers::node_binary();
    let listen = "127.0.0.1:0";
    let _full = servers::node(
        Command::new(&binary),
        &endpoint,
        CLUSTER,
        "full",
        listen,
        disk.path(),
    );
    let gateway = servers::gateway(&endpoint, CLUSTER, &[]);

    // Readiness names the cause.
    let readiness = wait_unservable(&gateway.address).await;
    let message = readiness["error"]["message"].as_str().unwrap();
    assert!(message.contains("No space left on device"), "{readiness}");
    let first = &readiness["readiness"]["missing"][0];
    assert_eq!(first["nodes"][0]["node"], "full", "{readiness}");
    assert_eq!(first["nodes"][0]["state"], "unloadable", "{readiness}");

    // The node's record lists what it could not load, for lack of room.
    let full = record(&client, "full").await.unwrap();
    let unloadable: BTreeSet<(u32, u32)> = full
        .unloadable
        .iter()
        .flat_map(|f| f.experts.iter().copied())
        .collect();
    assert!(full.no_room(), "{full:?}");
    assert!((8..16).contains(&unloadable.len()), "{full:?}");
    println!(
        "the full node could not load {} of 16 experts",
        unloadable.len()
    );

    // A completion that needs a missing expert fails at once, with the cause.
    let prompt = serde_json::json!({"model": "mixtral", "prompt": [1, 17, 42, 7], "max_tokens": 8, "temperature": 0, "precision": "exact"});
    let started = Instant::now();
    let (status, head, body) =
        post_with_head(&gateway.address, "/v1/completions", &prompt.to_string()).await;
    let took = started.elapsed();
    println!("the completion was refused in {took:?}");
    assert_eq!(status, 503, "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    assert!(body.contains("No space left on device"), "{body}");
    assert!(took < Duration::from_secs(1), "refused after {took:?}");

    // A healthy node joins: the experts the full node could not load move to it.
    let shards = tempfile::tempdir().unwrap();
    let command = Command::new(&binary);
    let _healthy = servers::node(
        command,
        &endpoint,
        CLUSTER,
        "healthy",
        listen,
        shards.path(),
    );
    wait_ready(&gateway.address).await;
    let placement = get(&client, ClusterKeys::new(CLUSTER).unwrap().placement()).await;
    let placement = Placement::from_json(&placement.unwrap()).unwrap();
    for &(layer, expert) in &unloadable {
        let nodes = placement.nodes(layer, expert);
        assert!(
            !nodes.iter().any(|n| n == "full"),
            "{layer}/{expert}: {nodes:?}"
        );
    }
    let kept = placement.experts_of("full").count();
    println!("the full node keeps {kept} experts; the healthy node serves the rest");
    assert_eq!(kept, 16 - unloadable.len());

    // Every request succeeds, equal to the single-process model's.
    let prompts: Vec<Vec<u32>> = (0..8u32).map(|i| vec![1 + i, 40 + 3 * i, 7]).collect();
    let expected = servers::reference_texts(&prompts, 8);
    for (prompt, want) in prompts.iter().zip(&expected) {
        let body = serde_json::json!({"model": "mixtral", "prompt": prompt, "max_tokens": 8, "temperature": 0, "precision": "exact"});
        let (status, _, reply) =
            post_with_head(&gateway.address, "/v1/completions", &body.to_string()).await;
        assert_eq!(status, 200, "{reply}");
        let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["choices"][0]["text"], want.as_str(), "{reply}");
    }
}
