//! The operational endpoints: `/health` (the process runs), `/ready` (every route has a
//! usable back end and the gateway is not draining), `/status` (what runs, with the
//! limits in force) and `/metrics` (Prometheus text). On the main listener, or on
//! `admin_listen` when it is set.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, transport_limit};

pub async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

pub async fn ready(State(state): State<AppState>) -> Response {
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

pub async fn status(State(state): State<AppState>) -> Response {
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
            "openai_backend": {
                "sample_rate": c.openai_backend.sample_rate,
                "request_timeout_ms": c.openai_backend.request_timeout.as_millis() as u64,
                "partials": c.openai_backend.partials,
            },
            "health_interval_ms": c.health.interval.as_millis() as u64,
        },
    });
    axum::Json(body).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.ctx.metrics.encode(),
    )
        .into_response()
}
