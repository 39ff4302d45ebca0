//! OpenAI's realtime transcription WebSocket (`GET /v1/realtime?intent=transcription`),
//! in the GA event format, as a [`Dialect`].
//!
//! - On connect the server says `session.created`. The client configures the session with
//!   `session.update` (`session.type = "transcription"`; `audio.input.format`:
//!   `audio/pcm` at 24 kHz, `audio/pcmu` or `audio/pcma`; `audio.input.transcription`:
//!   `model` → route, `language`, `prompt` → phrase hints; `audio.input.turn_detection`:
//!   `server_vad` (default) or `null` for manual commits), answered with
//!   `session.updated`. That first update starts the gateway session.
//! - `input_audio_buffer.append` carries base64 audio; `.commit` ends the current item
//!   (the back end finalises what it holds: `Finalize`); `.clear` drops what the current
//!   item holds (its transcript is not sent).
//! - Server events: `input_audio_buffer.speech_started` (the gateway's VAD, server VAD
//!   only), `conversation.item.input_audio_transcription.delta` (new text of the open
//!   utterance, when a partial extends what was sent), then for each utterance
//!   `input_audio_buffer.speech_stopped`, `input_audio_buffer.committed` and
//!   `conversation.item.input_audio_transcription.completed` with the final transcript.
//!   With server VAD an item is each final of the back end; with manual commits an item
//!   is everything up to the commit.
//! - Errors are `error` events in OpenAI's shape; the gateway's notices (failover, lag)
//!   are `gateway.status` events SDKs skip.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::{CloseFrame, Message};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

use super::OpenAi;
use crate::ingress::deepgram::{alaw, ulaw};
use crate::ingress::dialect::{Contract, Decoded, Dialect, Upgrade};
use crate::session::audio::max_frame_bytes;
use crate::session::{
    CloseCause, Command, ErrorKind, Event, SessionError, StartConfig, Transcript,
};

/// Most phrase hints a `prompt` gives, and bytes of one.
const MAX_PHRASES: usize = 100;
const MAX_PHRASE_BYTES: usize = 100;

/// The client's audio format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// PCM16LE at 24 kHz (`audio/pcm`).
    Pcm,
    /// G.711 µ-law at 8 kHz (`audio/pcmu`).
    Pcmu,
    /// G.711 A-law at 8 kHz (`audio/pcma`).
    Pcma,
}

impl Format {
    fn rate(self) -> u32 {
        match self {
            Format::Pcm => 24_000,
            Format::Pcmu | Format::Pcma => 8_000,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Pcm => "audio/pcm",
            Format::Pcmu => "audio/pcmu",
            Format::Pcma => "audio/pcma",
        }
    }
}

/// What the session was configured with (the first `session.update`).
#[derive(Debug, Clone)]
struct Settings {
    format: Format,
    model: String,
    language: Option<String>,
    prompt: Option<String>,
    /// `turn_detection: null`: items end at the client's commits only.
    manual: bool,
    silence_ms: Option<u32>,
}

/// The state both directions share: the reader configures, the writer numbers items.
#[derive(Debug, Default)]
struct State {
    settings: Option<Settings>,
    /// Audio appended since the last commit (bytes of the client's format).
    uncommitted: u64,
    /// The open item.
    item: u64,
    /// Text already sent as deltas for the open item.
    delta_sent: String,
    /// Manual commits: finals gathered for the open item until its commit is done.
    gathered: Vec<String>,
    /// `clear` was asked: the open item's results are dropped until its Finalize is done.
    clearing: bool,
    /// Speech started (and not stopped) in the open item.
    speaking: bool,
    /// Commits sent and not yet answered by a Finalize.
    commits: u32,
}

/// One realtime connection's codec.
#[derive(Debug)]
pub struct Realtime {
    routes: Vec<String>,
    default_route: String,
    max_frame: std::time::Duration,
    event_ids: AtomicU64,
    /// A random prefix, so item and event ids differ between connections.
    prefix: String,
    state: Mutex<State>,
}

fn invalid(kind: ErrorKind, message: impl Into<String>) -> Command {
    Command::Reject(SessionError::new(kind, message))
}

