//! Faults under load, with real processes: one etcd, two `coordinator`s, four `expert-node`s
//! (one in its own network namespace, behind a veth link the test can cut or slow down) and two
//! `gateway`s serving the Mixtral fixture, every expert on two nodes. For each fault, 16 streams
//! (8 per gateway) send streamed `exact` completions back to back; the fault is injected after 2 s
//! of that load, healed where it heals, and the load goes on for a while after. Every completion
//! must come back whole and equal to the single-process model's; the one exception is the
//! gateway killed on purpose, whose requests must fail at the client at once rather than hang.
//!
//! Per fault it prints: the requests sent, those lost (an error, a cut, or a wrong text, on a
//! gateway that was not killed: the goal is 0, and the test fails otherwise), the p99 and the
//! longest gap between a request's events (the first token counts from the request) among those
//! that ended after the fault, and the time from the fault to the end of the last gap longer
//! than twice the longest seen in the 2 s before it (0 when there was none): when the cluster
//! was back to its steady pace.
//!
//! The partition (the veth taken down) and the slow link (tc tbf at 256 kbit/s with a 20 ms
//! queue, dropping what overflows it: this kernel has no netem) need root and iproute2 (`ip
//! netns`, `tc`); without them those two faults print why they cannot run and the others still do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use moe_service::netns::Namespace;
use moe_state::keys::ClusterKeys;
use moe_tests::http::{Streamed, get_text, stream_completion, wait_ready};
use moe_tests::process::{Process, Signal};
use moe_tests::servers;
use moe_tests::{EtcdServer, get};

const CLUSTER: &str = "faults";
const STREAMS: u32 = 16;
const MAX_TOKENS: u32 = 16;
/// The gateways' deadline on each expert call.
const DEADLINE_MS: &str = "2000";
/// Lease TTL of the nodes' registrations and the coordinators' candidacies.
const TTL: &str = "3";
/// Load before each fault, to measure the steady pace by.
const BEFORE: Duration = Duration::from_secs(2);
/// Load after each fault has healed (or, for one that does not heal, after it).
const AFTER: Duration = Duration::from_secs(5);
/// How long a hung node stays stopped, a partition lasts, a link stays slow and etcd stays
/// down: longer than the expert-call deadline and the lease TTL.
const HELD: Duration = Duration::from_secs(6);
/// The longest a request may take before it counts as hung.
const REQUEST_WITHIN: Duration = Duration::from_secs(60);

/// One completion as a stream saw it.
struct Outcome {
    gateway: usize,
    started: Instant,
    ended: Instant,
    /// The events' arrival times, or what went wrong.
    result: Result<Vec<Instant>, String>,
}

/// What one fault did to the load.
struct Row {
    fault: &'static str,
    requests: usize,
    lost: Vec<String>,
    /// Requests to a gateway killed on purpose that failed at the client, and the longest any
    /// of them took to fail after the kill.
    cut: usize,
    cut_within: Duration,
    p99_gap: Duration,
    max_gap: Duration,
    steady_after: Duration,
    /// Streams of gateways still serving that completed a request sent after the fault healed.
    recovered_streams: usize,
    serving_streams: usize,
}

/// The cluster under test, each process held so that a fault can take it away.
struct Cluster {
    etcd: EtcdServer,
    shards: tempfile::TempDir,
    coordinators: Vec<(String, Option<Process>)>,
    nodes: Vec<(String, Option<Process>)>,
    gateways: Vec<Option<Process>>,
    /// The namespace of node `far`, when the test could make one.
    net: Option<Namespace>,
}

