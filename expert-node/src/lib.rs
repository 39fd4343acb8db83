//! The expert node: holds some experts of a MoE model as quantized shard files on a RAM disk and
//! runs them for gateways. So far: the shard file format.

pub mod shard;

pub use shard::{Fingerprint, ShardError, ShardKey};
