//! gRPC server reflection for the servers' `main`s: both protocol versions (`grpcurl` and most
//! tools speak v1; Python's `grpcio-reflection` speaks v1alpha), each advertising only the
//! services the binary serves.

use tonic_reflection::server::{Builder, Error, v1, v1alpha};

/// The standard health service every server binary serves.
pub const HEALTH: &str = "grpc.health.v1.Health";

fn builder<'b>(descriptors: &[&'b [u8]], services: &[&str]) -> Builder<'b> {
    let builder = descriptors.iter().fold(Builder::configure(), |b, d| {
        b.register_encoded_file_descriptor_set(d)
    });
    services
        .iter()
        .fold(builder, |b, name| b.with_service_name(*name))
}

/// The v1 and v1alpha reflection services over the encoded file descriptor sets `descriptors`,
/// listing `services` (fully qualified names) and nothing else.
#[allow(clippy::type_complexity)]
pub fn reflection<'b>(
    descriptors: &[&'b [u8]],
    services: &[&str],
) -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection + use<'b>>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection + use<'b>>,
    ),
    Error,
> {
    let current = builder(descriptors, services).build_v1()?;
    let alpha = builder(descriptors, services).build_v1alpha()?;
    Ok((current, alpha))
}
