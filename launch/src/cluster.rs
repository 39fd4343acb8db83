//! A whole cluster on this machine, as `moe up` and the benchmarks start it: etcd (unless one is
//! given), a coordinator, expert nodes (on loopback, or each in its own test network) and a
//! gateway, as child processes with their output under `<dir>/logs`. Started, it waits until the
//! gateway is ready and fails with the reason when a process exits or the gateway reports
//! experts no node can load. Its processes can be signalled and started again; dropping it stops
//! them, the last started first.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use moe_service::netns::Namespace;

use crate::http::{Request, blocking};
use crate::process::{Launch, Process, Signal, Stop};
use crate::proxy::{Delay, Proxy};
use crate::readiness::{poll, unservable};
use crate::{LaunchError, binary, etcd};

/// The prefixes of the TLS variables the servers read: the local cluster is plaintext, so TLS
/// settings in this environment are not passed on to its processes.
const TLS_VARIABLES: [&str; 5] = [
    "MOE_TLS_",
    "MOE_GRPC_TLS_",
    "MOE_ETCD_CA",
    "MOE_ETCD_CERT",
    "MOE_ETCD_KEY",
];

/// How long the cluster's processes get to exit after SIGTERM before they are killed.
const STOP_WITHIN: Duration = Duration::from_secs(15);

/// How long the gateway may report experts that no node can load before the start gives up: a
/// re-placement and the new holders' reports take far less.
const UNSERVABLE_GRACE: Duration = Duration::from_secs(10);

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
    /// A latency added to every node's link from the gateway, each way, by a [`Proxy`] in front
    /// of the node (the address it registers); `None` for a direct link. Loopback nodes only.
    pub link_delay: Option<Duration>,
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
            link_delay: None,
        }
    }

    /// The flags every server of the cluster gets, with `etcd` as its etcd, then `extra`.
    fn common(&self, etcd: &str, extra: &[&str]) -> Vec<String> {
        let model = self.model.display().to_string();
        let common = ["--etcd", etcd, "--cluster", self.cluster, "--model", &model];
        common.iter().chain(extra).map(|s| s.to_string()).collect()
    }

    /// `--precisions` for the coordinator and the nodes, when the spec sets it.
    fn precisions(&self) -> Vec<String> {
        let pair = self.precisions.iter();
        pair.flat_map(|p| ["--precisions".to_string(), p.to_string()])
            .collect()
    }
}

/// Where a run's shards, etcd data and logs go by default: under /dev/shm, or the system's
/// temporary directory where there is no /dev/shm.
pub fn default_dir(name: &str) -> PathBuf {
    if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm").join(name)
    } else {
        std::env::temp_dir().join(name)
    }
}

/// What a starting cluster is waiting on, in one line for people, given its etcd endpoint and
/// its name (`moe up` reads it as `moe status` would).
pub type WaitingOn<'a> = &'a dyn Fn(&str, &str) -> String;

/// A cluster of child processes on this machine.
pub struct LocalCluster {
    processes: Vec<Process>,
    /// The proxies delaying the nodes' links, by node name.
    proxies: Vec<(String, Proxy)>,
    /// The etcd endpoint the cluster uses (`http://host:port`).
    pub etcd: String,
    /// The cluster's name in etcd.
    pub name: String,
    /// The gateway's HTTP address (`host:port`).
    pub gateway: String,
    /// The gateway's gRPC address (`host:port`).
    pub gateway_grpc: String,
    /// One line per endpoint, for people.
    pub endpoints: Vec<String>,
}

