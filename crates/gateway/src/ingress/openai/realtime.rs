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
//!   is everything up to the commit, and its `committed` comes as soon as the commit
//!   does, before the transcription.
//! - Errors are `error` events in OpenAI's shape; the gateway's notices (failover, lag)
//!   are `gateway.status` events SDKs skip.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::Message;
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

use super::{MAX_PHRASE_BYTES, MAX_PHRASES, prompt_phrases};

/// The client's audio format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// PCM16LE at this rate (`audio/pcm` is 24 kHz; the beta `pcm16` of NVIDIA's client
    /// takes `input_audio_params.sample_rate_hz`).
    Pcm(u32),
    /// G.711 µ-law at 8 kHz (`audio/pcmu`, beta `g711_ulaw`).
    Pcmu,
    /// G.711 A-law at 8 kHz (`audio/pcma`, beta `g711_alaw`).
    Pcma,
    /// NVIDIA's `none`: the appended bytes are a file's, WAV header first (read at the
    /// first append; raw PCM16 at this rate when there is no header).
    Container(u32),
}

impl Format {
    fn rate(self) -> u32 {
        match self {
            Format::Pcm(rate) | Format::Container(rate) => rate,
            Format::Pcmu | Format::Pcma => 8_000,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Pcm(_) => "audio/pcm",
            Format::Pcmu => "audio/pcmu",
            Format::Pcma => "audio/pcma",
            Format::Container(_) => "none",
        }
    }

    fn beta_name(self) -> &'static str {
        match self {
            Format::Pcm(_) => "pcm16",
            Format::Pcmu => "g711_ulaw",
            Format::Pcma => "g711_alaw",
            Format::Container(_) => "none",
        }
    }
}

/// Which client family the connection serves: OpenAI's (GA events, `session.created`
/// first) or NVIDIA's realtime client (`riva.client.realtime`: `conversation.created`
/// first, a commit after every append, `input_audio_buffer.done` at the end, and a last
/// `completed` with `is_last_result`). NVIDIA's client offers the `realtime-token.…`
/// subprotocol, which tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    OpenAi,
    Nvidia,
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
    /// NVIDIA's `recognition_config`, `speaker_diarization` and `word_boosting`.
    punctuate: bool,
    profanity_filter: bool,
    diarize: bool,
    boosts: Vec<(String, f32)>,
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
    /// The session was configured with the beta `transcription_session.update`.
    beta: bool,
    /// A `Container` session starts at the first append (its header gives the rate).
    started: bool,
    /// NVIDIA: every final's text, for the last result.
    all_text: Vec<String>,
}

/// One realtime connection's codec.
#[derive(Debug)]
pub struct Realtime {
    routes: Vec<String>,
    default_route: String,
    max_frame: std::time::Duration,
    flavor: Flavor,
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

    /// The beta session object (`transcription_session.updated`; NVIDIA's client reads it
    /// back as its configuration).
    fn beta_session_object(&self, s: &Settings) -> Value {
        json!({
            "id": format!("sess_{}", self.prefix),
            "object": "realtime.transcription_session",
            "input_audio_format": s.format.beta_name(),
            "input_audio_params": {"sample_rate_hz": s.format.rate(), "num_channels": 1},
            "input_audio_transcription": {
                "model": s.model,
                "language": s.language,
                "prompt": s.prompt.clone().unwrap_or_default(),
            },
            "turn_detection": if s.manual { Value::Null } else {
                json!({"type": "server_vad", "silence_duration_ms": s.silence_ms.unwrap_or(500)})
            },
        })
    }

