//! RealtimeSTT's control connection (`/realtimestt/control`): JSON commands, each answered
//! in the server's shape (`{"status":"success",…}` or `{"status":"error","message":…}`).
//! It is not a session: it holds no admission place and no back-end stream, and acts on
//! the most recent live data session of its pair (see [`super`]).
//!
//! - `set_parameter` / `get_parameter` take the server's allowed names. `language` and
//!   `post_speech_silence_duration` (end-of-utterance silence, seconds) apply to the next
//!   data session's start; `is_recording` is read-only (an utterance is open); the
//!   `last_transcription_bytes*` are refused (the gateway keeps no audio); the others are
//!   kept and read back, with no effect. A name never set reads as `null`.
//! - `call_method`: `stop` (and the client's `perform_final_transcription`) ends the
//!   utterance — the back end finalises what it holds and the `fullSentence` follows on the
//!   data connection; `abort` and `clear_audio_queue` end it and drop its results;
//!   `shutdown` flushes the data session and closes it; `set_microphone`, `wakeup` and
//!   `text` are accepted and do nothing (the gateway has no microphone, no wake words, and
//!   sends every sentence as it comes).
//!
//! A control connection closes when the gateway starts draining, and after
//! `session.idle_timeout` of silence while its pair has no data session.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};

use super::{PairKey, Pairs, RealtimeStt, Slot, error_value};
use crate::ingress::dialect::Upgrade;
use crate::ingress::{AppState, WS_READ_BUFFER, gate};
use crate::security::tls::PeerAddr;
use crate::session::{Command, ErrorKind};

/// Largest control message (a command is a few hundred bytes).
const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// Largest parameter value kept (as JSON).
const MAX_VALUE_BYTES: usize = 1024;

/// The server's settable names (`allowed_parameters` of `stt_server.py`).
const PARAMETERS: [&str; 12] = [
    "language",
    "silero_sensitivity",
    "wake_word_activation_delay",
    "post_speech_silence_duration",
    "deactivity_silence_confirmation_duration",
    "listen_start",
    "recording_stop_time",
    "last_transcription_bytes",
    "last_transcription_bytes_b64",
    "speech_end_silence_start",
    "is_recording",
    "use_wake_words",
];

/// The control endpoint: the gate's connection-rate, Origin and credential checks (no
/// admission: there is no session), then the command loop.
pub async fn endpoint(
    Extension(pairs): Extension<Arc<Pairs>>,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let request = Upgrade {
        headers: &headers,
        query: query.as_deref(),
        config: &state.config,
    };
    if let Err(refusal) = gate::authenticate::<RealtimeStt>(&state, peer, &request) {
        return *refusal;
    }
    if state.draining.is_cancelled() {
        return gate::refusal::<RealtimeStt>(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(gate::retry_after_secs(&state)),
            ErrorKind::RateLimitExceeded,
            "the gateway is shutting down; connect to another instance",
        );
    }
    let ip = gate::client_ip(&state.config, &headers, peer);
    let slot = pairs.join(PairKey::of(&request, ip, state.config.auth.query_token));
    ws.max_message_size(MAX_COMMAND_BYTES)
        .max_frame_size(MAX_COMMAND_BYTES)
        .read_buffer_size(WS_READ_BUFFER)
        .max_write_buffer_size(state.config.limits.max_write_buffer_bytes)
        .on_upgrade(move |socket| run(socket, slot, state))
}

