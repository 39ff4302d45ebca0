//! Generated protobuf and gRPC code (from `proto/`, compiled by `build.rs`).
//!
//! Only `backend/` and test doubles use these types; the rest of the gateway sees domain
//! types. Generated code is never edited by hand.

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
