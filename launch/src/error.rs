//! The crate's one error type: what went wrong starting, stopping or waiting on a process or a
//! cluster, and in an HTTP exchange.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program could not be run at all.
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// A log file or directory could not be made or opened.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The process did not print `listening on ADDR` first.
    #[error("{name} did not start ({said}){}", see(log))]
    NoAddress {
        name: String,
        said: String,
        log: Option<PathBuf>,
    },
    /// A binary of the workspace is not where it is looked for.
    #[error(
        "{name} is missing (looked in {}): build it first (cargo build -p {package}; \
         scripts/test.sh builds the whole workspace)",
        looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotBuilt {
        name: String,
        package: String,
        looked: Vec<PathBuf>,
    },
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
    #[error(
        "etcd is not installed: install it (Debian/Ubuntu: apt-get install etcd-server) or \
         point --etcd at a running one"
    )]
    EtcdMissing,
    #[error("kill -{signal} {name} failed: {detail}")]
    Signal {
        name: String,
        signal: &'static str,
        detail: String,
    },
    #[error("{name} did not exit within {within:?} of SIGTERM")]
    NotStopped { name: String, within: Duration },
    #[error("no process {0} in this cluster")]
    NoProcess(String),
    /// A cluster asked for that cannot be started.
    #[error("{0}")]
    Spec(String),
    #[error("{name} exited ({status}) before the cluster was ready{}", see(log))]
    Exited {
        name: String,
        status: ExitStatus,
        log: Option<PathBuf>,
    },
    #[error("the cluster cannot become ready: {0}")]
    Unservable(String),
    #[error("{what} was not ready after {within:?}{}", on(state))]
    NotReady {
        what: String,
        within: Duration,
        state: Option<String>,
    },
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    /// Sending the request or reading the response failed.
    #[error("talking to {address}: {source}")]
    Transport {
        address: String,
        source: std::io::Error,
    },
    #[error("no answer from {address} within {within:?}")]
    Timeout { address: String, within: Duration },
    #[error("the connection closed before {0}")]
    Closed(&'static str),
    #[error("a malformed response: {0}")]
    Malformed(String),
    /// A streamed completion answered with another status than 200: its status line.
    #[error("the server answered {0}")]
    Status(String),
    /// A streamed completion's error event, as it came.
    #[error("error event: {0}")]
    ErrorEvent(String),
}

fn see(log: &Option<PathBuf>) -> String {
    log.as_ref()
        .map(|log| format!("; see {}", log.display()))
        .unwrap_or_default()
}

fn on(state: &Option<String>) -> String {
    state
        .as_ref()
        .map(|state| format!(": {state}"))
        .unwrap_or_default()
}
