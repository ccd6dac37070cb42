//! Compiles `proto/gatehouse/**.proto` with protox (a protobuf compiler in pure Rust, so
//! building needs no `protoc`) and generates prost messages and tonic services. The file
//! descriptor set is kept too: control serves it through gRPC server reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "gatehouse/events/v1/model.proto",
    "gatehouse/events/v1/events.proto",
    "gatehouse/admin/v1/admin.proto",
    "gatehouse/keymanager/v1/keymanager.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let file_descriptors = protox::compile(PROTOS, ["."])?;
    std::fs::write(
        out_dir.join("gatehouse_descriptor.bin"),
        prost::Message::encode_to_vec(&file_descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(file_descriptors)?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
