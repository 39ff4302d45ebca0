//! Generated protobuf and gRPC code for the back-end protocols speech-gateway speaks: NVIDIA
//! Riva ASR (`nvidia.riva.asr`), gRPC health (`grpc.health.v1`) and Triton's KServe v2
//! inference API (`inference`). Compiled from the vendored schemas in `proto/` by `build.rs`
//! with protox (pure Rust, no protoc). Clients and servers are both generated: the gateway's
//! adapters call these services, the test kit's doubles and sim back end serve them.
//!
//! In the gateway only `backend/` uses these types; the rest of it sees domain types.
//! Generated code is never edited by hand.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod nvidia {
    pub mod riva {
        tonic::include_proto!("nvidia.riva");
        pub mod asr {
            tonic::include_proto!("nvidia.riva.asr");
        }
    }
}

pub mod grpc {
    pub mod health {
        pub mod v1 {
            tonic::include_proto!("grpc.health.v1");
        }
    }
}

/// Triton's KServe v2 inference API (package `inference`).
pub mod inference {
    tonic::include_proto!("inference");
}
