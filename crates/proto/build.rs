//! Compiles the vendored protobuf schemas under `proto/` with protox (pure Rust, no protoc)
//! and generates the tonic clients and servers. Servers are generated too: the test doubles
//! and the zero-compute back end serve the same services the adapters call.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/riva/riva_asr.proto",
        "proto/grpc/health/v1/health.proto",
        "proto/triton/grpc_service.proto",
    ];
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".nvidia.riva.asr")
        .bytes(".inference.ModelInferRequest")
        .bytes(".inference.ModelInferResponse")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
