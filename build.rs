//! Compiles `proto/acs/v1/*.proto` with prost. `protoc` comes from the
//! `protoc-bin-vendored` crate, so a fresh machine needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/acs/v1/event.proto",
        "proto/acs/v1/dead_letter.proto",
        "proto/acs/v1/session.proto",
        "proto/acs/v1/alert.proto",
        "proto/acs/v1/incident.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.compile_protos(&protos, &["proto"])?;
    Ok(())
}
