//! Gatehouse's wire contract, generated from the `.proto` files beside this crate.
//!
//! - [`events`] (`gatehouse.events.v1`): the events of the log, the state they fold
//!   into and the snapshot message gateways fetch.
//! - [`admin`] (`gatehouse.admin.v1`): the `ControlPlane` gRPC service.
//! - [`keymanager`] (`gatehouse.keymanager.v1`): token-service's `KeyManager` service.
//! - [`FILE_DESCRIPTOR_SET`]: every file's descriptor, for gRPC server reflection.
//!
//! The modules mirror the protobuf packages (generated code refers to sibling packages
//! by relative paths); [`events`] and [`admin`] are the short names to use.

/// Module tree mirroring the protobuf packages.
pub mod gatehouse {
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("gatehouse.events.v1");
        }
    }
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("gatehouse.admin.v1");
        }
    }
    pub mod keymanager {
        pub mod v1 {
            tonic::include_proto!("gatehouse.keymanager.v1");
        }
    }
}

/// `gatehouse.events.v1`: events, state records, snapshot.
pub use gatehouse::events::v1 as events;

/// `gatehouse.admin.v1`: the `ControlPlane` service and its messages.
pub use gatehouse::admin::v1 as admin;

/// `gatehouse.keymanager.v1`: token-service's `KeyManager` service.
pub use gatehouse::keymanager::v1 as keymanager;

/// The encoded `FileDescriptorSet` of every Gatehouse proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/gatehouse_descriptor.bin"));

/// Re-exported so users need not depend on prost-types themselves.
pub use prost_types::Timestamp;
