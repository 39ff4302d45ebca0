//! Logs and metrics: the tracing subscriber, and (in [`metrics`]) the one place where metric
//! names are spelled.
//!
//! Logs are structured (JSON by default), one span per session carrying `session_id`;
//! they never hold audio, transcript text, tokens or keys.

pub mod exposition;
pub mod metrics;
pub mod process;
pub mod throttle;

use crate::config::LogConfig;

/// Crates that log message payloads (WebSocket frames, HTTP/2 data, gRPC messages) at
/// debug or trace: whatever `log_level` says, they are capped at `info`, so no level an
/// operator picks can put audio, transcripts or tokens in the logs.
pub const PAYLOAD_LOGGING_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "axum",
    "rustls",
    "tokio_rustls",
    "jsonwebtoken",
];

/// Installs the global subscriber. Called once by the binary; tests leave it alone (or
/// install their own) so in-process gateways do not fight over the global.
pub fn init_logging(log: &LogConfig) {
    use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
    use tracing_subscriber::prelude::*;

    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let caps = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(
            PAYLOAD_LOGGING_CRATES
                .iter()
                .map(|c| (*c, LevelFilter::INFO)),
        );
    let filter = filter.and(caps);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
    let result = if log.json {
        tracing_subscriber::registry()
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init()
    } else {
        tracing_subscriber::registry()
            .with(layer.compact().with_filter(filter))
            .try_init()
    };
    // A second call (tests, embedding) keeps the first subscriber.
    let _ = result;
}
