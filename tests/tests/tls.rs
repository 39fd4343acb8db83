//! TLS between the cluster's processes, with certificates made at test time: one cluster CA
//! that signs every process's certificate (valid for servers and clients on 127.0.0.1), and a
//! foreign CA. etcd serves clients over mutual TLS. Checks that a cluster with mutual TLS on
//! every link completes like the single-process model; that a node whose certificate the
//! foreign CA signed cannot register in etcd; that a node's gRPC server refuses clients without
//! a certificate of the cluster; and that a gateway sends no work to a node presenting a
//! foreign certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use moe_proto::expert::InfoRequest;
use moe_proto::expert::expert_service_client::ExpertServiceClient;
use moe_service::test_pki::Authority;
use moe_service::tls::{self, Link, Names, TlsPaths};
use moe_state::etcd::Etcd;
use moe_state::keys::ClusterKeys;
use moe_state::records::Placement;
use moe_tests::EtcdServer;
use moe_tests::http::{post, wait_ready};
use moe_tests::process::{self, Process};
use moe_tests::servers::{self, fixture};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

const CLUSTER: &str = "tls";

/// The cluster CA, a foreign CA and the directory their files live in.
struct Pki {
    dir: tempfile::TempDir,
    cluster: Authority,
    foreign: Authority,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Authority::new("cluster", dir.path()).unwrap();
        let foreign = Authority::new("foreign", dir.path()).unwrap();
        Pki {
            dir,
            cluster,
            foreign,
        }
    }

    /// A certificate the cluster CA signed, with the cluster CA to check peers by.
    fn issue(&self, name: &str) -> TlsPaths {
        self.cluster.issue(name).unwrap()
    }

    /// A certificate the foreign CA signed, with the foreign CA to check peers by.
    fn issue_foreign(&self, name: &str) -> TlsPaths {
        self.foreign.issue(name).unwrap()
    }
}

/// etcd serving clients over mutual TLS, and a coordinator with mutual TLS on its health
/// endpoint and towards etcd.
async fn etcd_and_coordinator(pki: &Pki) -> (EtcdServer, Process) {
    let etcd = EtcdServer::start_tls(pki.issue("etcd")).await;
    let coordinator_tls = pki.issue("coordinator");
    let coordinator = servers::coordinator(
        &etcd.endpoint(),
        CLUSTER,
        &as_strs(&flags(&coordinator_tls, &coordinator_tls)),
    );
    (etcd, coordinator)
}

fn as_strs(strings: &[String]) -> Vec<&str> {
    strings.iter().map(String::as_str).collect()
}

/// `(flag, variable, path)` of each file `paths` names, with `names`' spelling.
fn settings(names: &Names, paths: &TlsPaths) -> Vec<(&'static str, &'static str, PathBuf)> {
    [
        (names.cert, &paths.cert),
        (names.key, &paths.key),
        (names.ca, &paths.ca),
    ]
    .into_iter()
    .filter_map(|((flag, var), path)| Some((flag, var, path.clone()?)))
    .collect()
}

/// The flags giving `cluster` as a process's cluster TLS files and `etcd` as its etcd ones.
fn flags(cluster: &TlsPaths, etcd: &TlsPaths) -> Vec<String> {
    let mut all = settings(&tls::Cluster::NAMES, cluster);
    all.extend(settings(&tls::Etcd::NAMES, etcd));
    all.into_iter()
        .flat_map(|(flag, _, path)| [flag.to_string(), path.display().to_string()])
        .collect()
}

/// An expert node command whose cluster and etcd TLS files come from `MOE_*` variables, its
/// stderr appended to `log`.
fn node_command(cluster: &TlsPaths, etcd: &TlsPaths, log: &Path) -> Command {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        &format!("exec \"$0\" \"$@\" 2>>'{}'", log.display()),
        servers::node_binary().to_str().unwrap(),
    ]);
    let mut all = settings(&tls::Cluster::NAMES, cluster);
    all.extend(settings(&tls::Etcd::NAMES, etcd));
    for (_, var, path) in all {
        command.env(var, path);
    }
    command
}

