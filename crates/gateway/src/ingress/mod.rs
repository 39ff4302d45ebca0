//! HTTP and WebSocket edge: the axum router, the v1 WebSocket endpoint and the operational
//! endpoints (`/health`, `/ready`, `/status`, `/metrics`).
//!
//! Only this module knows WebSocket and HTTP types; it adapts a socket into a stream of
//! session commands and a sink of session events through the dialect's codec.

pub mod server;
pub mod v1;

use std::sync::Arc;
use std::time::Instant;

use std::net::IpAddr;

use axum::Router as HttpRouter;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt, future};
use serde_json::json;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::resilience::admission::{Admission, Refusal, Ticket};
use crate::resilience::overload::Overload;
use crate::security::auth::{self, AuthError, Authenticator, Verified};
use crate::security::quota::Quota;
use crate::security::ratelimit::ConnectLimiter;
use crate::security::tls::PeerAddr;
use crate::session::{self, ErrorKind, SessionContext, SessionError};
use tokio_util::sync::CancellationToken;

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
    /// The main listener's connection cap in force (`limits.max_connections`, resolved).
    pub max_connections: usize,
}

/// The gateway's HTTP surface on the main listener: the session endpoint and the
/// operational endpoints — `/status` and `/metrics` only when there is no admin listener.
pub fn app(state: AppState) -> HttpRouter {
    let router = HttpRouter::new().route("/v1/audio/stream", get(v1_stream));
    operational(router, &state).with_state(state)
}

/// The operators' listener (`admin_listen`): every operational endpoint, no sessions.
pub fn admin_app(state: AppState) -> HttpRouter {
    HttpRouter::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/status", get(status))
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
            .route("/metrics", get(metrics))
    }
}

async fn connection_limit(State(state): State<AppState>) -> Response {
    let retry_after = retry_after_secs(&state);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, retry_after.to_string()),
            (header::CONNECTION, "close".to_string()),
        ],
        error_body(
            ErrorKind::RateLimitExceeded,
            &format!(
                "the gateway is at its connection limit (limits.max_connections); \
                 retry after {retry_after} s"
            ),
        ),
    )
        .into_response()
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

/// Bytes read from a WebSocket at a time (see `v1_stream`): a 100 ms frame at 16 kHz
/// (3,214 bytes on the wire) fits. The buffer is zero-filled before every read and grows
/// by doubling when a frame does not fit, so a smaller one costs less CPU and memory per
/// session (8 KiB grew to 16 KiB per session under load; docs/measurements.md).
pub const WS_READ_BUFFER: usize = 4 * 1024;