    /// The session object of `session.created` / `session.updated`.
    fn session_object(&self, s: Option<&Settings>) -> Value {
        let format = s.map_or(Format::Pcm(24_000), |s| s.format);
        let mut fmt = json!({"type": format.name()});
        if let Format::Pcm(rate) = format {
            fmt["rate"] = json!(rate);
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

    /// `session.update` (GA) or `transcription_session.update` (beta, and NVIDIA's client):
    /// the first starts the session; later ones may not change the format or the model.
    fn update(&self, event: &Value, beta: bool) -> Decoded {
        let session = &event["session"];
        if !session.is_object() {
            return invalid(
                ErrorKind::InvalidRequest,
                "the update needs a `session` object",
            )
            .into();
        }
        let settings = match if beta {
            self.beta_settings(session)
        } else {
            self.ga_settings(session)
        } {
            Ok(s) => s,
            Err(e) => return Command::Reject(e).into(),
        };
        if !self.routes.contains(&settings.model) {
            return invalid(
                ErrorKind::InvalidRequest,
                format!(
                    "unknown transcription model `{}`: this gateway serves {}",
                    settings.model.chars().take(64).collect::<String>(),
                    self.routes.join(", ")
                ),
            )
            .into();
        }
        let mut state = self.state.lock().expect("realtime state");
        if let Some(current) = state.settings.clone() {
            if current.format != settings.format || current.model != settings.model {
                return invalid(
                    ErrorKind::InvalidRequest,
                    "the audio format and the model are set by the first update and cannot \
                     change",
                )
                .into();
            }
            drop(state);
            return self.reply(self.updated(&current, beta)).into();
        }
        state.beta = beta;
        let answer = self.updated(&settings, beta);
        let deferred = matches!(settings.format, Format::Container(_));
        let config = start_config(&settings);
        state.settings = Some(settings);
        state.started = !deferred;
        drop(state);
        if deferred {
            // The file's header, at the first append, says the rate.
            return self.reply(answer).into();
        }
        Decoded::Many(vec![Command::Start(config), self.reply(answer)].into_iter())
    }

    fn updated(&self, s: &Settings, beta: bool) -> Value {
        if beta {
            json!({"type": "transcription_session.updated", "session": self.beta_session_object(s)})
        } else {
            json!({"type": "session.updated", "session": self.session_object(Some(s))})
        }
    }

    /// The GA shape: `session.type`, `audio.input.{format, transcription, turn_detection}`.
    fn ga_settings(&self, session: &Value) -> Result<Settings, SessionError> {
        if let Some(t) = session.get("type").and_then(Value::as_str)
            && t != "transcription"
        {
            return Err(SessionError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "this gateway serves transcription sessions only (session.type \
                     \"transcription\"), not `{}`",
                    t.chars().take(32).collect::<String>()
                ),
            ));
        }
        let input = &session["audio"]["input"];
        let format = match input["format"]["type"].as_str() {
            None | Some("audio/pcm") => {
                if let Some(rate) = input["format"]["rate"].as_u64()
                    && rate != 24_000
                {
                    return Err(SessionError::new(
                        ErrorKind::AudioFormat,
                        "audio/pcm is 24000 Hz (the gateway resamples for the back end)",
                    ));
                }
                Format::Pcm(24_000)
            }
            Some("audio/pcmu") => Format::Pcmu,
            Some("audio/pcma") => Format::Pcma,
            Some(other) => return Err(unsupported_format(other)),
        };
        let turn = &input["turn_detection"];
        Ok(Settings {
            format,
            model: self.model_of(&input["transcription"]),
            language: language_of(&input["transcription"]),
            prompt: prompt_of(&input["transcription"]),
            manual: turn.is_null() && input.get("turn_detection").is_some(),
            silence_ms: turn_settings(turn)?,
            punctuate: true,
            profanity_filter: false,
            diarize: false,
            boosts: Vec::new(),
        })
    }