impl Cluster {
    async fn start() -> Cluster {
        let net = Namespace::create("faults", 0)
            .map_err(|why| {
                println!(
                    "the partition and slow-link faults cannot run: a test network needs root \
                     and iproute2 ({why})"
                )
            })
            .ok();
        let etcd = match &net {
            Some(net) => EtcdServer::start_also_on(net.host_ip).await,
            None => EtcdServer::start().await,
        };
        let mut cluster = Cluster {
            etcd,
            shards: tempfile::tempdir().unwrap(),
            coordinators: Vec::new(),
            nodes: Vec::new(),
            gateways: Vec::new(),
            net,
        };
        for id in ["co-1", "co-2"] {
            let extra = ["--lease-ttl-seconds", TTL, "--replication", "2"];
            let endpoint = cluster.etcd.endpoint();
            let process = servers::coordinator_named(&endpoint, CLUSTER, id, &extra, &[]);
            cluster.coordinators.push((id.to_string(), Some(process)));
            // co-1 campaigns first, so it leads.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut ids = vec!["a", "b", "c"];
        if cluster.net.is_some() {
            ids.push("far");
        }
        for id in ids {
            let process = cluster.node(id);
            cluster.nodes.push((id.to_string(), Some(process)));
        }
        for id in ["gw-1", "gw-2"] {
            let extra = [
                "--gateway-id",
                id,
                "--expert-deadline-ms",
                DEADLINE_MS,
                "--etcd-timeout-seconds",
                "2",
            ];
            let gateway = servers::gateway(&cluster.etcd.endpoint(), CLUSTER, &extra);
            wait_ready(&gateway.address).await;
            cluster.gateways.push(Some(gateway));
        }
        cluster
    }

    /// Starts node `id` (again), with its shards in its own directory, inside the namespace for
    /// `far`.
    fn node(&self, id: &str) -> Process {
        let shards = self.shards.path().join(id);
        let binary = servers::node_binary();
        let (command, etcd, listen) = match (&self.net, id) {
            (Some(net), "far") => (
                net.command(&binary),
                self.etcd.endpoint_on(net.host_ip),
                format!("{}:0", net.ns_ip),
            ),
            _ => (
                std::process::Command::new(&binary),
                self.etcd.endpoint(),
                "127.0.0.1:0".to_string(),
            ),
        };
        let extra = ["--lease-ttl-seconds", TTL, "--release-grace-seconds", "5"];
        servers::node_with(command, &etcd, CLUSTER, id, &listen, &shards, &extra)
    }

    fn slot(&mut self, id: &str) -> &mut Option<Process> {
        let (_, process) = self.nodes.iter_mut().find(|(n, _)| n == id).unwrap();
        process
    }

    fn gateway_addresses(&self) -> Vec<Option<String>> {
        self.gateways
            .iter()
            .map(|g| g.as_ref().map(|g| g.address.clone()))
            .collect()
    }

    /// The coordinator holding the leadership, from etcd, waiting up to 30 s for one (the
    /// coordinators campaign again after etcd was away).
    async fn leader(&self) -> String {
        let etcd = self.etcd.connect().await;
        let key = ClusterKeys::new(CLUSTER).unwrap().leader();
        let start = Instant::now();
        loop {
            if let Some(leader) = get(&etcd, key.clone()).await {
                return String::from_utf8(leader).unwrap();
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The faults, in the order the test injects them (each leaves the cluster serving for the next).
#[derive(Clone, Copy)]
enum Fault {
    NodeKilled,
    NodeRestarted,
    NodeHung,
    Partition,
    SlowLink,
    EtcdDown,
    LeaderKilled,
    GatewayKilled,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::NodeKilled => "node SIGKILLed",
            Fault::NodeRestarted => "killed node started again",
            Fault::NodeHung => "node SIGSTOPped 6 s",
            Fault::Partition => "node partitioned 6 s",
            Fault::SlowLink => "node link at 256 kbit/s 6 s",
            Fault::EtcdDown => "etcd down 6 s",
            Fault::LeaderKilled => "leader coordinator SIGKILLed",
            Fault::GatewayKilled => "gateway SIGKILLed",
        }
    }

    fn needs_net(self) -> bool {
        matches!(self, Fault::Partition | Fault::SlowLink)
    }

    /// Injects the fault and heals it, if it heals; the gateway it killed, if any.
    async fn inject(self, cluster: &mut Cluster) -> Option<usize> {
        match self {
            Fault::NodeKilled => {
                cluster
                    .slot("c")
                    .take()
                    .unwrap()
                    .kill()
                    .expect("node c killed");
            }
            Fault::NodeRestarted => {
                let node = cluster.node("c");
                *cluster.slot("c") = Some(node);
            }
            Fault::NodeHung => {
                let node = cluster.slot("b").take().unwrap();
                node.signal(Signal::Stop).expect("node b stopped");
                tokio::time::sleep(HELD).await;
                node.signal(Signal::Cont).expect("node b continued");
                *cluster.slot("b") = Some(node);
            }
            Fault::Partition => {
                let net = cluster.net.as_ref().unwrap();
                net.set_link(false).unwrap();
                tokio::time::sleep(HELD).await;
                net.set_link(true).unwrap();
            }
            Fault::SlowLink => {
                let net = cluster.net.as_ref().unwrap();
                net.shape("256kbit", 20).unwrap();
                tokio::time::sleep(HELD).await;
                net.unshape().unwrap();
            }
            Fault::EtcdDown => {
                cluster.etcd.stop();
                tokio::time::sleep(HELD).await;
                cluster.etcd.restart().await;
            }
            Fault::LeaderKilled => {
                let leader = cluster.leader().await;
                let (_, process) = cluster
                    .coordinators
                    .iter_mut()
                    .find(|(id, _)| *id == leader)
                    .unwrap();
                process.take().unwrap().kill().expect("the leader killed");
            }
            Fault::GatewayKilled => {
                cluster.gateways[1]
                    .take()
                    .unwrap()
                    .kill()
                    .expect("gateway 2 killed");
                return Some(1);
            }
        }
        None
    }
}

/// `STREAMS` tasks, stream `i` on gateway `i % 2` sending prompt `i`'s completion back to back
/// until `stop` or until one fails; a completion whose text is not `expected[i]` fails.
fn load(
    gateways: &[Option<String>],
    prompts: &[Vec<u32>],
    expected: &[String],
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Outcome>>> {
    (0..STREAMS as usize)
        .filter_map(|i| {
            let gateway = i % gateways.len();
            let address = gateways[gateway].clone()?;
            let body = serde_json::json!({"model": "mixtral", "prompt": prompts[i], "max_tokens": MAX_TOKENS, "temperature": 0, "precision": "exact", "stream": true});
            let (want, stop) = (expected[i].clone(), Arc::clone(stop));
            Some(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let result = match stream_completion(&address, &body, REQUEST_WITHIN).await {
                        Ok(Streamed { events, text, .. }) if text == want => Ok(events),
                        Ok(Streamed { text, .. }) => Err(format!("{text:?}, not {want:?}")),
                        Err(e) => Err(e),
                    };
                    let failed = result.is_err();
                    outcomes.push(Outcome {
                        gateway,
                        started,
                        ended: Instant::now(),
                        result,
                    });
                    if failed {
                        break;
                    }
                }
                outcomes
            }))
        })
        .collect()
}

/// The `q` quantile of `values` (sorted here), zero when there are none.
fn quantile(values: &mut [Duration], q: f64) -> Duration {
    values.sort();
    match values.len() {
        0 => Duration::ZERO,
        n => values[((n - 1) as f64 * q).round() as usize],
    }
}

/// Every gap between a completed request's events, as (when it ended, how long it was); the
/// first counts from the request.
fn gaps(outcomes: &[Outcome]) -> Vec<(Instant, Duration)> {
    outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().ok().map(|events| (o.started, events)))
        .flat_map(|(started, events)| {
            std::iter::once(started)
                .chain(events.iter().copied())
                .zip(events.iter().copied())
                .map(|(from, to)| (to, to - from))
        })
        .collect()
}

