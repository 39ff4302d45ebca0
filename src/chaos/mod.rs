//! Fault injection for the chaos suite (test tooling, kept in the crate so that the
//! integration tests and the chaos suite share it).
//!
//! | module | role |
//! |---|---|
//! | [`proxy`] | a TCP proxy that resets, blackholes or delays the connections through it |

pub mod proxy;

pub use proxy::{Fault, FaultProxy, Forwarded};