/// The WebSocket endpoint. Before the upgrade, in this order: the per-IP connection rate
/// (429), the Origin allow-list (403), the token (401), the per-IP and per-subject session
/// caps (429), drain and admission (503).
async fn v1_stream(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = client_ip(&state.config, &headers, peer);
    if let Some(limiter) = &state.limiter
        && let Err(wait) = limiter.check(ip, std::time::Instant::now())
    {
        state.ctx.metrics.rejected("ip_rate_limit");
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let body = error_body(
            ErrorKind::RateLimitExceeded,
            &format!("too many connection attempts from this address; retry after {secs} s"),
        );
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
            body,
        )
            .into_response();
    }
    let allowed = &state.config.limits.allowed_origins;
    // Every `Origin` header must be allowed (a request carrying two is refused unless
    // both are: a proxy or client must not be able to hide one behind the other).
    if !allowed.is_empty()
        && headers
            .get_all(header::ORIGIN)
            .iter()
            .any(|origin| !allowed.iter().any(|a| a.as_bytes() == origin.as_bytes()))
    {
        state.ctx.metrics.rejected("origin");
        tracing::info!("refused a session from an origin not in limits.allowed_origins");
        let body = error_body(
            ErrorKind::AuthenticationFailed,
            "this origin is not allowed to open sessions",
        );
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    let verified = match &state.auth {
        None => None,
        Some(authenticator) => {
            match authenticate(authenticator, &state.config, &headers, query.as_deref()) {
                Ok(v) => Some(v),
                Err(why) => return unauthenticated(&state, why),
            }
        }
    };
    let Some(ip_place) = state.sessions_per_ip.enter(&ip) else {
        return too_many_sessions(&state, SessionCap::Ip);
    };
    let subject_place = match verified.and_then(|v| v.subject) {
        None => None,
        Some(sub) => match state.sessions_per_subject.enter(&sub) {
            Some(place) => place,
            None => return too_many_sessions(&state, SessionCap::Subject),
        },
    };
    let refusal = if state.draining.is_cancelled() {
        Err(Refusal::Draining)
    } else if state.overload.overloaded() {
        Err(Refusal::Overloaded)
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
        // What a client that does not read may cost: automatic pongs and messages queue
        // up to this, then the connection is cut off (unbounded by default).
        .max_write_buffer_size(state.config.limits.max_write_buffer_bytes)
        .on_upgrade(move |socket| {
            let tracker = state.sessions.clone();
            tracker.track_future(async move {
                let _places = (ip_place, subject_place);
                run_v1(socket, state.ctx, ticket, limit).await
            })
        })
}

/// 401 with the contract's body and a `WWW-Authenticate` challenge.
fn unauthenticated(state: &AppState, why: AuthError) -> Response {
    state.ctx.metrics.rejected("unauthenticated");
    state.ctx.metrics.auth_failed(why.reason());
    tracing::info!(
        reason = why.reason(),
        "refused a session: authentication failed"
    );
    let challenge = match why {
        AuthError::Missing => r#"Bearer realm="speech-gateway""#.to_string(),
        other => format!(
            r#"Bearer realm="speech-gateway", error="invalid_token", error_description="{}""#,
            other.message()
        ),
    };
    let mut response = (
        StatusCode::UNAUTHORIZED,
        error_body(ErrorKind::AuthenticationFailed, why.message()),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// The `Retry-After` of every refusal made for the gateway's own limits (whole seconds).
fn retry_after_secs(state: &AppState) -> u64 {
    state.admission.settings().retry_after.as_secs().max(1)
}

/// Which concurrent-session cap refused a session.
#[derive(Clone, Copy)]
enum SessionCap {
    Ip,
    Subject,
}

/// 429 for a client IP or token subject at its concurrent-session cap.
fn too_many_sessions(state: &AppState, cap: SessionCap) -> Response {
    let (reason, who, key, limit) = match cap {
        SessionCap::Ip => (
            "ip_session_limit",
            "this address",
            "limits.max_sessions_per_ip",
            state.sessions_per_ip.limit(),
        ),
        SessionCap::Subject => (
            "subject_session_limit",
            "this token's subject",
            "limits.max_sessions_per_subject",
            state.sessions_per_subject.limit(),
        ),
    };
    state.ctx.metrics.rejected(reason);
    let retry_after = retry_after_secs(state);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, retry_after.to_string())],
        error_body(
            ErrorKind::RateLimitExceeded,
            &format!(
                "{who} already holds {limit} live sessions ({key}); end one or retry after {retry_after} s"
            ),
        ),
    )
        .into_response()
}

fn authenticate(
    authenticator: &Authenticator,
    config: &Config,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Verified, AuthError> {
    let authorization = match headers.get(header::AUTHORIZATION) {
        Some(v) => Some(v.to_str().map_err(|_| AuthError::Malformed)?),
        None => None,
    };
    let query_token: Option<String> = query.and_then(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v)
    });
    let token = auth::token_from(
        authorization,
        query_token.as_deref(),
        config.auth.query_token,
    )
    .ok_or(AuthError::Missing)?;
    authenticator.verify(token)
}

/// The address the connection limit counts: the TCP peer, or — behind a proxy, when
/// `limits.client_ip_header` is set — the last address in that header (the one the
/// proxy itself appended; earlier ones are the client's word).
fn client_ip(config: &Config, headers: &HeaderMap, peer: PeerAddr) -> IpAddr {
    config
        .limits
        .client_ip_header
        .as_deref()
        .and_then(|name| headers.get_all(name).iter().next_back())
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .unwrap_or(peer.0.ip())
}

/// The contract's error message as an HTTP body (refusals before the upgrade).
fn error_body(kind: ErrorKind, message: &str) -> axum::Json<serde_json::Value> {
    axum::Json(json!({
        "type": "error",
        "code": kind.label(),
        "message": message,
        "recoverable": kind.recoverable(),
    }))
}

/// 503 before the upgrade, with `Retry-After` and the contract's error body.
fn refuse(state: &AppState, why: Refusal) -> Response {
    state.ctx.metrics.rejected(why.as_str());
    let retry_after = retry_after_secs(state);
    let message = match why {
        Refusal::Draining => {
            "the gateway is shutting down; connect to another instance".to_string()
        }
        Refusal::Overloaded => format!(
            "the gateway is overloaded: its tasks run {} ms late on average \
             (admission.max_delay {} ms), and more sessions would slow every session; \
             retry after {retry_after} s or connect to another instance",
            state.overload.delay().as_millis(),
            state.overload.limit().unwrap_or_default().as_millis()
        ),
        _ => format!(
            "the gateway is at its limit of {} sessions; retry after {retry_after} s",
            state.admission.settings().max_sessions
        ),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, retry_after.to_string())],
        error_body(ErrorKind::RateLimitExceeded, &message),
    )
        .into_response()
}

