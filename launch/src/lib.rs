//! Starting the workspace's binaries and talking to them, for `moe up`, the benchmarks and the
//! end-to-end tests alike: one child-process type ([`Process`], started from a [`Launch`]),
//! the binaries found beside the running executable ([`sibling`]), a whole cluster on this
//! machine ([`LocalCluster`] from a [`ClusterSpec`], with the etcd it starts), a TCP proxy that
//! delays or cuts a link ([`Proxy`]), and the one HTTP/1.1 and server-sent-events client
//! ([`http`]). Depends on no server's crate (only on
//! `moe-service`, for test networks); what a starting cluster waits on is described by the
//! caller ([`WaitingOn`]).

mod binary;
mod cluster;
mod error;
mod etcd;
pub mod http;
mod process;
mod proxy;
mod readiness;

pub use binary::sibling;
pub use cluster::{ClusterSpec, LocalCluster, WaitingOn, default_dir};
pub use error::LaunchError;
pub use etcd::free_ports;
pub use process::{Launch, Process, Signal, Stop};
pub use proxy::{Delay, Proxy};