impl Realtime {
    fn event_id(&self) -> String {
        format!(
            "event_{}{:06}",
            self.prefix,
            self.event_ids.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn item_id(&self, n: u64) -> String {
        format!("item_{}{n:06}", self.prefix)
    }

    fn reply(&self, mut value: Value) -> Command {
        value["event_id"] = Value::String(self.event_id());
        Command::Reply(value.to_string().into())
    }

    fn text(&self, mut value: Value) -> Message {
        value["event_id"] = Value::String(self.event_id());
        Message::Text(value.to_string().into())
    }

    /// The session object of `session.created` / `session.updated`.
    fn session_object(&self, s: Option<&Settings>) -> Value {
        let format = s.map_or(Format::Pcm, |s| s.format);
        let mut fmt = json!({"type": format.name()});
        if format == Format::Pcm {
            fmt["rate"] = json!(24_000);
        }
        let turn_detection = match s {
            Some(s) if s.manual => Value::Null,
            _ => json!({
                "type": "server_vad",
                "silence_duration_ms": s.and_then(|s| s.silence_ms).unwrap_or(500),
                "prefix_padding_ms": 300,
                "threshold": 0.5,
            }),
        };
        json!({
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": format!("sess_{}", self.prefix),
            "audio": {
                "input": {
                    "format": fmt,
                    "transcription": {
                        "model": s.map_or(self.default_route.as_str(), |s| s.model.as_str()),
                        "language": s.and_then(|s| s.language.clone()),
                        "prompt": s.and_then(|s| s.prompt.clone()).unwrap_or_default(),
                    },
                    "turn_detection": turn_detection,
                    "noise_reduction": Value::Null,
                }
            },
            "include": Value::Null,
        })
    }

    /// `session.update`: the first starts the session; later ones may not change it.
    fn update(&self, event: &Value) -> Decoded {
        let session = &event["session"];
        if !session.is_object() {
            return invalid(
                ErrorKind::InvalidRequest,
                "session.update needs a `session` object",
            )
            .into();
        }
        if let Some(t) = session.get("type").and_then(Value::as_str)
            && t != "transcription"
        {
            return invalid(
                ErrorKind::InvalidRequest,
                format!(
                    "this gateway serves transcription sessions only (session.type \
                     \"transcription\"), not `{}`",
                    t.chars().take(32).collect::<String>()
                ),
            )
            .into();
        }
        let input = &session["audio"]["input"];
        let format = match input["format"]["type"].as_str() {
            None | Some("audio/pcm") => {
                if let Some(rate) = input["format"]["rate"].as_u64()
                    && rate != 24_000
                {
                    return invalid(
                        ErrorKind::AudioFormat,
                        "audio/pcm is 24000 Hz (the gateway resamples for the back end)",
                    )
                    .into();
                }
                Format::Pcm
            }
            Some("audio/pcmu") => Format::Pcmu,
            Some("audio/pcma") => Format::Pcma,
            Some(other) => {
                return invalid(
                    ErrorKind::AudioFormat,
                    format!(
                        "input format `{}` is not supported: use audio/pcm (24 kHz), audio/pcmu \
                         or audio/pcma",
                        other.chars().take(32).collect::<String>()
                    ),
                )
                .into();
            }
        };
        let transcription = &input["transcription"];
        let model = transcription["model"]
            .as_str()
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_else(|| self.default_route.clone());
        if !self.routes.contains(&model) {
            return invalid(
                ErrorKind::InvalidRequest,
                format!(
                    "unknown transcription model `{}`: this gateway serves {}",
                    model.chars().take(64).collect::<String>(),
                    self.routes.join(", ")
                ),
            )
            .into();
        }
        let language = transcription["language"]
            .as_str()
            .map(str::trim)
            .filter(|l| !l.is_empty() && l.len() <= 32)
            .map(str::to_string);
        let prompt = transcription["prompt"]
            .as_str()
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.chars().take(4096).collect::<String>());
        let turn = &input["turn_detection"];
        let manual = turn.is_null() && input.get("turn_detection").is_some();
        if let Some(t) = turn.get("type").and_then(Value::as_str)
            && t != "server_vad"
        {
            return invalid(
                ErrorKind::InvalidRequest,
                "turn_detection is server_vad or null (semantic_vad is not offered)",
            )
            .into();
        }
        let silence_ms = turn["silence_duration_ms"]
            .as_u64()
            .map(|ms| ms.clamp(10, 10_000) as u32);
        let settings = Settings {
            format,
            model,
            language,
            prompt,
            manual,
            silence_ms,
        };
        let mut state = self.state.lock().expect("realtime state");
        if let Some(current) = &state.settings {
            if current.format != settings.format || current.model != settings.model {
                return invalid(
                    ErrorKind::InvalidRequest,
                    "the audio format and the model are set by the first session.update and \
                     cannot change",
                )
                .into();
            }
            let current = current.clone();
            drop(state);
            return self
                .reply(json!({"type": "session.updated", "session": self.session_object(Some(&current))}))
                .into();
        }
        let config = StartConfig {
            sample_rate: format.rate(),
            model: Some(settings.model.clone()),
            language: settings.language.clone().unwrap_or_else(|| "auto".into()),
            phrases: phrases(settings.prompt.as_deref()),
            interim_results: true,
            punctuate: true,
            vad_events: !settings.manual,
            endpointing_ms: if settings.manual {
                None
            } else {
                settings.silence_ms
            },
            ..StartConfig::default()
        };
        let answer =
            json!({"type": "session.updated", "session": self.session_object(Some(&settings))});
        state.settings = Some(settings);
        drop(state);
        Decoded::Many(vec![Command::Start(config), self.reply(answer)].into_iter())
    }

    fn append(&self, event: &Value) -> Decoded {
        let state = self.state.lock().expect("realtime state");
        let Some(format) = state.settings.as_ref().map(|s| s.format) else {
            return invalid(
                ErrorKind::InvalidRequest,
                "input_audio_buffer.append before session.update: configure the transcription \
                 session first; this audio was not transcribed",
            )
            .into();
        };
        drop(state);
        let Some(b64) = event["audio"].as_str() else {
            return invalid(
                ErrorKind::InvalidRequest,
                "input_audio_buffer.append needs `audio` (base64)",
            )
            .into();
        };
        let raw = match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(r) => r,
            Err(_) => {
                return invalid(
                    ErrorKind::InvalidRequest,
                    "`audio` is not valid base64; this append was not transcribed",
                )
                .into();
            }
        };
        self.state.lock().expect("realtime state").uncommitted += raw.len() as u64;
        let pcm: Bytes = match format {
            Format::Pcm => Bytes::from(raw),
            Format::Pcmu => raw.iter().flat_map(|&b| ulaw(b).to_le_bytes()).collect(),
            Format::Pcma => raw.iter().flat_map(|&b| alaw(b).to_le_bytes()).collect(),
        };
        let frame = max_frame_bytes(format.rate(), self.max_frame).max(2);
        let mut pcm = pcm;
        let mut frames = Vec::with_capacity(pcm.len() / frame + 1);
        while pcm.len() > frame {
            frames.push(Command::Audio(pcm.split_to(frame)));
        }
        if !pcm.is_empty() {
            frames.push(Command::Audio(pcm));
        }
        Decoded::Many(frames.into_iter())
    }

