//! The etcd `moe up` starts when it is not given one: on free loopback ports, its data and logs
//! under the run directory, also serving clients on the host sides of test networks.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::Duration;

use crate::LaunchError;
use crate::http::{Request, blocking};
use crate::process::{Launch, Process, Stop};
use crate::readiness::poll;

/// How long etcd may take to report itself healthy.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// `N` distinct loopback ports that were free a moment ago (all bound at once, so that no two
/// are the same).
pub fn free_ports<const N: usize>() -> Result<[u16; N], LaunchError> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(LaunchError::Port)?;
        *port = listener.local_addr().map_err(LaunchError::Port)?.port();
        listeners.push(listener);
    }
    Ok(ports)
}

/// Starts etcd with its data in `<dir>/etcd` and its output in `logs`, also serving clients on
/// `also_on` at the same port, and waits until it reports itself healthy; the process (its
/// address is the loopback client one) and the client port.
pub(crate) fn start_etcd(
    dir: &Path,
    logs: &Path,
    also_on: &[Ipv4Addr],
    stop: Stop,
) -> Result<(Process, u16), LaunchError> {
    let installed = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("etcd").is_file()));
    if !installed {
        return Err(LaunchError::EtcdMissing);
    }
    let [client, peer] = free_ports()?;
    let endpoint = format!("http://127.0.0.1:{client}");
    let listen: Vec<String> = std::iter::once(endpoint.clone())
        .chain(also_on.iter().map(|ip| format!("http://{ip}:{client}")))
        .collect();
    let peer_url = format!("http://127.0.0.1:{peer}");
    let data = dir.join("etcd");
    let etcd = Launch::new("etcd", "etcd")
        .args(["--name", "moe-up", "--data-dir"])
        .args([data.as_os_str()])
        .args(["--listen-client-urls", &listen.join(",")])
        .args(["--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("moe-up={peer_url}")])
        .logs(logs)
        .known_address(format!("127.0.0.1:{client}"))
        .stop(stop)
        .start()?;
    let healthy = || {
        let health = blocking::call(
            &etcd.address,
            &Request::get("/health"),
            Duration::from_secs(5),
        );
        Ok(health.is_ok_and(|r| r.body.contains("\"health\":\"true\"")))
    };
    poll("etcd", HEALTHY_WITHIN, healthy, &|| None)?;
    Ok((etcd, client))
}
