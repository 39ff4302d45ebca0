//! Error classes shared by every boundary.
//!
//! Each error in the gateway knows who caused it, because that decides everything that
//! follows: a client fault is answered and never counts against a back end; an upstream
//! retryable fault may be retried or failed over; an upstream fatal fault is reported; an
//! internal fault is a bug. Wire codes are derived from the session's error kinds by one
//! exhaustive `match` per dialect (see `ingress::v1`).

use std::fmt;

/// Who is at fault, and therefore what may be done about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The client sent something wrong. Never trips a breaker; the client is told.
    Client,
    /// The back end failed in a way that another attempt (same or other back end) may fix.
    UpstreamRetryable,
    /// The back end refused in a way that retrying will not fix (bad model name, auth).
    UpstreamFatal,
    /// A fault of the gateway itself.
    Internal,
}

impl ErrorClass {
    /// Stable lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Client => "client",
            ErrorClass::UpstreamRetryable => "upstream_retryable",
            ErrorClass::UpstreamFatal => "upstream_fatal",
            ErrorClass::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
