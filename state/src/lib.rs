//! The state a moe-cluster keeps in etcd, shared by every service that reads or writes it: the
//! coordinator, the gateway, the expert nodes and the `moe` tool.
//!
//! * [`keys`]: every etcd key the cluster uses, typed, under `/moe/v1/<cluster>/`.
//! * [`records`]: the JSON documents stored there (node records, the placement, gateway stats).
//! * [`etcd`]: the shared connection with a deadline on every call, and the error type.
//! * [`lease`]: a lease kept alive on a thread of its own.
//! * [`registry`]: an expert node's leased registration.
//! * [`stats`]: a gateway's leased popularity report.
//! * [`watch`]: list-then-watch of a prefix, published as `tokio::sync::watch` snapshots.

pub mod etcd;
pub mod keys;
pub mod lease;
pub mod records;
pub mod registry;
pub mod stats;
pub mod watch;
