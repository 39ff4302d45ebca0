//! The chaos suite: faults injected into real processes, and what the gateway's clients
//! saw. A test tool, like [`crate::sim`]: nothing here runs inside `serve`.
//!
//! - [`proxy`]: a fault-injecting TCP proxy (resets, blackhole, added delay);
//! - [`scenario`]: the scenario files of `chaos/scenarios/`;
//! - [`runner`]: starts the processes, runs marker-audio clients, strikes the faults and
//!   judges the outcome; [`report`] renders the table.

pub mod proxy;
pub mod report;
pub mod runner;
pub mod scenario;

pub use proxy::{Fault, FaultProxy, Forwarded};
