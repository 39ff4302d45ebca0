//! Logs and metrics: the tracing subscriber, and (in [`metrics`]) the one place where metric
//! names are spelled.
//!
//! Logs are structured (JSON by default), one span per session carrying `session_id`;
//! they never hold audio, transcript text, tokens or keys.

pub mod exposition;
pub mod metrics;
pub mod process;

use crate::config::LogConfig;

/// Installs the global subscriber. Called once by the binary; tests leave it alone (or
/// install their own) so in-process gateways do not fight over the global.
pub fn init_logging(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let result = if log.json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.compact().try_init()
    };
    // A second call (tests, embedding) keeps the first subscriber.
    let _ = result;
}
