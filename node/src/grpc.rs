//! What every Gatehouse gRPC server offers besides its own service: server reflection
//! (so grpcurl needs no .proto files) over Gatehouse's and grpc.health.v1's descriptors.

use tonic_reflection::server::{Error, v1, v1alpha};

/// Reflection v1 and v1alpha: grpcurl 1.8 speaks v1alpha only, newer clients use v1.
pub fn reflection() -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(gatehouse_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