    /// The beta shape: `input_audio_format`, `input_audio_transcription`, `turn_detection`,
    /// and NVIDIA's `input_audio_params.sample_rate_hz`.
    fn beta_settings(&self, session: &Value) -> Result<Settings, SessionError> {
        let params_rate = session["input_audio_params"]["sample_rate_hz"]
            .as_u64()
            .map(|r| r as u32);
        // OpenAI's beta pcm16 is 24 kHz; NVIDIA's client says its rate (16 kHz by default).
        let default_rate = match self.flavor {
            Flavor::Nvidia => 16_000,
            Flavor::OpenAi => 24_000,
        };
        let rate = params_rate.unwrap_or(default_rate);
        if !crate::session::SAMPLE_RATES.contains(&rate) {
            return Err(SessionError::new(
                ErrorKind::AudioFormat,
                "input_audio_params.sample_rate_hz must be between 8000 and 48000",
            ));
        }
        if session["input_audio_params"]["num_channels"]
            .as_u64()
            .is_some_and(|n| n != 1)
        {
            return Err(SessionError::new(
                ErrorKind::AudioFormat,
                "input_audio_params.num_channels must be 1 on the realtime API",
            ));
        }
        let format = match session["input_audio_format"].as_str() {
            None | Some("pcm16") => Format::Pcm(rate),
            Some("g711_ulaw") => Format::Pcmu,
            Some("g711_alaw") => Format::Pcma,
            Some("none") => Format::Container(rate),
            Some(other) => return Err(unsupported_format(other)),
        };
        let turn = &session["turn_detection"];
        let recognition = &session["recognition_config"];
        let boosts = session["word_boosting"]["word_boosting_list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|_| session["word_boosting"]["enable_word_boosting"] != false)
            .flat_map(|entry| {
                let boost = entry["boost"].as_f64().unwrap_or(1.0) as f32;
                entry["phrases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(move |p| (p.trim().to_string(), boost))
            })
            .filter(|(p, _)| !p.is_empty() && p.len() <= MAX_PHRASE_BYTES)
            .take(MAX_PHRASES)
            .collect();
        // NVIDIA's endpointing: `stop_history` (ms of silence) ends an utterance.
        let silence_ms = match session["endpointing_config"]["stop_history"].as_u64() {
            Some(ms) if ms > 0 => Some(ms.clamp(10, 10_000) as u32),
            _ => turn_settings(turn)?,
        };
        Ok(Settings {
            format,
            model: self.model_of(&session["input_audio_transcription"]),
            language: language_of(&session["input_audio_transcription"]),
            prompt: prompt_of(&session["input_audio_transcription"]),
            manual: turn.is_null() && session.get("turn_detection").is_some(),
            silence_ms,
            punctuate: recognition["enable_automatic_punctuation"]
                .as_bool()
                .unwrap_or(true),
            profanity_filter: recognition["enable_profanity_filter"]
                .as_bool()
                .unwrap_or(false),
            diarize: session["speaker_diarization"]["enable_speaker_diarization"] == true,
            boosts,
        })
    }

    /// The transcription `model` names a route; absent (or a model name NVIDIA's client
    /// sends by default that is not a route), the default route.
    fn model_of(&self, transcription: &Value) -> String {
        let model = transcription["model"]
            .as_str()
            .map(|m| m.trim().to_ascii_lowercase())
            .filter(|m| !m.is_empty());
        match model {
            Some(m) if self.routes.contains(&m) || self.flavor == Flavor::OpenAi => m,
            _ => self.default_route.clone(),
        }
    }

    fn append(&self, event: &Value) -> Decoded {
        let mut state = self.state.lock().expect("realtime state");
        let Some(settings) = state.settings.clone() else {
            return invalid(
                ErrorKind::InvalidRequest,
                "input_audio_buffer.append before session.update: configure the transcription \
                 session first; this audio was not transcribed",
            )
            .into();
        };
        let Some(b64) = event["audio"].as_str() else {
            return invalid(
                ErrorKind::InvalidRequest,
                "input_audio_buffer.append needs `audio` (base64)",
            )
            .into();
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            return invalid(
                ErrorKind::InvalidRequest,
                "`audio` is not valid base64; this append was not transcribed",
            )
            .into();
        };
        state.uncommitted += raw.len() as u64;
        let mut commands = Vec::new();
        let pcm: Bytes = match settings.format {
            Format::Pcm(_) => Bytes::from(raw),
            Format::Pcmu => raw.iter().flat_map(|&b| ulaw(b).to_le_bytes()).collect(),
            Format::Pcma => raw.iter().flat_map(|&b| alaw(b).to_le_bytes()).collect(),
            Format::Container(rate) => {
                let mut bytes = Bytes::from(raw);
                if !state.started {
                    // The file's header decides the rate the session starts with.
                    let (rate, offset) = match wav_header(&bytes) {
                        Some(Ok(h)) => h,
                        Some(Err(why)) => return invalid(ErrorKind::AudioFormat, why).into(),
                        None => (rate, 0),
                    };
                    let mut s = settings.clone();
                    s.format = Format::Container(rate);
                    commands.push(Command::Start(start_config(&s)));
                    state.settings = Some(s);
                    state.started = true;
                    bytes = bytes.slice(offset.min(bytes.len())..);
                }
                bytes
            }
        };
        let rate = state.settings.as_ref().map_or(16_000, |s| s.format.rate());
        drop(state);
        let frame = max_frame_bytes(rate, self.max_frame).max(2);
        let mut pcm = pcm;
        while pcm.len() > frame {
            commands.push(Command::Audio(pcm.split_to(frame)));
        }
        if !pcm.is_empty() {
            commands.push(Command::Audio(pcm));
        }
        // NVIDIA's client: `runtime_config.force_eou` ends the utterance after this audio.
        if event["runtime_config"]["force_eou"]
            .as_str()
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || event["runtime_config"]["force_eou"].as_bool() == Some(true)
        {
            commands.push(Command::Finalize);
        }
        Decoded::Many(commands.into_iter())
    }

    fn commit(&self) -> Decoded {
        // NVIDIA's client commits after every append: its commits mean "take what was
        // appended", which the gateway does anyway.
        if self.flavor == Flavor::Nvidia {
            self.state.lock().expect("realtime state").uncommitted = 0;
            return Decoded::Nothing;
        }
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
        let manual = state.settings.as_ref().is_some_and(|s| s.manual);
        // With manual turns items are made by commits alone, so the committed item's id
        // is known now: say so at once (as OpenAI does), before its transcription.
        let committed = manual.then(|| {
            let n = state.item + u64::from(state.commits);
            json!({
                "type": "input_audio_buffer.committed",
                "item_id": self.item_id(n),
                "previous_item_id": n.checked_sub(1).map(|p| self.item_id(p)),
            })
        });
        state.commits += 1;
        drop(state);
        match committed {
            Some(event) => Decoded::Many(vec![self.reply(event), Command::Finalize].into_iter()),
            None => Command::Finalize.into(),
        }
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

    /// The open item's completed event, after its speech-stopped and (server VAD)
    /// committed events; the next item opens.
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
        // Manual turns said `committed` when the commit came.
        if !state.settings.as_ref().is_some_and(|s| s.manual) {
            out.push(self.text(json!({
                "type": "input_audio_buffer.committed",
                "item_id": item,
                "previous_item_id": previous,
            })));
        }
        let mut completed = json!({
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item,
            "content_index": 0,
            "transcript": transcript,
            "usage": {"type": "duration", "seconds": (duration_ms as f64 / 1000.0).ceil()},
        });
        if self.flavor == Flavor::Nvidia {
            // NVIDIA's client reads `is_last_result` (the last one ends its loop).
            completed["is_last_result"] = json!(false);
            state.all_text.push(transcript.clone());
        }
        out.push(self.text(completed));
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
        // What was sent grows by the delta alone (a copy of the whole text per partial
        // cost in proportion to the utterance).
        state.delta_sent.push_str(delta);
        let item_id = self.item_id(state.item);
        drop(state);
        vec![delta_event(delta, item_id, self.event_id())]
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

/// `conversation.item.input_audio_transcription.delta`, the message of every partial:
/// the bytes `json!` and [`Realtime::text`] make (keys in order), from a struct rather
/// than a `Value` map built and dropped per partial.
fn delta_event(delta: &str, item_id: String, event_id: String) -> Message {
    #[derive(serde::Serialize)]
    struct DeltaEvent<'a> {
        content_index: u32,
        delta: &'a str,
        event_id: String,
        item_id: String,
        #[serde(rename = "type")]
        kind: &'static str,
    }
    let event = DeltaEvent {
        content_index: 0,
        delta,
        event_id,
        item_id,
        kind: "conversation.item.input_audio_transcription.delta",
    };
    Message::Text(
        serde_json::to_string(&event)
            .expect("a delta always serializes")
            .into(),
    )
}

/// A WAV header at the start of `bytes`: `Some(Ok((rate, offset of the samples)))`,
/// `Some(Err(why))` for a WAV this API cannot take, `None` when there is no header.
fn wav_header(bytes: &[u8]) -> Option<Result<(u32, usize), String>> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let mut at = 12;
    let mut rate = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let body = at + 8;
        if id == b"fmt " && body + 16 <= bytes.len() {
            let format = u16::from_le_bytes([bytes[body], bytes[body + 1]]);
            let channels = u16::from_le_bytes([bytes[body + 2], bytes[body + 3]]);
            let r = u32::from_le_bytes([
                bytes[body + 4],
                bytes[body + 5],
                bytes[body + 6],
                bytes[body + 7],
            ]);
            let bits = u16::from_le_bytes([bytes[body + 14], bytes[body + 15]]);
            if format != 1 || channels != 1 || bits != 16 {
                return Some(Err(
                    "the WAV must be mono 16-bit PCM on the realtime API".to_string()
                ));
            }
            if !crate::session::SAMPLE_RATES.contains(&r) {
                return Some(Err(format!(
                    "the WAV is sampled at {r} Hz: 8000 to 48000 Hz are taken"
                )));
            }
            rate = Some(r);
        }
        if id == b"data" {
            return Some(
                rate.map(|r| (r, body))
                    .ok_or_else(|| "the WAV has no fmt chunk before its data".to_string()),
            );
        }
        at = body + size + (size & 1);
    }
    Some(Err(
        "the first append must hold the whole WAV header".to_string()
    ))
}

fn unsupported_format(name: &str) -> SessionError {
    SessionError::new(
        ErrorKind::AudioFormat,
        format!(
            "input format `{}` is not supported: use audio/pcm (24 kHz), audio/pcmu or \
             audio/pcma (beta: pcm16, g711_ulaw, g711_alaw)",
            name.chars().take(32).collect::<String>()
        ),
    )
}

fn language_of(transcription: &Value) -> Option<String> {
    transcription["language"]
        .as_str()
        .map(str::trim)
        .filter(|l| !l.is_empty() && l.len() <= 32)
        .map(str::to_string)
}

fn prompt_of(transcription: &Value) -> Option<String> {
    transcription["prompt"]
        .as_str()
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.chars().take(4096).collect::<String>())
}

