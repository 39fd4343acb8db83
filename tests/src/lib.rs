//! The end-to-end tests' harness: every binary of the workspace started as a real process (see
//! [`process`], [`servers`], over `moe_launch`'s one process type), the gateway's HTTP API and
//! streamed completions through `moe_launch`'s one client ([`http`]), what a server lists
//! through gRPC reflection and its health by service name ([`grpc`]), an OTLP collector
//! ([`collector`]), and a real etcd: one `etcd` process per test on two free loopback ports
//! with a temporary data directory, tuned for speed (`--heartbeat-interval 10
//! --election-timeout 50`), waited on until a read succeeds, and killed on drop. It can be
//! stopped and started again on the same ports and data, as an etcd restart, or serve clients
//! over mutual TLS ([`EtcdServer::start_tls`]). `moe_launch`'s TCP [`Proxy`] goes in front of
//! a server to cut its link (a network partition between one client and it) or delay it.

pub mod collector;
pub mod grpc;
pub mod http;
pub mod process;
pub mod servers;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use moe_service::tls::{self, Link, TlsPaths};
use moe_state::etcd::Etcd;

pub use moe_launch::{Delay, Proxy};

/// How long etcd may take to answer its first read.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);
/// Start attempts on fresh ports when etcd exits at once (another process took a port).
const START_ATTEMPTS: usize = 5;
/// The per-call deadline of clients made by [`EtcdServer::connect`].
pub const RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// A running (or stopped) single-member etcd.
pub struct EtcdServer {
    binary: PathBuf,
    root: tempfile::TempDir,
    data_dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Another address etcd serves clients on, besides loopback.
    also_on: Option<Ipv4Addr>,
    /// Certificate, key and client CA when clients speak mutual TLS.
    tls: Option<TlsPaths>,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd on free ports and waits until it answers. Panics, saying what to install,
    /// when there is no etcd binary.
    pub async fn start() -> EtcdServer {
        EtcdServer::start_with(None).await
    }

    /// As [`EtcdServer::start`], serving clients on `address` too (a test network's host side),
    /// at the same port.
    pub async fn start_also_on(address: Ipv4Addr) -> EtcdServer {
        EtcdServer::start_with(Some(address)).await
    }

    /// As [`EtcdServer::start`], serving clients over TLS with `server`'s certificate and key
    /// and requiring client certificates that chain to its CA (`--client-cert-auth`).
    pub async fn start_tls(server: TlsPaths) -> EtcdServer {
        EtcdServer::start_secured(None, Some(server)).await
    }

    async fn start_with(also_on: Option<Ipv4Addr>) -> EtcdServer {
        EtcdServer::start_secured(also_on, None).await
    }

