//! `moe up`: a whole cluster on this machine, on loopback — etcd (unless `--etcd` names one), a
//! coordinator, `--nodes` expert nodes and a gateway, as child processes of this one. Prints the
//! endpoints, says when the gateway is ready (`/health/ready` answers 200), and on SIGINT or
//! SIGTERM stops everything it started, the gateway first. The children's logs (stderr) are
//! appended to `<name>.log` and their standard output to `<name>.out` under the run directory.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use moe_service::netns::Namespace;

use crate::http::http_get;
use crate::status::{Status, StatusArgs, observe};

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
}

/// A started child, stopped (SIGTERM, then SIGKILL) when dropped.
struct Started {
    name: String,
    child: Child,
    /// What started it, to start it again: the program and its arguments, the logs directory,
    /// and whether it prints the address it listens on.
    argv: Vec<OsString>,
    logs: PathBuf,
    listens: bool,
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop within 15 s; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The prefixes of the TLS variables the servers read: the local cluster is plaintext, so TLS
/// settings in this environment are not passed on to its processes.
const TLS_VARIABLES: [&str; 5] = [
    "MOE_TLS_",
    "MOE_GRPC_TLS_",
    "MOE_ETCD_CA",
    "MOE_ETCD_CERT",
    "MOE_ETCD_KEY",
];

/// A binary built next to `moe`.
fn sibling(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build it next to moe (cargo build --release -p {package})",
            path.display()
        );
    }
    Ok(path)
}

/// Starts `program` with its stderr in `<logs>/<name>.log`; waits for its first stdout line
/// `listening on ADDR` when `listens`, and returns the address.
fn start(
    name: &str,
    program: &Path,
    args: &[String],
    logs: &Path,
    listens: bool,
) -> anyhow::Result<(Started, Option<String>)> {
    start_command(name, Command::new(program), args, logs, listens)
}

