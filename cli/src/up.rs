//! `moe up`: a whole cluster on this machine, on loopback — etcd (unless `--etcd` names one), a
//! coordinator, `--nodes` expert nodes and a gateway, as child processes of this one
//! ([`moe_launch::LocalCluster`]). Prints the endpoints, says when the gateway is ready
//! (`/health/ready` answers 200), and on SIGINT or SIGTERM stops everything it started, the
//! gateway first. The children's logs (stderr) are appended to `<name>.log` and their standard
//! output to `<name>.out` under the run directory. The gateway's API keys and any other flag of
//! the gateway or the nodes pass through (`--api-key`, `--gateway-arg`, `--node-arg`); the
//! children also read the `MOE_*` variables of this environment.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use moe_launch::{ClusterSpec, LocalCluster, default_dir};

use crate::status::waiting_on;

/// Options of `moe up`.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// HuggingFace checkpoint directory to serve.
    #[arg(long, env = "MOE_MODEL")]
    model: PathBuf,
    /// Expert nodes to start.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Address of the gateway's OpenAI-compatible HTTP API.
    #[arg(long, default_value = "127.0.0.1:8000")]
    http: SocketAddr,
    /// Address of the gateway's gRPC API (moe.gateway.v1.GatewayService).
    #[arg(long, default_value = "127.0.0.1:8001")]
    grpc: SocketAddr,
    /// An etcd to use instead of starting one (endpoints, comma-separated).
    #[arg(long)]
    etcd: Option<String>,
    /// The cluster's name in etcd.
    #[arg(long, default_value = "local")]
    cluster: String,
    /// Where shards, etcd's data and the logs go (default: a directory under /dev/shm, or the
    /// system's temporary directory where there is no /dev/shm).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds to wait for the cluster to become ready.
    #[arg(long, default_value_t = 300)]
    ready_timeout: u64,
    /// The expert nodes' precision pair, high+low: f16+q4 (the default) or q8+q2.
    #[arg(long)]
    precisions: Option<String>,
    /// A bearer key the gateway's APIs require (repeat for several); none leaves them open.
    #[arg(long)]
    api_key: Vec<String>,
    /// A flag for the gateway, passed as given (repeat for several), e.g.
    /// `--gateway-arg=--pre-calculate=alternate`; every gateway flag is listed by `gateway --help`.
    #[arg(long, allow_hyphen_values = true)]
    gateway_arg: Vec<String>,
    /// A flag for every expert node, passed as given (repeat for several), e.g.
    /// `--node-arg=--host-memory=2GiB`.
    #[arg(long, allow_hyphen_values = true)]
    node_arg: Vec<String>,
}

impl UpArgs {
    /// The gateway's flags: the API keys, then those given with `--gateway-arg`.
    fn gateway_flags(&self) -> Vec<String> {
        let keys = self
            .api_key
            .iter()
            .flat_map(|k| ["--api-key".into(), k.clone()]);
        keys.chain(self.gateway_arg.iter().cloned()).collect()
    }
}

pub fn run(args: &UpArgs) -> anyhow::Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| default_dir("moe-up"));
    let spec = ClusterSpec {
        model: &args.model,
        nodes: args.nodes,
        http: args.http,
        grpc: args.grpc,
        etcd: args.etcd.as_deref(),
        cluster: &args.cluster,
        dir: &dir,
        precisions: args.precisions.as_deref(),
        node_flags: &args.node_arg,
        gateway_flags: &args.gateway_flags(),
        nets: &[],
        link_delay: None,
    };
    let ready_within = Duration::from_secs(args.ready_timeout);
    let cluster = LocalCluster::start(&spec, ready_within, &waiting_on)?;
    for line in &cluster.endpoints {
        println!("{line}");
    }
    let name = moe_model::config::served_name(&args.model);
    let key = args.api_key.first().map_or(String::new(), |k| {
        format!(" -H 'Authorization: Bearer {k}'")
    });
    println!(
        "ready: curl http://{}/v1/completions{key} -H 'Content-Type: application/json' -d '{{\"model\": \"{name}\", \"prompt\": \"Hello\", \"max_tokens\": 16}}'",
        cluster.gateway
    );
    std::io::stdout().flush()?;
    wait_for_signal()?;
    eprintln!("stopping");
    drop(cluster);
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })
}
