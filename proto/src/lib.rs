//! The wire protocols: between gateways and expert nodes (`moe.expert.v1`, with the validated
//! conversion between `Tensor` messages and f32 rows), and the gateway's own API for services
//! (`moe.gateway.v1`).

pub mod tensor;

/// Generated from `proto/moe/expert/v1/expert.proto`.
pub mod expert {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("moe.expert.v1");
}

/// Generated from `proto/moe/gateway/v1/gateway.proto`.
pub mod gateway {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("moe.gateway.v1");
}

pub use tensor::{Limits, WireDtype, WireError};

/// The encoded file descriptor set of every service here, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("moe_descriptor");
