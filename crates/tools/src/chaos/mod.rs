//! The chaos suite: faults injected into real processes, and what the gateway's clients
//! saw. A test tool: nothing here runs inside `serve`. The fault-injecting TCP proxy and the
//! sim back end come from the test kit ([`sgw_testkit::proxy`], [`sgw_testkit::sim`]).
//!
//! - [`scenario`]: the scenario files of `chaos/scenarios/`;
//! - [`runner`]: starts the processes, runs marker-audio clients, strikes the faults and
//!   judges the outcome; [`report`] renders the table.

pub mod report;
pub mod runner;
pub mod scenario;