/// As [`start`], for a command already set up (e.g. to run in a network namespace).
fn start_command(
    name: &str,
    mut command: Command,
    args: &[String],
    logs: &Path,
    listens: bool,
) -> anyhow::Result<(Started, Option<String>)> {
    // Appended to, so that a process started again keeps its earlier life's log.
    let append = |file: String| {
        let path = logs.join(file);
        let opened = File::options().create(true).append(true).open(&path);
        opened.with_context(|| format!("opening {}", path.display()))
    };
    let (log, mut out) = (
        append(format!("{name}.log"))?,
        append(format!("{name}.out"))?,
    );
    command.args(args);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if TLS_VARIABLES.iter().any(|prefix| name.starts_with(prefix)) {
            command.env_remove(name.as_ref());
        }
    }
    let argv = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsString::from)
        .collect();
    let mut child = command
        .stdout(if listens {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let address = if listens {
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut first = String::new();
        stdout.read_line(&mut first)?;
        // The rest of stdout goes to `<name>.out`, so the child never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut out));
        let address = first
            .trim()
            .strip_prefix("listening on ")
            .map(str::to_string);
        if address.is_none() {
            let _ = child.kill();
            bail!(
                "{name} did not start; see {}",
                logs.join(format!("{name}.log")).display()
            );
        }
        address
    } else {
        None
    };
    let started = Started {
        name: name.to_string(),
        child,
        argv,
        logs: logs.to_path_buf(),
        listens,
    };
    Ok((started, address))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `ready`, saying every 5 s on stderr how long it has waited and what `detail`
/// says the wait is on.
fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
    mut detail: impl FnMut() -> Option<String>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut said = Instant::now();
    while !ready() {
        if start.elapsed() > timeout {
            let on = detail().map(|d| format!(": {d}")).unwrap_or_default();
            bail!("{what} was not ready after {timeout:?}{on}");
        }
        if said.elapsed() > Duration::from_secs(5) {
            let on = detail().map(|d| format!(": {d}")).unwrap_or_default();
            eprintln!(
                "waiting for {what} ({:.0} s){on}",
                start.elapsed().as_secs_f64()
            );
            said = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// An etcd on free loopback ports with its data in `dir`, also serving clients on `also_on`
/// (test networks' host sides) at the same port; its loopback endpoint and its port.
fn start_etcd(
    dir: &Path,
    logs: &Path,
    also_on: &[Ipv4Addr],
) -> anyhow::Result<(Started, String, u16)> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join("etcd").is_file()))
        .unwrap_or(false);
    if !found {
        bail!(
            "etcd is not installed: install it (Debian/Ubuntu: apt-get install etcd-server) or \
             point --etcd at a running one"
        );
    }
    let (client, peer) = (free_port()?, free_port()?);
    let endpoint = format!("http://127.0.0.1:{client}");
    let listen: Vec<String> = std::iter::once(endpoint.clone())
        .chain(also_on.iter().map(|ip| format!("http://{ip}:{client}")))
        .collect();
    let args = [
        "--name".to_string(),
        "moe-up".into(),
        "--data-dir".into(),
        dir.join("etcd").display().to_string(),
        "--listen-client-urls".into(),
        listen.join(","),
        "--advertise-client-urls".into(),
        endpoint.clone(),
        "--listen-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
        "--initial-advertise-peer-urls".into(),
        format!("http://127.0.0.1:{peer}"),
        "--initial-cluster".into(),
        format!("moe-up=http://127.0.0.1:{peer}"),
    ];
    let (etcd, _) = start("etcd", Path::new("etcd"), &args, logs, false)?;
    let address = format!("127.0.0.1:{client}");
    wait_for(
        "etcd",
        Duration::from_secs(30),
        || http_get(&address, "/health").is_some_and(|r| r.contains("\"health\":\"true\"")),
        || None,
    )?;
    Ok((etcd, endpoint, client))
}

/// What a starting cluster is waiting for, as `moe status` sees it, in one line.
fn cluster_state(etcd: &str, cluster: &str) -> String {
    let read = || -> anyhow::Result<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let args = StatusArgs::for_cluster(etcd, cluster);
        let observed = runtime.block_on(observe(&args, &mut BTreeMap::new()))?;
        Ok(Status::from_observed(cluster, &observed).waiting_line())
    };
    read().unwrap_or_else(|e| format!("cannot read the cluster's state: {e:#}"))
}

/// A cluster of child processes on loopback; dropping it stops them all, the last started first.
pub struct LocalCluster {
    started: Vec<Started>,
    /// The gateway's HTTP address (`host:port`).
    pub gateway: String,
    /// One line per endpoint, for people.
    pub endpoints: Vec<String>,
}

impl LocalCluster {
    /// Each process this cluster started, by name, with its process id.
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.started
            .iter()
            .map(|s| (s.name.clone(), s.child.id()))
            .collect()
    }

    fn find(&mut self, name: &str) -> anyhow::Result<&mut Started> {
        self.started
            .iter_mut()
            .find(|s| s.name == name)
            .with_context(|| format!("no process {name} in this cluster"))
    }

    /// Sends the signal named `signal` (`STOP`, `CONT`, `KILL`, ...) to the process `name`.
    pub fn signal(&mut self, name: &str, signal: &str) -> anyhow::Result<()> {
        let pid = self.find(name)?.child.id().to_string();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {name} ({pid}) failed");
        Ok(())
    }

    /// Kills the process `name` if it still runs (SIGKILL, as a crash would) and starts it again
    /// as it was first started (a server on a port the system picks gets a new one, and
    /// registers it).
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let started = self.find(name)?;
        let _ = started.child.kill();
        let _ = started.child.wait();
        let mut command = Command::new(&started.argv[0]);
        command.args(&started.argv[1..]);
        let logs = started.logs.clone();
        let (again, _) = start_command(name, command, &[], &logs, started.listens)?;
        *started = again;
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        while let Some(process) = self.started.pop() {
            drop(process);
        }
    }
}