    fn commit(&self) -> Decoded {
        let mut state = self.state.lock().expect("realtime state");
        if state.settings.is_none() {
            return invalid(
                ErrorKind::InvalidRequest,
                "input_audio_buffer.commit before session.update",
            )
            .into();
        }
        if state.uncommitted == 0 {
            return invalid(
                ErrorKind::InvalidRequest,
                "input_audio_buffer.commit with an empty buffer: append audio first \
                 (input_audio_buffer_commit_empty)",
            )
            .into();
        }
        state.uncommitted = 0;
        state.commits += 1;
        Command::Finalize.into()
    }

    fn clear(&self) -> Decoded {
        let mut state = self.state.lock().expect("realtime state");
        state.uncommitted = 0;
        state.clearing = true;
        drop(state);
        Decoded::Many(
            vec![
                Command::Finalize,
                self.reply(json!({"type": "input_audio_buffer.cleared"})),
            ]
            .into_iter(),
        )
    }

    /// A final of the back end: with server VAD it completes the open item; with manual
    /// commits it is gathered until the commit is done.
    fn on_final(&self, t: &Transcript) -> Vec<Message> {
        let mut state = self.state.lock().expect("realtime state");
        if state.clearing {
            return Vec::new();
        }
        let text = t.text.trim().to_string();
        let manual = state.settings.as_ref().is_some_and(|s| s.manual);
        if manual || (state.commits > 0 && t.from_finalize) {
            if !text.is_empty() {
                state.gathered.push(text);
            }
            return Vec::new();
        }
        if text.is_empty() {
            return Vec::new();
        }
        let end_ms = t
            .words
            .as_ref()
            .and_then(|w| w.last())
            .map_or(t.timestamp_ms, |w| (w.end * 1000.0).round() as u64);
        self.complete(&mut state, text, Some(end_ms), t.duration_ms)
    }