/// Runs the load, injects `fault` after [`BEFORE`], keeps the load on for [`AFTER`] once it has
/// healed, and measures what happened.
async fn measure(
    fault: Fault,
    cluster: &mut Cluster,
    prompts: &[Vec<u32>],
    expected: &[String],
) -> Row {
    let stop = Arc::new(AtomicBool::new(false));
    let streams = load(&cluster.gateway_addresses(), prompts, expected, &stop);
    tokio::time::sleep(BEFORE).await;
    let injected = Instant::now();
    let killed = fault.inject(cluster).await;
    let healed = Instant::now();
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::Relaxed);
    let mut by_stream = Vec::new();
    for stream in streams {
        by_stream.push(stream.await.expect("a stream task"));
    }
    let serving: Vec<&Vec<Outcome>> = by_stream
        .iter()
        .filter(|s| s.first().is_some_and(|o| Some(o.gateway) != killed))
        .collect();
    let serving_streams = serving.len();
    let recovered_streams = serving
        .iter()
        .filter(|s| s.iter().any(|o| o.started >= healed && o.result.is_ok()))
        .count();
    let outcomes: Vec<Outcome> = by_stream.into_iter().flatten().collect();
    let is_cut = |o: &Outcome| Some(o.gateway) == killed && o.result.is_err();
    let lost = outcomes
        .iter()
        .filter(|o| !is_cut(o))
        .filter_map(|o| {
            let error = o.result.as_ref().err()?;
            Some(format!("a request to gateway {}: {error}", o.gateway + 1))
        })
        .collect();
    let cut: Vec<&Outcome> = outcomes.iter().filter(|o| is_cut(o)).collect();
    let gaps = gaps(&outcomes);
    let steady = gaps
        .iter()
        .filter(|(end, _)| *end < injected)
        .map(|(_, gap)| *gap)
        .max()
        .unwrap_or_default();
    let mut after: Vec<Duration> = gaps
        .iter()
        .filter(|(end, _)| *end >= injected)
        .map(|(_, gap)| *gap)
        .collect();
    Row {
        fault: fault.name(),
        requests: outcomes.len(),
        lost,
        cut: cut.len(),
        cut_within: cut
            .iter()
            .map(|o| o.ended.saturating_duration_since(injected))
            .max()
            .unwrap_or_default(),
        p99_gap: quantile(&mut after, 0.99),
        max_gap: after.last().copied().unwrap_or_default(),
        steady_after: gaps
            .iter()
            .filter(|(end, gap)| *end >= injected && *gap > 2 * steady)
            .map(|(end, _)| *end - injected)
            .max()
            .unwrap_or_default(),
        recovered_streams,
        serving_streams,
    }
}