async fn run(socket: WebSocket, slot: Arc<Slot>, state: AppState) {
    let (mut sink, mut input) = socket.split();
    let write_timeout = state.config.limits.write_timeout;
    let idle = state.config.session.idle_timeout;
    let close = loop {
        let next = tokio::select! {
            () = state.draining.cancelled() => break Some((1001, "server shutting down")),
            next = async {
                match idle {
                    Some(idle) => tokio::time::timeout(idle, input.next()).await,
                    None => Ok(input.next().await),
                }
            } => next,
        };
        let answer = match next {
            // Quiet is fine while the pair's data session runs (the client sends nothing
            // during a call).
            Err(_) if slot.current().is_some() => continue,
            Err(_) => break Some((1008, "idle")),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => break None,
            Ok(Some(Ok(Message::Text(t)))) => answer(&slot, t.as_str()),
            Ok(Some(Ok(Message::Binary(_)))) => error_value(
                ErrorKind::InvalidRequest,
                "the control connection takes JSON commands; audio goes to the data connection",
            ),
            Ok(Some(Ok(_))) => continue,
        };
        let sent = tokio::time::timeout(
            write_timeout,
            sink.send(Message::Text(answer.to_string().into())),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
    };
    if let Some((code, reason)) = close {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = tokio::time::timeout(write_timeout, sink.send(frame)).await;
    }
}

fn error(message: impl AsRef<str>) -> Value {
    error_value(ErrorKind::InvalidRequest, message.as_ref())
}

/// A name as the client sent it, cut short for an answer.
fn shown(v: &Value) -> String {
    let s = v.as_str().map_or_else(|| v.to_string(), str::to_string);
    s.chars().take(64).collect()
}

/// The answer to one command (pure but for what it tells the data session).
pub(super) fn answer(slot: &Slot, text: &str) -> Value {
    let Ok(Value::Object(cmd)) = serde_json::from_str::<Value>(text) else {
        return error("Invalid JSON command");
    };
    let name = cmd.get("command").cloned().unwrap_or(Value::Null);
    match name.as_str() {
        Some("set_parameter") => set_parameter(slot, &cmd),
        Some("get_parameter") => get_parameter(slot, &cmd),
        Some("call_method") => call_method(slot, &cmd),
        _ => error(format!("Unknown command {}", shown(&name))),
    }
}

/// The allowed name `p` is, if it is one.
fn parameter(p: &Value) -> Option<&'static str> {
    PARAMETERS.into_iter().find(|n| p.as_str() == Some(*n))
}

fn set_parameter(slot: &Slot, cmd: &serde_json::Map<String, Value>) -> Value {
    let raw = cmd.get("parameter").cloned().unwrap_or(Value::Null);
    let Some(name) = parameter(&raw) else {
        return error(format!(
            "Parameter {} is not allowed (set_parameter)",
            shown(&raw)
        ));
    };
    let value = cmd.get("value").cloned().unwrap_or(Value::Null);
    match name {
        "is_recording" => return error("Parameter is_recording is read-only here (set_parameter)"),
        "last_transcription_bytes" | "last_transcription_bytes_b64" => {
            return error(format!(
                "Parameter {name} is not offered: the gateway keeps no audio (set_parameter)"
            ));
        }
        "language" if !(value.is_string() || value.is_null()) => {
            return error("Parameter language takes a language code (set_parameter)");
        }
        "post_speech_silence_duration" if !value.is_number() => {
            return error("Parameter post_speech_silence_duration takes seconds (set_parameter)");
        }
        _ => {}
    }
    if value.to_string().len() > MAX_VALUE_BYTES {
        return error(format!(
            "Parameter {name}: the value is longer than {MAX_VALUE_BYTES} bytes (set_parameter)"
        ));
    }
    let message = format!("Parameter {name} set to {}", shown(&value));
    slot.set_param(name, value);
    json!({"status": "success", "message": message})
}

fn get_parameter(slot: &Slot, cmd: &serde_json::Map<String, Value>) -> Value {
    let raw = cmd.get("parameter").cloned().unwrap_or(Value::Null);
    let Some(name) = parameter(&raw) else {
        return error(format!(
            "Parameter {} is not allowed (get_parameter)",
            shown(&raw)
        ));
    };
    let value = match name {
        "is_recording" => Value::Bool(
            slot.current()
                .is_some_and(|l| l.recording.load(Ordering::Acquire)),
        ),
        "last_transcription_bytes" | "last_transcription_bytes_b64" => {
            return error(format!(
                "Parameter {name} is not offered: the gateway keeps no audio (get_parameter)"
            ));
        }
        "language" => slot.param(name).unwrap_or_else(|| json!("")),
        _ => slot.param(name).unwrap_or(Value::Null),
    };
    let mut answer = json!({"status": "success", "parameter": name, "value": value});
    if let Some(id) = cmd
        .get("request_id")
        .filter(|id| id.to_string().len() <= 64)
    {
        answer["request_id"] = id.clone();
    }
    answer
}

