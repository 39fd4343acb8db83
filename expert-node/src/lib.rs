//! The expert node: holds some experts of a MoE model as quantized shard files on a RAM disk and
//! runs them for gateways: shard files, the pure core of a layer request and its translation from
//! and to the wire protocol, shard-backed loading, a host-memory hot set with staging ahead of use,
//! the placement epoch rule, the GPU expert cache (HOBBIT's policy) over the CUDA kernels, the
//! choice of backend, the gRPC server, and — with `--etcd` — the node's registration and the
//! placement it follows.

pub mod backend;
pub mod cache_policy;
pub mod config;
pub mod epoch;
pub mod follower;
pub mod gpu;
pub mod hot_set;
pub mod membership;
pub mod request;
pub mod residency;
pub mod selection;
pub mod server;
pub mod shard;
pub mod staging;
pub mod store;
pub mod unloadable;
pub mod work;

pub use epoch::Epoch;
pub use shard::{Fingerprint, ShardError, ShardKey};
pub use work::{ExpertSet, LayerWork, Precision, PrecisionPair, WorkError};
