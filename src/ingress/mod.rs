//! HTTP and WebSocket edge: the axum router, the v1 WebSocket endpoint and the operational
//! endpoints (`/health`, `/ready`, `/status`, `/metrics`).
//!
//! Only this module knows WebSocket and HTTP types; it adapts a socket into a stream of
//! session commands and a sink of session events through the dialect's codec.

pub mod v1;

use std::sync::Arc;
use std::time::Instant;

use axum::Router as HttpRouter;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt, future};
use serde_json::json;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::session::{self, SessionContext};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub ctx: Arc<SessionContext>,
    pub config: Arc<Config>,
    /// Every live session task, so shutdown can wait for them to flush.
    pub sessions: TaskTracker,
    pub started: Instant,
}

/// The gateway's HTTP surface.
pub fn app(state: AppState) -> HttpRouter {
    HttpRouter::new()
        .route("/v1/audio/stream", get(v1_stream))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Largest WebSocket message accepted at the transport: twice the largest valid frame at
/// 48 kHz, so that oversized frames up to this size get the contract's
/// `AUDIO_FORMAT_ERROR` rather than a dropped connection.
fn transport_limit(config: &Config) -> usize {
    let max_frame = session::audio::max_frame_bytes(48_000, config.session.max_frame);
    (2 * max_frame).max(64 * 1024)
}

async fn v1_stream(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let limit = transport_limit(&state.config);
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let tracker = state.sessions.clone();
            tracker.track_future(run_v1(socket, state.ctx))
        })
}

async fn run_v1(socket: WebSocket, ctx: Arc<SessionContext>) {
    let (sink, stream) = socket.split();
    let mut commands = Box::pin(
        stream
            .take_while(|m| future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_)))))
            .filter_map(|m| future::ready(m.ok().and_then(v1::decode))),
    );
    let events = sink.with(|ev| future::ready(Ok::<_, axum::Error>(v1::encode(&ev))));
    session::run(ctx, "v1", &mut commands, Box::pin(events)).await;
    // Closing handshake: read (and discard) until the client's close, briefly. Dropping a
    // socket with unread input makes the kernel reset the connection, and the client
    // would lose the last messages (the final, or the error that explains the close).
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while commands.next().await.is_some() {}
    })
    .await;
}

/// How long a closed session waits for the client's close frame.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> Response {
    let router = &state.ctx.router;
    let body = json!({ "ready": router.ready(), "routes": router.status() });
    let code = if router.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn status(State(state): State<AppState>) -> Response {
    let c = &state.config;
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "ready": state.ctx.router.ready(),
        "sessions_active": state.ctx.metrics.sessions_active.get(),
        "routes": state.ctx.router.status(),
        "config": {
            "listen": c.listen.to_string(),
            "session": {
                "max_frame_ms": c.session.max_frame.as_millis() as u64,
                "queue_ms": c.session.queue.as_millis() as u64,
                "replay_ms": c.session.replay.as_millis() as u64,
                "flush_timeout_ms": c.session.flush_timeout.as_millis() as u64,
                "max_reopens": c.session.max_reopens,
            },
            "riva": {
                "sample_rate": c.riva.sample_rate,
                "max_stream_age_s": c.riva.max_stream_age.as_secs(),
            },
            "health_interval_ms": c.health.interval.as_millis() as u64,
        },
    });
    axum::Json(body).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.ctx.metrics.encode(),
    )
        .into_response()
}
