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
use crate::resilience::admission::{Admission, Refusal, Ticket};
use crate::session::{self, SessionContext};
use tokio_util::sync::CancellationToken;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub ctx: Arc<SessionContext>,
    pub config: Arc<Config>,
    pub admission: Arc<Admission>,
    /// Every live session task, so shutdown can wait for them to flush.
    pub sessions: TaskTracker,
    pub started: Instant,
    /// Cancelled when shutdown begins: no new sessions, `/ready` says 503.
    pub draining: CancellationToken,
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

/// Bytes read from a WebSocket at a time (see `v1_stream`).
const WS_READ_BUFFER: usize = 8 * 1024;

async fn v1_stream(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let refusal = if state.draining.is_cancelled() {
        Err(Refusal::Draining)
    } else {
        state.admission.admit().ok_or(Refusal::GlobalLimit)
    };
    let ticket = match refusal {
        Ok(t) => t,
        Err(why) => return refuse(&state, why),
    };
    let limit = transport_limit(&state.config);
    ws.max_message_size(limit)
        .max_frame_size(limit)
        // tungstenite allocates its read buffer eagerly (128 KiB by default) and touches
        // all of it as audio streams through: per session that is twice the memory goal.
        // Frames are read in pieces of this size and assembled up to `limit` anyway.
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| {
            let tracker = state.sessions.clone();
            tracker.track_future(run_v1(socket, state.ctx, ticket))
        })
}

/// 503 before the upgrade, with `Retry-After` and the contract's error body.
fn refuse(state: &AppState, why: Refusal) -> Response {
    state.ctx.metrics.rejected(why.as_str());
    let retry_after = state.admission.settings().retry_after.as_secs().max(1);
    let message = match why {
        Refusal::Draining => {
            "the gateway is shutting down; connect to another instance".to_string()
        }
        _ => format!(
            "the gateway is at its limit of {} sessions; retry after {retry_after} s",
            state.admission.settings().max_sessions
        ),
    };
    let body = json!({
        "type": "error",
        "code": session::ErrorKind::RateLimitExceeded.label(),
        "message": message,
        "recoverable": true,
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, retry_after.to_string())],
        axum::Json(body),
    )
        .into_response()
}

async fn run_v1(socket: WebSocket, ctx: Arc<SessionContext>, ticket: Ticket) {
    let (sink, stream) = socket.split();
    let mut commands = Box::pin(
        stream
            .take_while(|m| future::ready(matches!(m, Ok(m) if !matches!(m, Message::Close(_)))))
            .filter_map(|m| future::ready(m.ok().and_then(v1::decode))),
    );
    let events = sink.with(|ev| future::ready(Ok::<_, axum::Error>(v1::encode(&ev))));
    session::run(ctx, "v1", ticket, &mut commands, Box::pin(events)).await;
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
    let ready = router.ready() && !state.draining.is_cancelled();
    let body = json!({
        "ready": ready,
        "draining": state.draining.is_cancelled(),
        "routes": router.status(),
    });
    let code = if ready {
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
        "ready": state.ctx.router.ready() && !state.draining.is_cancelled(),
        "draining": state.draining.is_cancelled(),
        "sessions_active": state.ctx.metrics.sessions_active.get(),
        "sessions_admitted": state.admission.active(),
        "routes": state.ctx.router.status(),
        "config": {
            "listen": c.listen.to_string(),
            "session": {
                "max_frame_ms": c.session.max_frame.as_millis() as u64,
                "queue_ms": c.session.queue.as_millis() as u64,
                "replay_ms": c.session.replay.as_millis() as u64,
                "flush_timeout_ms": c.session.flush_timeout.as_millis() as u64,
                "stall_timeout_ms": c.session.stall_timeout.map(|d| d.as_millis() as u64),
                "drain_timeout_ms": c.session.drain_timeout.as_millis() as u64,
            },
            "breaker": {
                "failures": c.breaker.failures,
                "open_for_ms": c.breaker.open_for.as_millis() as u64,
            },
            "retry": {
                "attempts": c.retry.attempts,
                "initial_backoff_ms": c.retry.initial_backoff.as_millis() as u64,
                "multiplier": c.retry.multiplier,
                "max_backoff_ms": c.retry.max_backoff.as_millis() as u64,
                "budget_percent": c.retry.budget_percent,
                "budget_min_per_second": c.retry.budget_min_per_second,
            },
            "admission": {
                "max_sessions": c.admission.max_sessions,
                "routes": &c.admission.route_max_sessions,
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
