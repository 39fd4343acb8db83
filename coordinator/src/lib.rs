//! Membership and expert placement for a moe-cluster, kept in etcd.
//!
//! * [`keys`]: every etcd key the cluster uses, typed, under `/moe/v1/<cluster>/`.
//! * [`records`]: the JSON documents stored there (node records, the placement, gateway stats).
//! * [`planner`]: the pure placement planner.
//! * [`etcd`]: the shared connection with a deadline on every call, and the error type.
//! * [`lease`]: a lease kept alive on a thread of its own.
//! * [`registry`]: an expert node's leased registration.
//! * [`stats`]: a gateway's leased popularity report.
//! * [`watch`]: list-then-watch of a prefix, published as `tokio::sync::watch` snapshots.
//! * [`election`]: the coordinator leader key and revision-checked placement writes.
//! * [`leader`]: what the elected coordinator does — re-plan on membership and popularity change.

pub mod election;
pub mod etcd;
pub mod keys;
pub mod leader;
pub mod lease;
pub mod planner;
pub mod records;
pub mod registry;
pub mod stats;
pub mod watch;