    async fn start_secured(also_on: Option<Ipv4Addr>, tls: Option<TlsPaths>) -> EtcdServer {
        log_to_test_output();
        let mut server = EtcdServer {
            binary: etcd_binary(),
            root: tempfile::tempdir().expect("a temporary directory for etcd"),
            data_dir: PathBuf::new(),
            client_port: 0,
            peer_port: 0,
            also_on,
            tls,
            child: None,
        };
        let mut failures = Vec::new();
        for attempt in 0..START_ATTEMPTS {
            [server.client_port, server.peer_port] =
                moe_launch::free_ports().expect("two free loopback ports");
            server.data_dir = server.root.path().join(format!("data-{attempt}"));
            match server.launch().await {
                Ok(()) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("etcd did not start:\n{}", failures.join("\n---\n"));
    }

    /// `127.0.0.1:<client port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:<client port>` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.address())
    }

    /// `http://<address>:<client port>` for the address given to [`EtcdServer::start_also_on`].
    pub fn endpoint_on(&self, address: Ipv4Addr) -> String {
        format!("http://{address}:{}", self.client_port)
    }

    /// A client of this etcd with the tests' per-call deadline.
    /// With TLS, the client presents etcd's own certificate, which is valid for clients too.
    pub async fn connect(&self) -> Etcd {
        let tls = self.tls.as_ref().map(|paths| {
            paths
                .client(&tls::Etcd::NAMES, None)
                .expect("the test certificates load")
                .expect("a client configuration")
        });
        Etcd::connect_with(&[self.endpoint()], tls, RPC_TIMEOUT)
            .await
            .expect("an etcd client")
    }

    /// Kills etcd (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        if let Err(failure) = self.launch().await {
            panic!("etcd did not restart: {failure}");
        }
    }

    async fn launch(&mut self) -> Result<(), String> {
        let log_path = self.root.path().join("etcd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("the etcd log file");
        let client_url = self.endpoint();
        let listen_urls = match self.also_on {
            Some(address) => format!("{client_url},{}", self.endpoint_on(address)),
            None => client_url.clone(),
        };
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(&self.binary);
        command
            .arg("--name=moe-test")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={listen_urls}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=moe-test={peer_url}"))
            .args(["--heartbeat-interval=10", "--election-timeout=50"])
            .args(self.tls_args())
            .args(["--logger=zap", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the etcd log file"))
            .stderr(log);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD") {
                command.env_remove(name);
            }
        }
        let child = command
            .spawn()
            .map_err(|e| format!("could not run {}: {e}", self.binary.display()))?;
        self.child = Some(child);

        let started = Instant::now();
        let probe = self.connect().await;
        loop {
            let answered = tokio::time::timeout(
                Duration::from_millis(500),
                probe.client().get("/moe/health-probe", None),
            )
            .await;
            // Checked after the probe, so that an etcd that lost a port race and exited is
            // never mistaken for whichever process answered on that port.
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "etcd exited with {status}:\n{}",
                    log_tail(&log_path)
                ));
            }
            if matches!(answered, Ok(Ok(_))) {
                return Ok(());
            }
            if started.elapsed() > HEALTHY_WITHIN {
                self.stop();
                return Err(format!(
                    "etcd did not answer within {HEALTHY_WITHIN:?}:\n{}",
                    log_tail(&log_path)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl EtcdServer {
    /// etcd's flags for serving clients over mutual TLS (none without TLS).
    fn tls_args(&self) -> Vec<String> {
        let Some(paths) = &self.tls else {
            return Vec::new();
        };
        let flag = |name: &str, path: &Option<PathBuf>| {
            let path = path.as_ref().expect("etcd's certificate, key and CA");
            format!("--{name}={}", path.display())
        };
        vec![
            flag("cert-file", &paths.cert),
            flag("key-file", &paths.key),
            flag("trusted-ca-file", &paths.ca),
            "--client-cert-auth".into(),
        ]
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value under `key`, or `None` when it is absent or etcd does not answer within 2 s.
pub async fn get(etcd: &Etcd, key: String) -> Option<Vec<u8>> {
    let mut client = etcd.client();
    let response = tokio::time::timeout(Duration::from_secs(2), client.get(key, None))
        .await
        .ok()?
        .ok()?;
    Some(response.kvs().first()?.value().to_vec())
}

/// Sends the crate's logs (`RUST_LOG`, default `moe_coordinator=info`) to the test's captured
/// output, shown when a test fails.
fn log_to_test_output() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("moe_coordinator=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The etcd binary: `/usr/bin/etcd`, or `etcd` on the `PATH`.
fn etcd_binary() -> PathBuf {
    let installed = Path::new("/usr/bin/etcd");
    if installed.is_file() {
        return installed.to_path_buf();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "etcd is not installed: these tests need a real etcd. Install the Debian package \
                 etcd-server (`apt-get install -y etcd-server`); scripts/test.sh installs it."
            )
        })
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let start = log.len().saturating_sub(4000);
    let start = (start..log.len())
        .find(|&i| log.is_char_boundary(i))
        .unwrap_or(log.len());
    log[start..].to_string()
}