    /// The open item's committed and completed events; the next item opens.
    fn complete(
        &self,
        state: &mut State,
        transcript: String,
        end_ms: Option<u64>,
        duration_ms: u64,
    ) -> Vec<Message> {
        let item = self.item_id(state.item);
        let previous = state.item.checked_sub(1).map(|n| self.item_id(n));
        let mut out = Vec::with_capacity(3);
        if let Some(end) = end_ms.filter(|_| state.speaking) {
            out.push(self.text(json!({
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": end,
                "item_id": item,
            })));
        }
        out.push(self.text(json!({
            "type": "input_audio_buffer.committed",
            "item_id": item,
            "previous_item_id": previous,
        })));
        out.push(self.text(json!({
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item,
            "content_index": 0,
            "transcript": transcript,
            "usage": {"type": "duration", "seconds": (duration_ms as f64 / 1000.0).ceil()},
        })));
        state.item += 1;
        state.delta_sent.clear();
        state.speaking = false;
        out
    }

    fn on_partial(&self, t: &Transcript) -> Vec<Message> {
        let mut state = self.state.lock().expect("realtime state");
        if state.clearing {
            return Vec::new();
        }
        let text = t.text.trim();
        let Some(delta) = text.strip_prefix(state.delta_sent.as_str()) else {
            // The hypothesis changed what was sent: nothing can be taken back, so the
            // item's completed event carries the final text.
            return Vec::new();
        };
        if delta.is_empty() {
            return Vec::new();
        }
        let delta = delta.to_string();
        state.delta_sent = text.to_string();
        let item = self.item_id(state.item);
        vec![self.text(json!({
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": item,
            "content_index": 0,
            "delta": delta,
        }))]
    }

    fn on_finalized(&self) -> Vec<Message> {
        let mut state = self.state.lock().expect("realtime state");
        if state.clearing {
            state.clearing = false;
            state.gathered.clear();
            state.delta_sent.clear();
            state.speaking = false;
            state.item += 1;
            return Vec::new();
        }
        if state.commits == 0 {
            return Vec::new();
        }
        state.commits -= 1;
        let text = std::mem::take(&mut state.gathered).join(" ");
        self.complete(&mut state, text, None, 0)
    }
}

/// Phrase hints from a prompt: its comma- or line-separated items of 1–100 bytes.
fn phrases(prompt: Option<&str>) -> Vec<(String, f32)> {
    prompt
        .unwrap_or_default()
        .split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.len() <= MAX_PHRASE_BYTES)
        .take(MAX_PHRASES)
        .map(|p| (p.to_string(), 1.0))
        .collect()
}

impl Contract for Realtime {
    const NAME: &'static str = "openai_realtime";

