//! The HTTP and WebSocket edge: the axum routers of the main, admin and overflow
//! listeners, the session endpoints of each client dialect, and the operational
//! endpoints.
//!
//! Only this module knows WebSocket and HTTP types. A session endpoint is the shared
//! [`gate`] (limits, Origin, credentials, admission) and [`socket`] loop around a
//! [`Dialect`](dialect::Dialect)'s codec; the engine sees only commands and events.
//!
//! | module | role |
//! |---|---|
//! | [`dialect`] | the `Dialect` trait: a client contract's codec, error body, close codes, credentials |
//! | [`v1`] | the v1 contract (`/v1/audio/stream`): its dialect and its wire types |
//! | [`dualmodel`] | the dual-model STT server's `/ws` contract (interims with `stable_chars`, finals with segments, status) |
//! | [`realtimestt`] | RealtimeSTT's `stt-server` contract: paired control and data connections (`/realtimestt/control`, `/realtimestt/data`), its health shape |
//! | [`deepgram`] | the Deepgram-compatible API: the live dialect (`GET /v1/listen`) and prerecorded files (`POST /v1/listen`) |
//! | [`openai`] | the OpenAI-compatible API: `POST /v1/audio/transcriptions`, `GET /v1/models` |
//! | [`files`] | whole-file requests: the body within `files.*`, decoding, one paced session per channel |
//! | [`gate`] | the pre-upgrade checks every session endpoint shares, and their refusals |
//! | [`socket`] | a WebSocket as a session, for any dialect (limits, close handshake) |
//! | [`ops`] | `/health`, `/ready`, `/status`, `/metrics` |
//! | [`page`] | the live-captions page (`GET /` and its assets; `page.enabled`) |
//! | [`server`] | the connection layer under axum (accept, TLS handshakes, HTTP/1.1 timeouts, connection caps) |

pub mod deepgram;
pub mod dialect;
pub mod dualmodel;
pub mod files;
pub mod gate;
pub mod openai;
pub mod ops;
pub mod page;
pub mod realtimestt;
pub mod server;
pub mod socket;
pub mod v1;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router as HttpRouter;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::deepgram::Deepgram;
use self::ops::{health, metrics, ready, status};
use self::v1::V1;
use crate::config::Config;
use crate::resilience::admission::Admission;
use crate::resilience::overload::Overload;
use crate::security::auth::Authenticator;
use crate::security::quota::Quota;
use crate::security::ratelimit::ConnectLimiter;
use crate::session::{self, ErrorKind, SessionContext};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct AppState {
    pub ctx: Arc<SessionContext>,
    pub config: Arc<Config>,
    pub admission: Arc<Admission>,
    /// The gateway's own scheduling delay: overloaded, it takes no new sessions.
    pub overload: Arc<Overload>,
    /// Every live session task, so shutdown can wait for them to flush.
    pub sessions: TaskTracker,
    pub started: Instant,
    /// Cancelled when shutdown begins: no new sessions, `/ready` says 503.
    pub draining: CancellationToken,
    /// `None`: authentication disabled.
    pub auth: Option<Arc<Authenticator>>,
    /// `None`: no per-IP connection limit.
    pub limiter: Option<Arc<ConnectLimiter>>,
    /// Live sessions per client IP (`limits.max_sessions_per_ip`; 0: not counted).
    pub sessions_per_ip: Arc<Quota<IpAddr>>,
    /// Live sessions per token subject (`limits.max_sessions_per_subject`).
    pub sessions_per_subject: Arc<Quota<String>>,
    /// Live sessions per API key name (each key's own `max_sessions`).
    pub sessions_per_key: Arc<Quota<Arc<str>>>,
    /// Places for files being received or decoded (`files.max_concurrent`).
    pub files: Arc<tokio::sync::Semaphore>,
    /// The main listener's connection cap in force (`limits.max_connections`, resolved).
    pub max_connections: usize,
}

/// The gateway's HTTP surface on the main listener: the session endpoint and the
/// operational endpoints — `/status` and `/metrics` only when there is no admin listener.
pub fn app(state: AppState) -> HttpRouter {
    // One line per client dialect.
    let router = HttpRouter::new()
        .route("/v1/audio/stream", get(socket::endpoint::<V1>))
        .route(
            "/v1/listen",
            get(socket::endpoint::<Deepgram>).post(deepgram::prerecorded::listen_file),
        )
        .route(
            "/v1/audio/transcriptions",
            // The form is read within files.max_bytes by the handler itself.
            axum::routing::post(openai::transcriptions::create)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/models", get(openai::models))
        .route(
            "/v1/realtime",
            get(socket::endpoint::<openai::realtime::Realtime>),
        )
        .route("/ws", get(socket::endpoint::<dualmodel::DualModel>))
        // RealtimeSTT's control and data connections (the pairs they share, inside).
        .merge(realtimestt::router())
        .route(
            "/v1/realtime/transcription_sessions",
            axum::routing::post(openai::transcription_sessions),
        )
        // The live-captions page and its assets (none when page.enabled is off: 404).
        .merge(page::router(&state.config));
    operational(router, &state).with_state(state)
}

/// The operators' listener (`admin_listen`): every operational endpoint, no sessions.
pub fn admin_app(state: AppState) -> HttpRouter {
    HttpRouter::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .route("/realtimestt/health", get(realtimestt::health::health))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// What a connection beyond `limits.max_connections` is served: the operational endpoints
/// (so health checks get through while the gateway is full), and 503 for anything else.
pub fn overflow_app(state: AppState) -> HttpRouter {
    operational(HttpRouter::new(), &state)
        .fallback(connection_limit)
        .with_state(state)
}

fn operational(router: HttpRouter<AppState>, state: &AppState) -> HttpRouter<AppState> {
    let router = router
        .route("/health", get(health))
        .route("/ready", get(ready));
    if state.config.admin_listen.is_some() {
        router
    } else {
        router
            .route("/status", get(status))
            .route("/realtimestt/health", get(realtimestt::health::health))
            .route("/metrics", get(metrics))
    }
}

/// 503 and `Connection: close`, in the gateway's own (v1) error shape: the overflow pool
/// serves any path, so no dialect is known.
async fn connection_limit(State(state): State<AppState>) -> Response {
    let retry_after = gate::retry_after_secs(&state);
    let mut response = gate::refusal::<V1>(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(retry_after),
        ErrorKind::RateLimitExceeded,
        &format!(
            "the gateway is at its connection limit (limits.max_connections); \
             retry after {retry_after} s"
        ),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Largest WebSocket message accepted at the transport (`limits.max_message_bytes`; by
/// default twice the largest valid frame at 48 kHz, so that oversized frames up to this
/// size get the contract's recoverable `AUDIO_FORMAT_ERROR`; beyond it the message cannot
/// be read and the session ends with `MESSAGE_TOO_LARGE`).
pub fn transport_limit(config: &Config) -> usize {
    if config.limits.max_message_bytes > 0 {
        return config.limits.max_message_bytes;
    }
    let max_frame = session::audio::max_frame_bytes(48_000, config.session.max_frame);
    (2 * max_frame).max(64 * 1024)
}

/// Bytes read from a WebSocket at a time (see [`socket::endpoint`]): a 100 ms frame at 16 kHz
/// (3,214 bytes on the wire) fits. The buffer is zero-filled before every read and grows
/// by doubling when a frame does not fit, so a smaller one costs less CPU and memory per
/// session (8 KiB grew to 16 KiB per session under load; docs/measurements.md).
pub const WS_READ_BUFFER: usize = 4 * 1024;