/// A client of the node at `address` over TLS with `tls`.
async fn node_client(address: &str, tls: ClientTlsConfig) -> Result<Channel, String> {
    Endpoint::from_shared(format!("https://{address}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| moe_service::causes(&e))
}

/// The node's `Info` over `channel`, or the failure's text.
async fn info(channel: Channel) -> Result<u64, String> {
    let mut client = ExpertServiceClient::new(channel);
    tokio::time::timeout(Duration::from_secs(5), client.info(InfoRequest {}))
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map(|info| info.into_inner().epoch)
        .map_err(|status| moe_service::causes(&status))
}

fn client_tls(paths: &TlsPaths) -> ClientTlsConfig {
    paths
        .client(&tls::Cluster::NAMES, None)
        .unwrap()
        .expect("a TLS client configuration")
}

/// The node ids registered in the cluster.
async fn registered(etcd: &Etcd) -> Vec<String> {
    let keys = ClusterKeys::new(CLUSTER).unwrap();
    let prefix = keys.nodes_prefix();
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();
    let response = etcd
        .client()
        .get(prefix.clone(), Some(options))
        .await
        .unwrap();
    response
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned())
        .collect()
}

async fn placement(etcd: &Etcd) -> Option<Placement> {
    let key = ClusterKeys::new(CLUSTER).unwrap().placement();
    let response = etcd.client().get(key, None).await.ok()?;
    Placement::from_json(response.kvs().first()?.value()).ok()
}

/// Waits up to 30 s for `ok`, polling every 50 ms; panics saying `what` otherwise.
async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, ok: impl Fn() -> F) {
    let start = Instant::now();
    while !ok().await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The single-process model's greedy completion of `prompt` (experts at f16, as nodes serve
/// them at high precision).
fn reference_completion(prompt: &[u32], max_tokens: usize) -> String {
    servers::reference_texts(&[prompt.to_vec()], max_tokens).remove(0)
}

fn completion(prompt: &[u32]) -> serde_json::Value {
    serde_json::json!({"model": "mixtral", "prompt": prompt, "max_tokens": 8, "temperature": 0, "precision": "exact"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_mutual_tls_everywhere_completes_like_the_single_process_model() {
    let pki = Pki::new();
    let (etcd, _coordinator) = etcd_and_coordinator(&pki).await;
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let node_tls = pki.issue("node");
    let shards = tempfile::tempdir().unwrap();
    let log = pki.dir.path().join("node.log");
    let node = servers::node(
        node_command(&node_tls, &node_tls, &log),
        &endpoint,
        CLUSTER,
        "a",
        "127.0.0.1:0",
        shards.path(),
    );
    let gateway_tls = pki.issue("gateway");
    let api_tls = pki.issue("api");
    let mut gateway_flags = flags(&gateway_tls, &gateway_tls);
    gateway_flags.extend(
        settings(&tls::Api::NAMES, &api_tls)
            .into_iter()
            .flat_map(|(flag, _, path)| [flag.to_string(), path.display().to_string()]),
    );
    let gateway = servers::gateway(&endpoint, CLUSTER, &as_strs(&gateway_flags));
    wait_ready(&gateway.address).await;

    let client = etcd.connect().await;
    assert_eq!(registered(&client).await, ["a"]);
    let prompt = [1, 17, 42, 7, 99, 3];
    let want = reference_completion(&prompt, 8);
    let (status, body) = post(&gateway.address, "/v1/completions", &completion(&prompt)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["text"], want.as_str(), "{body}");
    println!("over mutual TLS: {:?}", body["choices"][0]["text"]);

    // The node answers a client of the cluster over mutual TLS.
    let channel = node_client(&node.address, client_tls(&pki.issue("client")))
        .await
        .unwrap();
    let epoch = info(channel).await.unwrap();
    assert!(epoch >= 1, "the node follows the placement (epoch {epoch})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_foreign_certificate_cannot_register() {
    let pki = Pki::new();
    let (etcd, _coordinator) = etcd_and_coordinator(&pki).await;
    let endpoint = etcd.endpoint();
    let client = etcd.connect().await;
    let shards = tempfile::tempdir().unwrap();
    // The rogue node trusts etcd's CA, but its own client certificate is the foreign CA's.
    let rogue_log = pki.dir.path().join("rogue.log");
    let rogue_tls = TlsPaths {
        ca: Some(pki.cluster.ca().to_path_buf()),
        ..pki.issue_foreign("rogue")
    };
    let _rogue = servers::node(
        node_command(&TlsPaths::default(), &rogue_tls, &rogue_log),
        &endpoint,
        CLUSTER,
        "rogue",
        "127.0.0.1:0",
        &shards.path().join("rogue"),
    );
    let good_tls = pki.issue("good");
    let _good = servers::node(
        node_command(
            &TlsPaths::default(),
            &good_tls,
            &pki.dir.path().join("good.log"),
        ),
        &endpoint,
        CLUSTER,
        "good",
        "127.0.0.1:0",
        &shards.path().join("good"),
    );

    wait_for("the rogue node's complaint about etcd", || async {
        std::fs::read_to_string(&rogue_log).is_ok_and(|log| log.contains("waiting for etcd"))
    })
    .await;
    wait_for("a placement over the good node", || async {
        placement(&client).await.is_some_and(|p| {
            p.assignments
                .iter()
                .any(|a| a.nodes.iter().any(|n| n == "good"))
        })
    })
    .await;
    assert_eq!(registered(&client).await, ["good"]);
    let placed = placement(&client).await.unwrap();
    assert!(
        placed
            .assignments
            .iter()
            .all(|a| a.nodes.iter().all(|n| n == "good")),
        "{placed:?}"
    );
    let log = std::fs::read_to_string(&rogue_log).unwrap();
    println!("the rogue node says: {}", log.lines().next().unwrap_or(""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_clients_without_a_certificate_of_the_cluster() {
    let pki = Pki::new();
    let node_tls = pki.issue("node");
    let shards = tempfile::tempdir().unwrap();
    let model = fixture();
    let mut args: Vec<String> = [
        "--model",
        model.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--shard-dir",
        shards.path().to_str().unwrap(),
        "--threads",
        "1",
        "--backend",
        "cpu",
    ]
    .map(String::from)
    .to_vec();
    args.extend(flags(&node_tls, &TlsPaths::default()));
    let node = process::start(&servers::node_binary(), &args, &[]);

    let plaintext = ExpertServiceClient::connect(format!("http://{}", node.address)).await;
    let refused = match plaintext {
        Ok(mut client) => client
            .info(InfoRequest {})
            .await
            .err()
            .map(|s| s.to_string()),
        Err(e) => Some(e.to_string()),
    };
    assert!(refused.is_some(), "a plaintext client got an answer");

    let no_certificate = TlsPaths {
        cert: None,
        key: None,
        ..node_tls.clone()
    };
    let refused = match node_client(&node.address, client_tls(&no_certificate)).await {
        Ok(channel) => info(channel).await.err(),
        Err(e) => Some(e),
    };
    let refused = refused.expect("a TLS client without a certificate got an answer");
    println!("without a client certificate: {refused}");

    let foreign = TlsPaths {
        ca: Some(pki.cluster.ca().to_path_buf()),
        ..pki.issue_foreign("intruder")
    };
    let refused = match node_client(&node.address, client_tls(&foreign)).await {
        Ok(channel) => info(channel).await.err(),
        Err(e) => Some(e),
    };
    assert!(
        refused.is_some(),
        "a client of the foreign CA got an answer"
    );

    let channel = node_client(&node.address, client_tls(&pki.issue("client")))
        .await
        .unwrap();
    info(channel)
        .await
        .expect("a client of the cluster gets an answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_sends_no_work_to_a_node_with_a_foreign_certificate() {
    let pki = Pki::new();
    let (etcd, _coordinator) = etcd_and_coordinator(&pki).await;
    let endpoint = etcd.endpoint();
    // Registered with a certificate etcd accepts, but serving with the foreign CA's.
    let shards = tempfile::tempdir().unwrap();
    let impostor_tls = pki.issue_foreign("impostor");
    let impostor = servers::node(
        node_command(
            &impostor_tls,
            &pki.issue("impostor-etcd"),
            &pki.dir.path().join("impostor.log"),
        ),
        &endpoint,
        CLUSTER,
        "impostor",
        "127.0.0.1:0",
        shards.path(),
    );
    let gateway_tls = pki.issue("gateway");
    let gateway = servers::gateway(
        &endpoint,
        CLUSTER,
        &as_strs(
            &[
                flags(&gateway_tls, &gateway_tls),
                vec!["--expert-deadline-ms".into(), "1000".into()],
            ]
            .concat(),
        ),
    );
    wait_ready(&gateway.address).await;

    let (status, body) = post(
        &gateway.address,
        "/v1/completions",
        &completion(&[5, 9, 11]),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&impostor.address) && message.contains("invalid peer certificate"),
        "{body}"
    );
    println!("the gateway answers {status}: {message}");

    // The impostor serves whoever trusts the foreign CA: the refusal was the gateway's.
    let channel = node_client(&impostor.address, client_tls(&pki.issue_foreign("friend")))
        .await
        .unwrap();
    let epoch = info(channel).await.unwrap();
    assert!(epoch >= 1, "the impostor follows the placement");
}