/// `turn_detection`: `server_vad` (its `silence_duration_ms`) or `null`.
fn turn_settings(turn: &Value) -> Result<Option<u32>, SessionError> {
    if let Some(t) = turn.get("type").and_then(Value::as_str)
        && t != "server_vad"
    {
        return Err(SessionError::new(
            ErrorKind::InvalidRequest,
            "turn_detection is server_vad or null (semantic_vad is not offered)",
        ));
    }
    Ok(turn["silence_duration_ms"]
        .as_u64()
        .map(|ms| ms.clamp(10, 10_000) as u32))
}

/// The session's start from the settings.
fn start_config(s: &Settings) -> StartConfig {
    StartConfig {
        sample_rate: s.format.rate(),
        model: Some(s.model.clone()),
        language: s.language.clone().unwrap_or_else(|| "auto".into()),
        phrases: {
            let mut p = prompt_phrases(s.prompt.as_deref());
            p.extend(s.boosts.iter().cloned());
            p.truncate(MAX_PHRASES);
            p
        },
        interim_results: true,
        punctuate: s.punctuate,
        profanity_filter: s.profanity_filter,
        diarize: s.diarize,
        vad_events: !s.manual,
        endpointing_ms: if s.manual { None } else { s.silence_ms },
        ends_by_closing: true,
        ..StartConfig::default()
    }
}

