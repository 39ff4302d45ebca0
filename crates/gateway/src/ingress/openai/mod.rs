//! The OpenAI-compatible transcription API, so apps and agent frameworks built on OpenAI's
//! SDKs (`base_url` at the gateway) reach the gateway's back ends:
//!
//! - `POST /v1/audio/transcriptions` ([`transcriptions`]): a file in a multipart form,
//!   answered as `json`, `text`, `srt`, `vtt` or `verbose_json`, or streamed as server-sent
//!   `transcript.text.delta` / `transcript.text.done` events.
//! - `GET /v1/models`: the routes, as OpenAI's model list.
//! - `GET /v1/realtime` ([`realtime`]): the realtime transcription WebSocket.
//!
//! Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}` with the matching
//! status. Credentials: `Authorization: Bearer` with a JWT or an API key (or `?token=`
//! where allowed), as v1 takes them. README "OpenAI-compatible API" says which fields are
//! honoured and which are accepted and ignored.

pub mod realtime;
pub mod transcriptions;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::dialect::{Contract, Upgrade};
use super::{AppState, gate};
use crate::security::tls::PeerAddr;
use crate::session::ErrorKind;

/// The OpenAI-compatible API (its error shape and credentials).
#[derive(Debug)]
pub struct OpenAi;

impl Contract for OpenAi {
    const NAME: &'static str = "openai";

    fn error_body(kind: ErrorKind, message: &str) -> Value {
        let (kind, code) = error_type(kind);
        json!({
            "error": {
                "message": message,
                "type": kind,
                "param": Value::Null,
                "code": code,
            }
        })
    }
}

/// OpenAI's error `type` and `code` for a gateway error.
fn error_type(kind: ErrorKind) -> (&'static str, &'static str) {
    match kind {
        ErrorKind::AuthenticationFailed => ("invalid_request_error", "invalid_api_key"),
        ErrorKind::RateLimitExceeded => ("rate_limit_error", "rate_limit_exceeded"),
        ErrorKind::AudioFormat => ("invalid_request_error", "invalid_value"),
        ErrorKind::InvalidRequest | ErrorKind::MessageTooLarge | ErrorKind::ProtocolError => {
            ("invalid_request_error", "invalid_request")
        }
        ErrorKind::ModelUnavailable => ("server_error", "model_unavailable"),
        ErrorKind::SessionTimeout => ("server_error", "timeout"),
        ErrorKind::BufferOverflow | ErrorKind::Internal => ("server_error", "internal_error"),
    }
}

/// An error answer with a chosen `param` and `code` (OpenAI's SDKs show both).
pub(crate) fn error(
    status: StatusCode,
    kind: &str,
    param: Option<&str>,
    code: &str,
    message: &str,
) -> Response {
    (
        status,
        axum::Json(json!({
            "error": {
                "message": message,
                "type": kind,
                "param": param,
                "code": code,
            }
        })),
    )
        .into_response()
}

/// `GET /v1/models`: every route, as OpenAI lists models. Behind the same credentials as
/// the transcription endpoints.
pub async fn models(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let request = Upgrade {
        headers: &headers,
        query: query.as_deref(),
        config: &state.config,
    };
    if let Err(refusal) = gate::authenticate::<OpenAi>(&state, peer, &request) {
        return *refusal;
    }
    let data: Vec<Value> = state
        .config
        .routes
        .iter()
        .map(|r| {
            json!({
                "id": r.name,
                "object": "model",
                "created": 0,
                "owned_by": "speech-gateway",
            })
        })
        .collect();
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

/// `POST /v1/realtime/transcription_sessions`: the session mint NVIDIA's realtime client
/// calls before it connects. It answers the session's defaults (the beta shape the client
/// edits and sends back in `transcription_session.update`) and a `client_secret` the client
/// then offers as the `realtime-token.…` subprotocol: the caller's own credential (the
/// gateway keeps no ephemeral secrets), or `none` when authentication is off.
pub async fn transcription_sessions(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let request = Upgrade {
        headers: &headers,
        query: query.as_deref(),
        config: &state.config,
    };
    if let Err(refusal) = gate::authenticate::<OpenAi>(&state, peer, &request) {
        return *refusal;
    }
    let secret = match state.auth {
        Some(_) => OpenAi::credentials(&request, state.config.auth.query_token)
            .ok()
            .flatten()
            .map(|c| c.into_owned())
            .unwrap_or_default(),
        None => "none".to_string(),
    };
    let default_route = state
        .config
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .find(|r| *r == "default")
        .or_else(|| state.config.routes.first().map(|r| r.name.as_str()))
        .unwrap_or("default");
    let expires_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + 3_600);
    axum::Json(json!({
        "id": format!("sess_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        "object": "realtime.transcription_session",
        "input_audio_format": "pcm16",
        "input_audio_params": {"sample_rate_hz": 16_000, "num_channels": 1},
        "input_audio_transcription": {"model": default_route, "language": "en-US", "prompt": ""},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
        "client_secret": {"value": secret, "expires_at": expires_at},
    }))
    .into_response()
}

/// Most phrase hints a `prompt` (or NVIDIA's word boosting) gives, and bytes of one (as
/// Deepgram's `keywords`).
pub(crate) const MAX_PHRASES: usize = 100;
pub(crate) const MAX_PHRASE_BYTES: usize = 100;

/// Phrase hints from a prompt: its comma- or line-separated items of 1–100 bytes, boost 1.
pub(crate) fn prompt_phrases(prompt: Option<&str>) -> Vec<(String, f32)> {
    prompt
        .unwrap_or_default()
        .split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.len() <= MAX_PHRASE_BYTES)
        .take(MAX_PHRASES)
        .map(|p| (p.to_string(), 1.0))
        .collect()
}

/// The route a request's `model` names, or OpenAI's "model not found" answer (404).
pub(crate) fn route<'a>(state: &'a AppState, model: &str) -> Result<&'a str, Box<Response>> {
    let name = model.trim().to_ascii_lowercase();
    match state.config.routes.iter().find(|r| r.name == name) {
        Some(r) => Ok(r.name.as_str()),
        None => {
            state.ctx.metrics.rejected("bad_request");
            let known: Vec<&str> = state
                .config
                .routes
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            let shown: String = model.chars().take(64).collect();
            Err(Box::new(error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model"),
                "model_not_found",
                &format!(
                    "The model `{shown}` does not exist: this gateway serves {} (GET /v1/models)",
                    known.join(", ")
                ),
            )))
        }
    }
}