/// What to start.
pub struct ClusterSpec<'a> {
    pub model: &'a Path,
    pub nodes: usize,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub etcd: Option<&'a str>,
    pub cluster: &'a str,
    pub dir: &'a Path,
    /// The nodes' precision pair (`--precisions` of the coordinator and the nodes), e.g.
    /// `q8+q4`; `None` keeps their default.
    pub precisions: Option<&'a str>,
    /// Extra flags for every expert node.
    pub node_flags: &'a [String],
    /// Extra flags for the gateway.
    pub gateway_flags: &'a [String],
    /// Test networks, one per node: node `i` runs in `nets[i]`, reaching etcd over its link (so
    /// etcd is started here). Empty: every node on loopback.
    pub nets: &'a [Namespace],
}

impl<'a> ClusterSpec<'a> {
    /// A cluster of `nodes` expert nodes serving `model`, with etcd started here and the
    /// gateway on ports the system picks, nothing else set: what the benchmarks start.
    pub fn on_loopback(model: &'a Path, nodes: usize, cluster: &'a str, dir: &'a Path) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        ClusterSpec {
            model,
            nodes,
            http: any,
            grpc: any,
            etcd: None,
            cluster,
            dir,
            precisions: None,
            node_flags: &[],
            gateway_flags: &[],
            nets: &[],
        }
    }
}

impl LocalCluster {
    /// Starts etcd (unless given), a coordinator, the nodes and a gateway, and waits until the
    /// gateway is ready.
    pub fn start(spec: &ClusterSpec<'_>, ready_timeout: Duration) -> anyhow::Result<LocalCluster> {
        let (coordinator, node, gateway) = (
            sibling("coordinator", "moe-coordinator")?,
            sibling("expert-node", "moe-expert-node")?,
            sibling("gateway", "moe-gateway")?,
        );
        if !spec.model.join("config.json").is_file() {
            bail!("--model {}: no config.json there", spec.model.display());
        }
        let logs = spec.dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let model = spec.model.display().to_string();
        let mut cluster = LocalCluster {
            started: Vec::new(),
            gateway: String::new(),
            endpoints: Vec::new(),
        };
        anyhow::ensure!(
            spec.nets.is_empty() || (spec.nets.len() == spec.nodes && spec.etcd.is_none()),
            "test networks need one per node and an etcd started here"
        );
        let host_ips: Vec<Ipv4Addr> = spec.nets.iter().map(|n| n.host_ip).collect();
        let (etcd, etcd_port) = match spec.etcd {
            Some(etcd) => (etcd.to_string(), 0),
            None => {
                let (process, endpoint, port) = start_etcd(spec.dir, &logs, &host_ips)?;
                cluster.started.push(process);
                (endpoint, port)
            }
        };
        cluster.endpoints.push(format!("etcd        {etcd}"));
        let common_at = |etcd: &str, extra: &[&str]| -> Vec<String> {
            ["--etcd", etcd, "--cluster", spec.cluster, "--model", &model]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect()
        };
        let common = |extra: &[&str]| common_at(&etcd, extra);
        let precisions: Vec<String> = spec
            .precisions
            .iter()
            .flat_map(|p| ["--precisions".to_string(), p.to_string()])
            .collect();
        let mut flags = common(&["--listen", "127.0.0.1:0"]);
        flags.extend(precisions.iter().cloned());
        let (process, health) = start("coordinator", &coordinator, &flags, &logs, true)?;
        cluster.started.push(process);
        cluster.endpoints.push(format!(
            "coordinator {} (health)",
            health.unwrap_or_default()
        ));
        for i in 0..spec.nodes {
            let id = format!("node-{i}");
            let shards = spec.dir.join("shards").join(&id);
            let shards = shards.display().to_string();
            let net = spec.nets.get(i);
            let listen = net.map_or("127.0.0.1:0".to_string(), |n| format!("{}:0", n.ns_ip));
            let node_etcd = net.map_or(etcd.clone(), |n| {
                format!("http://{}:{etcd_port}", n.host_ip)
            });
            let mut a = common_at(
                &node_etcd,
                &[
                    "--listen",
                    &listen,
                    "--node-id",
                    &id,
                    "--shard-dir",
                    &shards,
                ],
            );
            a.extend(precisions.iter().cloned());
            a.extend(spec.node_flags.iter().cloned());
            let command = net.map_or_else(|| Command::new(&node), |n| n.command(&node));
            let (process, address) = start_command(&id, command, &a, &logs, true)?;
            cluster.started.push(process);
            cluster
                .endpoints
                .push(format!("{id:<11} {}", address.unwrap_or_default()));
        }
        let (http, grpc) = (spec.http.to_string(), spec.grpc.to_string());
        let mut flags = common(&["--http", &http, "--grpc", &grpc]);
        flags.extend(spec.gateway_flags.iter().cloned());
        let (process, address) = start("gateway", &gateway, &flags, &logs, true)?;
        cluster.started.push(process);
        cluster.gateway = address.unwrap_or(http);
        cluster.endpoints.push(format!(
            "gateway     http://{}  (OpenAI-compatible API)",
            cluster.gateway
        ));
        cluster
            .endpoints
            .push(format!("logs        {}", logs.display()));
        cluster.wait_ready(ready_timeout, &etcd, spec.cluster)?;
        Ok(cluster)
    }