fn call_method(slot: &Slot, cmd: &serde_json::Map<String, Value>) -> Value {
    let raw = cmd.get("method").cloned().unwrap_or(Value::Null);
    let (name, command, abort) = match raw.as_str() {
        Some(m @ ("stop" | "perform_final_transcription")) => (m, Some(Command::Finalize), false),
        Some(m @ ("abort" | "clear_audio_queue")) => (m, Some(Command::Finalize), true),
        Some(m @ "shutdown") => (m, Some(Command::End), false),
        Some(m @ ("set_microphone" | "wakeup" | "text")) => (m, None, false),
        _ => return error(format!("Method {} is not allowed", shown(&raw))),
    };
    if let Some(command) = command {
        let Some(link) = slot.current() else {
            return error(format!(
                "Method {name}: no data connection of this client is open"
            ));
        };
        if abort {
            link.discarding.fetch_add(1, Ordering::AcqRel);
        }
        if link.commands.try_send(command).is_err() {
            if abort {
                link.discarding.fetch_sub(1, Ordering::AcqRel);
            }
            return error(format!(
                "Method {name}: the data session is busy with earlier commands; try again"
            ));
        }
    }
    json!({"status": "success", "message": format!("Method {name} called")})
}

#[cfg(test)]
mod tests {
    use super::super::DataLink;
    use super::*;

    fn slot() -> (Arc<Pairs>, Arc<Slot>) {
        let pairs = Arc::new(Pairs::default());
        let slot = pairs.join(PairKey {
            ip: std::net::IpAddr::from([127, 0, 0, 1]),
            credential: None,
            label: String::new(),
        });
        (pairs, slot)
    }

    fn ask(slot: &Slot, v: Value) -> Value {
        answer(slot, &v.to_string())
    }

    #[test]
    fn parameters_round_trip_in_the_servers_shape() {
        let (_pairs, slot) = slot();
        let set = ask(
            &slot,
            json!({"command":"set_parameter","parameter":"silero_sensitivity","value":0.3}),
        );
        assert_eq!(set["status"], "success", "{set}");
        let got = ask(
            &slot,
            json!({"command":"get_parameter","parameter":"silero_sensitivity","request_id":7}),
        );
        assert_eq!(
            got,
            json!({"status":"success","parameter":"silero_sensitivity","value":0.3,"request_id":7})
        );
        let language = ask(
            &slot,
            json!({"command":"get_parameter","parameter":"language"}),
        );
        assert_eq!(language["value"], "", "auto until set");
        let recording = ask(
            &slot,
            json!({"command":"get_parameter","parameter":"is_recording"}),
        );
        assert_eq!(recording["value"], false);
        for bad in [
            json!({"command":"set_parameter","parameter":"model","value":"x"}),
            json!({"command":"set_parameter","parameter":"is_recording","value":true}),
            json!({"command":"get_parameter","parameter":"last_transcription_bytes"}),
            json!({"command":"set_parameter","parameter":"post_speech_silence_duration","value":"long"}),
            json!({"command":"dance"}),
            json!({"command":"call_method","method":"__init__"}),
            json!({"command":"call_method","method":"stop"}),
        ] {
            let a = ask(&slot, bad.clone());
            assert_eq!(a["status"], "error", "{bad}: {a}");
            assert!(a["message"].is_string());
        }
        assert_eq!(
            answer(&slot, "{not json")["message"],
            "Invalid JSON command"
        );
    }

    #[test]
    fn methods_reach_the_latest_data_session() {
        let (_pairs, slot) = slot();
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let link = Arc::new(DataLink::new(tx));
        slot.attach(link.clone());
        let ok = ask(&slot, json!({"command":"call_method","method":"stop"}));
        assert_eq!(ok["message"], "Method stop called");
        assert_eq!(rx.try_recv().unwrap(), Command::Finalize);
        let _ = ask(&slot, json!({"command":"call_method","method":"abort"}));
        assert_eq!(link.discarding.load(Ordering::Acquire), 1);
        let busy = ask(&slot, json!({"command":"call_method","method":"shutdown"}));
        assert_eq!(busy["status"], "success");
        let full = ask(&slot, json!({"command":"call_method","method":"stop"}));
        assert_eq!(full["status"], "error", "the queue of 2 is full: {full}");
        let idle = ask(
            &slot,
            json!({"command":"call_method","method":"wakeup","args":[]}),
        );
        assert_eq!(idle["status"], "success");
        slot.detach(link.id);
        assert!(slot.current().is_none());
    }
}