async fn run_v1(socket: WebSocket, ctx: Arc<SessionContext>, ticket: Ticket, limit: usize) {
    let (sink, stream) = socket.split();
    // The command stream ends at the client's close or a read error. A message above the
    // size limit is a read error the client must hear about: it becomes a
    // `MESSAGE_TOO_LARGE` error (the session then closes with 1009).
    let mut commands = Box::pin(
        stream
            .scan(false, move |done, m| {
                if *done {
                    return future::ready(None);
                }
                let next = match m {
                    Ok(Message::Close(_)) => None,
                    Ok(m) => Some(v1::decode(m)),
                    Err(e) => {
                        *done = true;
                        read_error(e, limit).map(|err| Some(session::Command::Reject(err)))
                    }
                };
                future::ready(next)
            })
            .filter_map(future::ready),
    );
    let write_timeout = ctx.limits.write_timeout;
    let mut events = Box::pin(sink.with(|ev| future::ready(Ok::<_, axum::Error>(v1::encode(&ev)))));
    let outcome = session::run(ctx, "v1", ticket, &mut commands, &mut events).await;
    if outcome == session::Outcome::SlowClient {
        // It does not read: nothing more can reach it. Dropping the socket closes it.
        return;
    }
    // Closing handshake. Our close frame (or, when the client closed first, the echo of
    // its close frame that the WebSocket layer queued) goes out now, within the write
    // deadline; then read (and discard) until the client's close, briefly. Dropping a
    // socket with unread input makes the kernel reset the connection, and the client
    // would lose the last messages (the final, or the error that explains the close).
    let _ = tokio::time::timeout(write_timeout, events.close()).await;
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while commands.next().await.is_some() {}
    })
    .await;
}

/// What the client must hear about a read error, if anything: a message above the size
/// limit, or a frame that breaks the protocol (the connection cannot go on after either).
/// Other errors (a reset, a vanished client) have nobody to tell.
fn read_error(e: axum::Error, limit: usize) -> Option<SessionError> {
    use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
    match e.into_inner().downcast_ref::<WsError>()? {
        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => Some(SessionError::new(
            ErrorKind::MessageTooLarge,
            format!(
                "a message of {size} bytes is above the limit of {limit} bytes \
                 (limits.max_message_bytes)"
            ),
        )),
        WsError::Utf8(_) => Some(SessionError::new(
            ErrorKind::ProtocolError,
            "a text frame was not valid UTF-8",
        )),
        WsError::Protocol(p) => Some(SessionError::new(
            ErrorKind::ProtocolError,
            format!("WebSocket protocol violation: {p}"),
        )),
        _ => None,
    }
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
        "overloaded": state.overload.overloaded(),
        "runtime_delay_ms": state.overload.delay().as_secs_f64() * 1000.0,
        "routes": state.ctx.router.status(),
        "route_sessions": state.admission.route_counts(),
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
                "shed_lagging_percent": c.admission.shed_lagging_percent,
                "max_delay_ms": c.admission.max_delay.map(|d| d.as_millis() as u64),
            },
            "security": {
                "tls": c.tls.is_some(),
                "auth": state.auth.is_some(),
                "auth_keys": state.auth.as_ref().map(|a| a.key_count()),
                "connect_rate": c.limits.connect_rate.map(|(r, _)| r),
                "connect_burst": c.limits.connect_rate.map(|(_, b)| b),
                "max_message_bytes": transport_limit(c),
                "allowed_origins": &c.limits.allowed_origins,
                "idle_timeout_ms": c.session.idle_timeout.map(|d| d.as_millis() as u64),
                "write_timeout_ms": c.limits.write_timeout.as_millis() as u64,
                "max_write_buffer_bytes": c.limits.max_write_buffer_bytes,
                "header_timeout_ms": c.limits.header_timeout.as_millis() as u64,
                "max_connections": state.max_connections,
                "max_connections_per_ip": c.limits.max_connections_per_ip,
                "max_sessions_per_ip": c.limits.max_sessions_per_ip,
                "max_sessions_per_subject": c.limits.max_sessions_per_subject,
                "admin_listen": c.admin_listen.map(|a| a.to_string()),
                "connections_open": state.ctx.metrics.connections_open.get(),
                "max_duration_s": c.session.max_duration.map(|d| d.as_secs()),
            },
            "riva": {
                "sample_rate": c.riva.sample_rate,
                "max_stream_age_s": c.riva.max_stream_age.as_secs(),
                "connections": c.riva.connections,
            },
            "triton": {
                "sample_rate": c.triton.sample_rate,
                "connections": c.triton.connections,
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