/// Waits until the gateways count exactly the live nodes as registered and loaded with the
/// current placement.
async fn wait_serving(cluster: &Cluster) {
    let live: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|(_, process)| process.is_some())
        .map(|(id, _)| {
            format!("moe:expert_node_placement_loaded{{node=\"{id}\",model_name=\"mixtral\"}} 1")
        })
        .collect();
    let start = Instant::now();
    for gateway in cluster.gateways.iter().flatten() {
        loop {
            let metrics = get_text(&gateway.address, "/metrics")
                .await
                .unwrap_or_default();
            let mut loaded: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("moe:expert_node_placement_loaded{"))
                .collect();
            loaded.sort();
            if loaded == live {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the placement never settled on {live:?}: {loaded:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_streams_lose_no_request_to_any_fault() {
    let mut cluster = Cluster::start().await;
    // The single-process model with its experts at the nodes' high precision (f16).
    let prompts: Vec<Vec<u32>> = (0..STREAMS)
        .map(|i| vec![1 + i, 40 + 3 * i, 7, i % 5 + 2])
        .collect();
    let expected = servers::reference_texts(&prompts, MAX_TOKENS as usize);

    let faults = [
        Fault::NodeKilled,
        Fault::NodeRestarted,
        Fault::NodeHung,
        Fault::Partition,
        Fault::SlowLink,
        Fault::EtcdDown,
        Fault::LeaderKilled,
        Fault::GatewayKilled,
    ];
    let mut rows = Vec::new();
    for fault in faults {
        if fault.needs_net() && cluster.net.is_none() {
            println!("{}: not run, there is no test network", fault.name());
            continue;
        }
        wait_serving(&cluster).await;
        let row = measure(fault, &mut cluster, &prompts, &expected).await;
        println!(
            "{}: {} requests, {} lost, gaps p99 {} ms max {} ms, steady after {} ms{}",
            row.fault,
            row.requests,
            row.lost.len(),
            millis(row.p99_gap),
            millis(row.max_gap),
            millis(row.steady_after),
            row.lost
                .first()
                .map(|l| format!(" ({l})"))
                .unwrap_or_default()
        );
        rows.push(row);
    }
    let leader = cluster.leader().await;
    println!("the leader after the faults: {leader}");

    println!(
        "\n| fault | requests | lost | p99 gap ms | max gap ms | steady after ms |\n|---|---|---|---|---|---|"
    );
    for row in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            row.fault,
            row.requests,
            row.lost.len(),
            millis(row.p99_gap),
            millis(row.max_gap),
            millis(row.steady_after)
        );
    }
    for row in &rows {
        assert!(row.lost.is_empty(), "{}: lost {:?}", row.fault, row.lost);
        assert_eq!(
            row.recovered_streams, row.serving_streams,
            "{}: every stream still served completes requests after the fault",
            row.fault
        );
    }
    let killed = rows.last().unwrap();
    println!(
        "gateway killed: {} of its requests failed at the client, the last {} ms after the kill",
        killed.cut,
        millis(killed.cut_within)
    );
    assert!(
        killed.cut > 0,
        "requests were in flight on the killed gateway"
    );
    assert!(
        killed.cut_within < Duration::from_secs(2),
        "the killed gateway's requests failed at once"
    );
    let alive: Vec<&str> = cluster
        .coordinators
        .iter()
        .filter(|(_, process)| process.is_some())
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(alive, [leader.as_str()], "the standby took over");
}