impl LocalCluster {
    /// Starts etcd (unless given), a coordinator, the nodes and a gateway, and waits up to
    /// `ready_within` until the gateway is ready, saying every 5 s on stderr what it waits on.
    pub fn start(
        spec: &ClusterSpec<'_>,
        ready_within: Duration,
        waiting_on: WaitingOn<'_>,
    ) -> Result<LocalCluster, LaunchError> {
        let binaries = Binaries::find()?;
        if !spec.model.join("config.json").is_file() {
            let model = spec.model.display();
            return Err(LaunchError::Spec(format!(
                "--model {model}: no config.json there"
            )));
        }
        if !spec.nets.is_empty() && (spec.nets.len() != spec.nodes || spec.etcd.is_some()) {
            let why = "test networks need one per node and an etcd started here";
            return Err(LaunchError::Spec(why.into()));
        }
        let logs = spec.dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|source| LaunchError::File {
            path: logs.clone(),
            source,
        })?;
        let launcher = Launcher {
            logs: &logs,
            within: ready_within,
            unset: tls_variables(),
        };
        if spec.link_delay.is_some() && !spec.nets.is_empty() {
            let why = "a link delay is for loopback nodes, not test networks";
            return Err(LaunchError::Spec(why.into()));
        }
        let mut cluster = LocalCluster {
            processes: Vec::new(),
            proxies: Vec::new(),
            etcd: String::new(),
            name: spec.cluster.to_string(),
            gateway: String::new(),
            gateway_grpc: String::new(),
            endpoints: Vec::new(),
        };
        let etcd_port = cluster.start_etcd(spec, &logs)?;
        cluster.start_servers(spec, &binaries, &launcher, etcd_port)?;
        cluster
            .endpoints
            .push(format!("logs        {}", logs.display()));
        cluster.wait_ready(ready_within, waiting_on)?;
        Ok(cluster)
    }

    /// The etcd given, or one started here; its client port (0 when given).
    fn start_etcd(&mut self, spec: &ClusterSpec<'_>, logs: &Path) -> Result<u16, LaunchError> {
        let port = match spec.etcd {
            Some(etcd) => {
                self.etcd = etcd.to_string();
                0
            }
            None => {
                let host_ips: Vec<Ipv4Addr> = spec.nets.iter().map(|n| n.host_ip).collect();
                let stop = Stop::Terminate(STOP_WITHIN);
                let (process, port) = etcd::start_etcd(spec.dir, logs, &host_ips, stop)?;
                self.etcd = format!("http://{}", process.address);
                self.processes.push(process);
                port
            }
        };
        self.endpoints.push(format!("etcd        {}", self.etcd));
        Ok(port)
    }

    /// The coordinator, the nodes and the gateway.
    fn start_servers(
        &mut self,
        spec: &ClusterSpec<'_>,
        binaries: &Binaries,
        launcher: &Launcher<'_>,
        etcd_port: u16,
    ) -> Result<(), LaunchError> {
        let Binaries {
            coordinator,
            node,
            gateway,
        } = binaries;
        let mut flags = spec.common(&self.etcd, &["--listen", "127.0.0.1:0"]);
        flags.extend(spec.precisions());
        let process = launcher.start(Launch::new("coordinator", coordinator).args(flags))?;
        let health = format!("coordinator {} (health)", process.address);
        self.add(process, health);
        for i in 0..spec.nodes {
            let id = format!("node-{i}");
            let shards = spec.dir.join("shards").join(&id).display().to_string();
            let net = spec.nets.get(i);
            let listen = net.map_or("127.0.0.1:0".to_string(), |n| format!("{}:0", n.ns_ip));
            let etcd = net.map_or(self.etcd.clone(), |n| {
                format!("http://{}:{etcd_port}", n.host_ip)
            });
            let mut flags = spec.common(
                &etcd,
                &[
                    "--listen",
                    &listen,
                    "--node-id",
                    &id,
                    "--shard-dir",
                    &shards,
                ],
            );
            flags.extend(spec.precisions());
            flags.extend(spec.node_flags.iter().cloned());
            let launch = match net {
                Some(net) => Launch::command(&id, &net.command(node)),
                None => Launch::new(&id, node),
            };
            let process = match spec.link_delay {
                Some(delay) => self.start_delayed(launcher, launch, flags, &id, delay)?,
                None => launcher.start(launch.args(flags))?,
            };
            let line = format!("{id:<11} {}", process.address);
            self.add(process, line);
        }
        let (http, grpc) = (spec.http.to_string(), spec.grpc.to_string());
        let mut flags = spec.common(&self.etcd, &["--http", &http, "--grpc", &grpc]);
        flags.extend(spec.gateway_flags.iter().cloned());
        let out = launcher.logs.join("gateway.out");
        let before = std::fs::metadata(&out).map_or(0, |m| m.len() as usize);
        let process = launcher.start(Launch::new("gateway", gateway).args(flags))?;
        self.gateway = process.address.clone();
        self.gateway_grpc = grpc_address(&out, before)?;
        let line = format!(
            "gateway     http://{}  (OpenAI-compatible API)",
            self.gateway
        );
        let grpc = format!(
            "gateway     grpc://{}  (moe.gateway.v1.GatewayService)",
            self.gateway_grpc
        );
        self.add(process, line);
        self.endpoints.push(grpc);
        Ok(())
    }

    /// Node `id` behind a proxy that delays its link by `delay` each way: the node registers the
    /// proxy's address, which forwards to the node's own.
    fn start_delayed(
        &mut self,
        launcher: &Launcher<'_>,
        launch: Launch,
        mut flags: Vec<String>,
        id: &str,
        delay: Duration,
    ) -> Result<Process, LaunchError> {
        let spec_error = |what: &str, e: std::io::Error| LaunchError::Spec(format!("{what}: {e}"));
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| spec_error("a port for a link proxy", e))?;
        let front = listener
            .local_addr()
            .map_err(|e| spec_error("the link proxy's port", e))?;
        flags.extend(["--advertise".to_string(), front.to_string()]);
        let process = launcher.start(launch.args(flags))?;
        let upstream = node_address(&process)?;
        let proxy = Proxy::start_on(listener, upstream, Delay::each_way(delay))
            .map_err(|e| spec_error("starting a link proxy", e))?;
        self.proxies.push((id.to_string(), proxy));
        Ok(process)
    }

    fn add(&mut self, process: Process, endpoint: String) {
        self.processes.push(process);
        self.endpoints.push(endpoint);
    }

    /// Waits until the gateway's `/health/ready` answers 200. Fails at once when one of the
    /// processes exits, and when the gateway has reported experts that no node can load for
    /// [`UNSERVABLE_GRACE`], with its reason.
    fn wait_ready(
        &mut self,
        within: Duration,
        waiting_on: WaitingOn<'_>,
    ) -> Result<(), LaunchError> {
        let (gateway, etcd, name) = (self.gateway.clone(), self.etcd.clone(), self.name.clone());
        let mut unservable_since: Option<Instant> = None;
        let processes = &mut self.processes;
        let ready = || {
            let answer = blocking::call(
                &gateway,
                &Request::get("/health/ready"),
                Duration::from_secs(5),
            );
            if answer.as_ref().is_ok_and(|r| r.status() == 200) {
                return Ok(true);
            }
            for process in processes.iter_mut() {
                if let Some(status) = process.exited() {
                    return Err(LaunchError::Exited {
                        name: process.name().to_string(),
                        status,
                        log: process.log(),
                    });
                }
            }
            match answer.ok().and_then(|r| unservable(&r.body)) {
                Some(reason) => {
                    let since = *unservable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > UNSERVABLE_GRACE {
                        return Err(LaunchError::Unservable(reason));
                    }
                }
                None => unservable_since = None,
            }
            Ok(false)
        };
        poll("the gateway", within, ready, &|| {
            Some(waiting_on(&etcd, &name))
        })
    }

    /// Each process this cluster started, by name, with its process id.
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .map(|p| (p.name().to_string(), p.id()))
            .collect()
    }

    fn find(&mut self, name: &str) -> Result<&mut Process, LaunchError> {
        self.processes
            .iter_mut()
            .find(|p| p.name() == name)
            .ok_or_else(|| LaunchError::NoProcess(name.to_string()))
    }

    /// Sends `signal` to the process `name` (`etcd`, `coordinator`, `node-<i>`, `gateway`).
    pub fn signal(&mut self, name: &str, signal: Signal) -> Result<(), LaunchError> {
        self.find(name)?.signal(signal)
    }

    /// Kills the process `name` if it still runs (SIGKILL, as a crash would) and starts it again
    /// as it was first started (a server on a port the system picks gets a new one, and
    /// registers it; a node behind a link proxy keeps the proxy's address, which now forwards
    /// to the new one).
    pub fn restart(&mut self, name: &str) -> Result<(), LaunchError> {
        let process = self.find(name)?;
        process.restart()?;
        let address = node_address(process);
        if let Some((_, proxy)) = self.proxies.iter().find(|(id, _)| id == name) {
            proxy.set_upstream(address?);
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        while let Some(process) = self.processes.pop() {
            drop(process);
        }
        self.proxies.clear();
    }
}

