//! Generates the Kubernetes CRI client (`runtime.v1`) from the vendored
//! `proto/cri-api/runtime/v1/api.proto` into `OUT_DIR/runtime.v1.rs`, which `src/cri/mod.rs`
//! includes.
//!
//! protox parses the proto in Rust, so building faultline needs no system `protoc`;
//! tonic-prost-build turns the descriptors into prost messages and a tonic client. No server
//! code: faultline only ever talks to a runtime. Why the proto is vendored rather than taken
//! from a crate: docs/adr/0015-cri-client.md.

use std::error::Error;

const PROTO_ROOT: &str = "proto/cri-api";
const PROTO: &str = "proto/cri-api/runtime/v1/api.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");
    let descriptors =
        protox::compile([PROTO], [PROTO_ROOT]).map_err(|e| format!("compiling {PROTO}: {e}"))?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        // The client is wired to a unix socket in src/cri/client.rs; tonic's
        // `connect(uri)` helper would only serve TCP.
        .build_transport(false)
        .compile_fds(descriptors)
        .map_err(|e| format!("generating the CRI client from {PROTO}: {e}"))?;
    Ok(())
}