    /// Waits until the gateway's `/health/ready` answers 200, saying every 5 s on stderr what
    /// it waits on. Fails at once when one of the processes exits, and when the gateway has
    /// reported experts that no node can load for [`UNSERVABLE_GRACE`], with its reason.
    fn wait_ready(&mut self, timeout: Duration, etcd: &str, name: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut said = Instant::now();
        let mut unservable_since: Option<Instant> = None;
        loop {
            let answer = http_get(&self.gateway, "/health/ready");
            if answer
                .as_deref()
                .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
            {
                return Ok(());
            }
            for process in &mut self.started {
                if let Ok(Some(status)) = process.child.try_wait() {
                    let log = process.logs.join(format!("{}.log", process.name));
                    bail!(
                        "{} exited ({status}) before the cluster was ready; see {}",
                        process.name,
                        log.display()
                    );
                }
            }
            match answer.as_deref().and_then(unservable) {
                Some(reason) => {
                    let since = *unservable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > UNSERVABLE_GRACE {
                        bail!("the cluster cannot become ready: {reason}");
                    }
                }
                None => unservable_since = None,
            }
            if start.elapsed() > timeout {
                let state = cluster_state(etcd, name);
                bail!("the gateway was not ready after {timeout:?}: {state}");
            }
            if said.elapsed() > Duration::from_secs(5) {
                let waited = start.elapsed().as_secs_f64();
                eprintln!(
                    "waiting for the gateway ({waited:.0} s): {}",
                    cluster_state(etcd, name)
                );
                said = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// How long the gateway may report experts that no node can load before `moe up` gives up: a
/// re-placement and the new holders' reports take far less.
const UNSERVABLE_GRACE: Duration = Duration::from_secs(10);

/// The reason in a `/health/ready` response that reports experts no node can load.
fn unservable(response: &str) -> Option<String> {
    let (_, body) = response.split_once("\r\n\r\n")?;
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    let count = body["readiness"]["unservable_count"].as_u64()?;
    (count > 0).then(|| body["error"]["message"].as_str().unwrap_or("").to_string())
}

/// Where a run's shards, etcd data and logs go by default.
pub fn default_dir(name: &str) -> PathBuf {
    if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm").join(name)
    } else {
        std::env::temp_dir().join(name)
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
        node_flags: &[],
        gateway_flags: &[],
        nets: &[],
    };
    let cluster = LocalCluster::start(&spec, Duration::from_secs(args.ready_timeout))?;
    for line in &cluster.endpoints {
        println!("{line}");
    }
    let name = moe_model::config::served_name(&args.model);
    println!(
        "ready: curl http://{}/v1/completions -H 'Content-Type: application/json' -d '{{\"model\": \"{name}\", \"prompt\": \"Hello\", \"max_tokens\": 16}}'",
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