/// How long a started gateway may take to print its gRPC address after its HTTP one.
const GRPC_LINE_WITHIN: Duration = Duration::from_secs(5);

/// The gRPC address a started gateway printed right after its HTTP one (`grpc on ADDR`) in its
/// output file `out`, past the `before` bytes earlier runs wrote there.
fn grpc_address(out: &Path, before: usize) -> Result<String, LaunchError> {
    let started = Instant::now();
    loop {
        let text = std::fs::read(out).unwrap_or_default();
        let text = String::from_utf8_lossy(text.get(before..).unwrap_or_default());
        let printed = text.lines().find_map(|l| l.strip_prefix("grpc on "));
        if let Some(address) = printed {
            return Ok(address.to_string());
        }
        if started.elapsed() > GRPC_LINE_WITHIN {
            let why = format!("the gateway printed no `grpc on` line in {}", out.display());
            return Err(LaunchError::Spec(why));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address a started node printed, parsed.
fn node_address(process: &Process) -> Result<SocketAddr, LaunchError> {
    process.address.parse().map_err(|_| {
        let (name, address) = (process.name(), &process.address);
        LaunchError::Spec(format!("{name} printed `{address}`, not an address"))
    })
}

/// The servers' binaries, beside the running executable.
struct Binaries {
    coordinator: PathBuf,
    node: PathBuf,
    gateway: PathBuf,
}

impl Binaries {
    fn find() -> Result<Binaries, LaunchError> {
        Ok(Binaries {
            coordinator: binary::sibling("coordinator", "moe-coordinator")?,
            node: binary::sibling("expert-node", "moe-expert-node")?,
            gateway: binary::sibling("gateway", "moe-gateway")?,
        })
    }
}

/// How the cluster's servers are started: output under `logs`, their address printed within
/// the start's deadline, the variables `unset` not passed on, SIGTERM to stop them.
struct Launcher<'a> {
    logs: &'a Path,
    within: Duration,
    unset: Vec<OsString>,
}

impl Launcher<'_> {
    fn start(&self, launch: Launch) -> Result<Process, LaunchError> {
        let launch = self.unset.iter().fold(launch, Launch::env_remove);
        launch
            .logs(self.logs)
            .within(self.within)
            .stop(Stop::Terminate(STOP_WITHIN))
            .start()
    }
}

/// The TLS variables set in this environment.
fn tls_variables() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| {
            let name = name.to_string_lossy();
            TLS_VARIABLES.iter().any(|prefix| name.starts_with(prefix))
        })
        .collect()
}
