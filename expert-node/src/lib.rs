//! The expert node: holds some experts of a MoE model as quantized shard files on a RAM disk and
//! runs them for gateways. So far: shard files, the pure core of a layer request and its translation
//! from and to the wire protocol, shard-backed loading, and the gRPC server (CPU backend).

pub mod config;
pub mod request;
pub mod selection;
pub mod server;
pub mod shard;
pub mod store;
pub mod work;

pub use shard::{Fingerprint, ShardError, ShardKey};
pub use work::{ExpertSet, LayerWork, Precision, PrecisionPair, WorkError};
