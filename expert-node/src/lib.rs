//! The expert node: holds some experts of a MoE model as quantized shard files on a RAM disk and
//! runs them for gateways. So far: the shard file format, the pure core of a layer request, and its translation from and to
//! the wire protocol.

pub mod request;
pub mod selection;
pub mod shard;
pub mod store;
pub mod work;

pub use shard::{Fingerprint, ShardError, ShardKey};
pub use work::{ExpertSet, LayerWork, Precision, PrecisionPair, WorkError};
