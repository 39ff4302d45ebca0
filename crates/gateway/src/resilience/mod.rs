//! Resilience policy, kept apart from the session loop that applies it:
//!
//! - [`breaker`]: one circuit breaker per back end (closed → open after consecutive
//!   upstream failures → one probe session after a cool-down → closed on success);
//! - [`retry`]: exponential backoff with jitter, under a gateway-wide retry budget so
//!   retries cannot multiply an outage;
//! - [`admission`]: global and per-route session limits.
//! - [`overload`]: the gateway's own scheduling delay; refuses new sessions while it is too high.
//!
//! Retry *classification* belongs to the adapters ([`crate::backend::BackendError`]
//! knows its class); the *policy* lives here. Client faults never reach a breaker.

pub mod admission;
pub mod breaker;
pub mod overload;
pub mod retry;
