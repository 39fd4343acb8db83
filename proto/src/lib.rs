//! The wire protocol between gateways and expert nodes: the generated gRPC service and messages
//! (`moe.expert.v1`), and the validated conversion between `Tensor` messages and f32 rows.

pub mod tensor;

/// Generated from `proto/moe/expert/v1/expert.proto`.
pub mod expert {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("moe.expert.v1");
}

pub use tensor::{Limits, WireDtype, WireError};

/// The encoded file descriptor set of every service here, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("moe_descriptor");
