//! Test networks for the shaped-link and fault tests and the precision study: a network namespace
//! joined to this one by a veth pair with a /30 of its own (host side `.1`, namespace side `.2`),
//! whose link can be shaped with `tc` (tbf rate and latency, both directions), cut, and restored.
//! Needs root and iproute2; [`Namespace::create`] says why it could not. Deleted, with its link,
//! on drop.

use std::net::Ipv4Addr;
use std::process::Command;

pub struct Namespace {
    name: String,
    host_dev: String,
    ns_dev: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
}

/// Runs `ip`/`tc` with `args`; the error carries its stderr.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} could not run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Namespace {
    /// Namespace `index` (0 to 63) of this process, named after `tag`, on
    /// 10.201.X.(4 index)/30 with X from the process id (so processes running at once do not
    /// collide).
    pub fn create(tag: &str, index: u8) -> Result<Namespace, String> {
        if index >= 64 {
            return Err(format!("namespace index {index} is above 63"));
        }
        let pid = std::process::id();
        let subnet = (pid % 250) as u8;
        let ns = Namespace {
            name: format!("moe-{tag}-{pid}-{index}"),
            host_dev: format!("mh{pid}x{index}"),
            ns_dev: format!("mn{pid}x{index}"),
            host_ip: Ipv4Addr::new(10, 201, subnet, 4 * index + 1),
            ns_ip: Ipv4Addr::new(10, 201, subnet, 4 * index + 2),
        };
        run("ip", &["netns", "add", &ns.name])?;
        let (host, inside) = (format!("{}/30", ns.host_ip), format!("{}/30", ns.ns_ip));
        let steps: [&[&str]; 6] = [
            &[
                "link",
                "add",
                &ns.host_dev,
                "type",
                "veth",
                "peer",
                "name",
                &ns.ns_dev,
            ],
            &["link", "set", &ns.ns_dev, "netns", &ns.name],
            &["addr", "add", &host, "dev", &ns.host_dev],
            &["link", "set", &ns.host_dev, "up"],
            &[
                "netns", "exec", &ns.name, "ip", "addr", "add", &inside, "dev", &ns.ns_dev,
            ],
            &[
                "netns", "exec", &ns.name, "ip", "link", "set", &ns.ns_dev, "up",
            ],
        ];
        for step in steps {
            run("ip", step)?;
        }
        run(
            "ip",
            &["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"],
        )?;
        Ok(ns)
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Limits the link to `rate` (tc's spelling, e.g. `2mbit`) each way, with a token bucket
    /// that queues at most `latency_ms` before dropping.
    pub fn shape(&self, rate: &str, latency_ms: u32) -> Result<(), String> {
        let latency = format!("{latency_ms}ms");
        let tbf = [
            "root", "tbf", "rate", rate, "burst", "16kb", "latency", &latency,
        ];
        let host: Vec<&str> = ["qdisc", "replace", "dev", &self.host_dev]
            .into_iter()
            .chain(tbf)
            .collect();
        run("tc", &host)?;
        let inside: Vec<&str> = [
            "netns",
            "exec",
            &self.name,
            "tc",
            "qdisc",
            "replace",
            "dev",
            &self.ns_dev,
        ]
        .into_iter()
        .chain(tbf)
        .collect();
        run("ip", &inside)
    }

    /// Takes the link down (nothing crosses it, as when a cable is pulled) or brings it back up.
    pub fn set_link(&self, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        run("ip", &["link", "set", &self.host_dev, state])
    }

    /// Takes the shaping off again.
    pub fn unshape(&self) -> Result<(), String> {
        run("tc", &["qdisc", "del", "dev", &self.host_dev, "root"])?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "tc",
                "qdisc",
                "del",
                "dev",
                &self.ns_dev,
                "root",
            ],
        )
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.host_dev]);
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}