    fn credentials<'a>(
        request: &Upgrade<'a>,
        allow_query: bool,
    ) -> Result<Option<std::borrow::Cow<'a, str>>, crate::security::auth::AuthError> {
        // Browsers: `Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.KEY`.
        if let Some(list) = request
            .headers
            .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            && let Some(key) = list
                .split(',')
                .map(str::trim)
                .find_map(|p| p.strip_prefix("openai-insecure-api-key."))
                .filter(|k| !k.is_empty())
        {
            return Ok(Some(std::borrow::Cow::Borrowed(key)));
        }
        <OpenAi as Contract>::credentials(request, allow_query)
    }

    fn error_body(kind: ErrorKind, message: &str) -> Value {
        OpenAi::error_body(kind, message)
    }
}

impl Dialect for Realtime {
    const SUBPROTOCOLS: &'static [&'static str] = &["realtime"];

    fn accept(request: &Upgrade<'_>) -> Result<Self, SessionError> {
        if let Some(intent) = request.query_param("intent")
            && intent != "transcription"
        {
            return Err(SessionError::new(
                ErrorKind::InvalidRequest,
                "this gateway serves realtime transcription only (intent=transcription)",
            ));
        }
        let routes: Vec<String> = request
            .config
            .routes
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let default_route = if routes.iter().any(|r| r == "default") {
            "default".to_string()
        } else {
            routes.first().cloned().unwrap_or_default()
        };
        Ok(Realtime {
            routes,
            default_route,
            max_frame: request.config.session.max_frame,
            event_ids: AtomicU64::new(0),
            prefix: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            state: Mutex::new(State::default()),
        })
    }

    fn greeting(&self) -> Vec<Message> {
        vec![self.text(json!({"type": "session.created", "session": self.session_object(None)}))]
    }

    fn decode(&self, msg: Message) -> Decoded {
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => {
                return invalid(
                    ErrorKind::InvalidRequest,
                    "binary messages are not part of the realtime API: send \
                     input_audio_buffer.append events",
                )
                .into();
            }
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Decoded::Nothing,
        };
        let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else {
            return invalid(
                ErrorKind::InvalidRequest,
                "events are JSON objects; this one was not",
            )
            .into();
        };
        match event["type"].as_str() {
            Some("session.update") => self.update(&event),
            Some("input_audio_buffer.append") => self.append(&event),
            Some("input_audio_buffer.commit") => self.commit(),
            Some("input_audio_buffer.clear") => self.clear(),
            Some(other) => invalid(
                ErrorKind::InvalidRequest,
                format!(
                    "unknown event type `{}` for a transcription session: session.update, \
                     input_audio_buffer.append, .commit and .clear are taken",
                    other.chars().take(48).collect::<String>()
                ),
            )
            .into(),
            None => invalid(ErrorKind::InvalidRequest, "an event needs a `type`").into(),
        }
    }

    fn encode(&self, ev: &Event) -> Vec<Message> {
        match ev {
            Event::Partial(t) => self.on_partial(t),
            Event::Final(t) => self.on_final(t),
            Event::Finalized => self.on_finalized(),
            Event::SpeechStarted { at_ms } => {
                let mut state = self.state.lock().expect("realtime state");
                state.speaking = true;
                let item = self.item_id(state.item);
                drop(state);
                vec![self.text(json!({
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": at_ms,
                    "item_id": item,
                }))]
            }
            Event::UtteranceEnd { .. } | Event::Pong { .. } => Vec::new(),
            Event::Reply(text) => vec![Message::Text(text.to_string().into())],
            Event::Error(e) => {
                let body = OpenAi::error_body(e.kind, &e.message);
                vec![self.text(json!({"type": "error", "error": body["error"]}))]
            }
            Event::Status { state, message } => vec![self.text(json!({
                "type": "gateway.status",
                "state": state.label(),
                "message": message,
            }))],
            Event::Close(cause) => {
                let reason = match cause {
                    CloseCause::Normal => "end of session",
                    CloseCause::GoingAway => "server shutting down",
                    CloseCause::Error(kind) => kind.label(),
                };
                vec![Message::Close(Some(CloseFrame {
                    code: Self::close_code(*cause),
                    reason: reason.into(),
                }))]
            }
        }
    }

    fn close_code(cause: CloseCause) -> u16 {
        crate::ingress::v1::close_code(cause)
    }
}