impl Contract for Realtime {
    const NAME: &'static str = "openai_realtime";

    fn credentials<'a>(
        request: &Upgrade<'a>,
        allow_query: bool,
    ) -> Result<Option<std::borrow::Cow<'a, str>>, crate::security::auth::AuthError> {
        // Browsers: `Sec-WebSocket-Protocol: realtime, openai-insecure-api-key.KEY`.
        // NVIDIA's client: `realtime, realtime-token.SECRET` (the secret its session mint
        // returned: see `transcription_sessions`).
        if let Some(list) = request
            .headers
            .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            && let Some(key) = list
                .split(',')
                .map(str::trim)
                .find_map(|p| {
                    p.strip_prefix("openai-insecure-api-key.")
                        .or_else(|| p.strip_prefix("realtime-token."))
                })
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
        // NVIDIA's client authenticates with a `realtime-token.…` subprotocol.
        let nvidia = request
            .headers
            .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().starts_with("realtime-token."));
        Ok(Realtime {
            flavor: if nvidia {
                Flavor::Nvidia
            } else {
                Flavor::OpenAi
            },
            routes,
            default_route,
            max_frame: request.config.session.max_frame,
            event_ids: AtomicU64::new(0),
            prefix: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            state: Mutex::new(State::default()),
        })
    }

    fn greeting(&self) -> Vec<Message> {
        match self.flavor {
            Flavor::OpenAi => vec![self.text(
                json!({"type": "session.created", "session": self.session_object(None)}),
            )],
            Flavor::Nvidia => vec![self.text(json!({
                "type": "conversation.created",
                "conversation": {"id": format!("conv_{}", self.prefix), "object": "realtime.conversation"},
            }))],
        }
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
            Some("session.update") => self.update(&event, false),
            Some("transcription_session.update") => self.update(&event, true),
            // NVIDIA's client: no more audio; the session flushes and ends.
            Some("input_audio_buffer.done") => Command::End.into(),
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
                let mut out = Vec::with_capacity(2);
                if self.flavor == Flavor::Nvidia {
                    // NVIDIA's client stops at the result marked last: the whole text.
                    let mut state = self.state.lock().expect("realtime state");
                    let transcript = std::mem::take(&mut state.all_text).join(" ");
                    let item = self.item_id(state.item);
                    drop(state);
                    out.push(self.text(json!({
                        "type": "conversation.item.input_audio_transcription.completed",
                        "item_id": item,
                        "content_index": 0,
                        "transcript": transcript,
                        "is_last_result": true,
                    })));
                }
                out.push(crate::ingress::v1::close_message(*cause, "end of session"));
                out
            }
        }
    }

    fn close_code(cause: CloseCause) -> u16 {
        crate::ingress::v1::close_code(cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_is_the_bytes_a_json_value_made() {
        for delta in [
            "hello",
            " world",
            "\"quoted\" \\ back\n\t",
            "é 日本 \u{1}",
            "",
        ] {
            let mut value = json!({
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": "item_ab000001",
                "content_index": 0,
                "delta": delta,
            });
            value["event_id"] = Value::String("event_ab000007".into());
            let Message::Text(got) =
                delta_event(delta, "item_ab000001".into(), "event_ab000007".into())
            else {
                panic!("a text message");
            };
            assert_eq!(got.as_str(), value.to_string(), "{delta:?}");
        }
    }
}
