//! The generated protobuf and gRPC code ([`sgw_proto`]), seen from the gateway.
//!
//! Only `backend/` uses these types; the rest of the gateway sees domain types.

pub use sgw_proto::{grpc, inference, nvidia};
