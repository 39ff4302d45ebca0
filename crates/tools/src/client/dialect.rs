//! The WebSocket contracts the tools speak: the gateway's own (v1, `/v1/audio/stream`),
//! Deepgram's live one (`/v1/listen`) and OpenAI's realtime transcription one
//! (`/v1/realtime?intent=transcription`). They differ in a few small things, the methods
//! of [`Dialect`]: where a client connects ([`Dialect::url`]), what it says first
//! ([`Dialect::opening`]: v1's `start`, realtime's `session.update`; Deepgram takes its
//! settings from the query), how audio goes ([`Writer::audio`]: binary PCM, or realtime's
//! base64 `input_audio_buffer.append` at 24 kHz), what it says after the audio
//! ([`Writer::closing`]: `end` / `CloseStream` / `input_audio_buffer.commit`), how it reads
//! a server message ([`Reader::read`]: a Deepgram or realtime message becomes its v1
//! counterpart), and when a session is over ([`Reader::done`]). Everything else — pacing,
//! latency, judging — is written once against v1's events and shared: `transcribe` (and
//! so `eval`), `load` and `chaos` take a dialect.
//!
//! Reading Deepgram as v1: an interim `Results` is a partial accounting for the audio up
//! to `start + duration` (v1's `timestamp_ms`), a final `Results` a final with the same
//! words (`punctuated_word`, `start`, `end` in seconds, as v1's), `GatewayStatus` a
//! status, `Error` an error, and `Metadata` — the last message before a normal close,
//! which v1 does not have — [`ClientEvent::Metadata`]. Deepgram's `Error` does not say
//! whether the session goes on; its `code` is the gateway's v1 code, and whether an error
//! of that code is recoverable is fixed per code (the gateway's `ErrorKind`), so the
//! client reads it from there.
//!
//! Reading OpenAI realtime as v1: a transcription `delta` is a partial holding the open
//! item's text so far (the deltas joined) but no audio position, `completed` a final
//! without words (none when its transcript is empty, as v1 sends no empty final)
//! ([`Dialect::positions`] is false: no per-partial latency, the first
//! partial yes), `input_audio_buffer.speech_stopped` its end of speech
//! ([`ClientEvent::SpeechEnd`]), `gateway.status` a status, `error` an error whose
//! OpenAI `code` is mapped back to the v1 code (`internal_error` → `INTERNAL_ERROR`).
//! The server never closes a realtime session by itself, so the client does: the session
//! is done ([`Reader::done`]) at the first `completed` after the commit went out — the
//! gateway answers the commit with the last item — or at an `error` before
//! `session.updated` (the session never started; read as fatal). The client then sends
//! its close (1000) and the loops end without waiting for the server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::deepgram::{self, ServerMessage as DeepgramMessage};
use super::events::{ClientEvent, Final, Partial, ServerError, Status, Word};
use super::openai_realtime::{self as realtime, ServerEvent as RealtimeEvent, Upsampler};
use speech_gateway::ingress::v1::wire::{ClientMessage, StartSettings};
use speech_gateway::session::ErrorKind;

/// v1's endpoint path.
pub const V1_PATH: &str = "/v1/audio/stream";
/// Deepgram's live endpoint path.
pub const LISTEN_PATH: &str = "/v1/listen";
/// OpenAI's realtime endpoint path (the query says `intent=transcription`).
pub const REALTIME_PATH: &str = realtime::PATH;

/// v1's `end` (pinned to [`ClientMessage::End`] by a test).
const V1_END: &str = r#"{"type":"end"}"#;

/// The client contract a session speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// The gateway's own contract, `/v1/audio/stream`.
    #[default]
    V1,
    /// Deepgram's live streaming contract, `/v1/listen`.
    Deepgram,
    /// OpenAI's realtime transcription WebSocket, `/v1/realtime?intent=transcription`.
    #[serde(rename = "openai-realtime")]
    #[value(name = "openai-realtime")]
    OpenaiRealtime,
}

/// What a session asks of the gateway, whatever the dialect.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// Of the PCM16 mono audio sent.
    pub sample_rate: u32,
    /// The route (every dialect calls it `model`); the gateway's default when `None`.
    pub route: Option<String>,
    pub language: Option<String>,
    pub interim_results: bool,
    /// v1 only: Deepgram's results always carry words.
    pub word_timestamps: bool,
    /// v1's default is on, Deepgram's off: always sent, so both ask the same.
    pub punctuate: bool,
}

impl Ask {
    /// v1's defaults: interim results, word times and punctuation on; the default route.
    pub fn new(sample_rate: u32) -> Self {
        Ask {
            sample_rate,
            route: None,
            language: None,
            interim_results: true,
            word_timestamps: true,
            punctuate: true,
        }
    }
}

impl Dialect {
    /// `v1`, `deepgram` or `openai-realtime`, as the command line and scenario files
    /// spell it.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::V1 => "v1",
            Dialect::Deepgram => "deepgram",
            Dialect::OpenaiRealtime => "openai-realtime",
        }
    }

    /// The endpoint of this dialect on the gateway of `url` (a v1 URL, a bare
    /// `ws://host:port`, or this dialect's own endpoint): a bare URL gets the dialect's
    /// path; Deepgram and realtime also turn v1's path into theirs; any other path is kept.
    pub fn endpoint(self, url: &str) -> String {
        let base = url.trim_end_matches('/');
        let bare = base
            .split_once("://")
            .is_some_and(|(_, rest)| !rest.contains('/'));
        let own = |path: &str| match base.strip_suffix(V1_PATH) {
            Some(host) => format!("{host}{path}"),
            None if bare => format!("{base}{path}"),
            None => url.to_string(),
        };
        match self {
            Dialect::V1 if bare => format!("{base}{V1_PATH}"),
            Dialect::V1 => url.to_string(),
            Dialect::Deepgram => own(LISTEN_PATH),
            Dialect::OpenaiRealtime => own(REALTIME_PATH),
        }
    }

    /// Where a session connects: Deepgram's settings are in the query.
    pub fn url(self, url: &str, ask: &Ask) -> String {
        match self {
            Dialect::V1 => self.endpoint(url),
            Dialect::Deepgram => {
                let mut params: Vec<(&str, String)> = Vec::new();
                if let Some(route) = &ask.route {
                    params.push(("model", route.clone()));
                }
                if let Some(language) = &ask.language {
                    params.push(("language", language.clone()));
                }
                params.extend([
                    ("encoding", "linear16".to_string()),
                    ("sample_rate", ask.sample_rate.to_string()),
                    ("interim_results", ask.interim_results.to_string()),
                    ("punctuate", ask.punctuate.to_string()),
                ]);
                deepgram::live_url(&self.endpoint(url), &params)
            }
            Dialect::OpenaiRealtime => {
                let endpoint = self.endpoint(url);
                if endpoint.contains("intent=") {
                    endpoint
                } else {
                    let sep = if endpoint.contains('?') { '&' } else { '?' };
                    format!("{endpoint}{sep}{}", realtime::QUERY)
                }
            }
        }
    }

    /// The first text message (v1's `start`, realtime's `session.update`: audio/pcm at
    /// 24 kHz whatever `ask.sample_rate`, which [`Writer`] converts; realtime has no
    /// switch for interim results, word times or punctuation: the gateway sends deltas,
    /// no word times, and punctuates); Deepgram needs none.
    pub fn opening(self, ask: &Ask) -> Option<String> {
        match self {
            Dialect::V1 => Some(
                ClientMessage::Start {
                    config: Some(StartSettings {
                        sample_rate: Some(ask.sample_rate),
                        encoding: Some("pcm_s16le".into()),
                        word_timestamps: Some(ask.word_timestamps),
                        interim_results: Some(ask.interim_results),
                        punctuate: Some(ask.punctuate),
                        language: ask.language.clone(),
                        model: ask.route.clone(),
                        ..StartSettings::default()
                    }),
                }
                .to_text(),
            ),
            Dialect::Deepgram => None,
            Dialect::OpenaiRealtime => Some(realtime::session_update(
                ask.route.as_deref(),
                ask.language.as_deref(),
            )),
        }
    }

    /// After the audio: flush, then close (`end` / `CloseStream`); realtime's commit ends
    /// the last item, and the client closes ([`Reader::done`]).
    pub fn closing(self) -> &'static str {
        match self {
            Dialect::V1 => V1_END,
            Dialect::Deepgram => deepgram::CLOSE_STREAM,
            Dialect::OpenaiRealtime => realtime::COMMIT,
        }
    }

    /// Whether results say which audio they account for (v1's `timestamp_ms` and word
    /// times, Deepgram's `start + duration` and words). Realtime's do not: a delta gives no
    /// partial latency (its arrival still counts for the first partial), and a final's end
    /// of speech is its item's `speech_stopped` or, failing that, found in the audio sent
    /// ([`crate::client::latency`]).
    pub fn positions(self) -> bool {
        self != Dialect::OpenaiRealtime
    }

    /// One session's two halves: the [`Writer`] turns frames of PCM16LE at
    /// `ask.sample_rate` into wire messages and says the closing; the [`Reader`] reads
    /// server messages and says when the session is done. Realtime's pair shares whether
    /// the commit went out.
    pub fn session(self, ask: &Ask) -> (Writer, Reader) {
        let committed = Arc::new(AtomicBool::new(false));
        let realtime = self == Dialect::OpenaiRealtime;
        let writer = Writer {
            dialect: self,
            upsampler: realtime.then(|| Upsampler::new(ask.sample_rate)),
            committed: committed.clone(),
        };
        let reader = Reader {
            dialect: self,
            committed,
            configured: false,
            item: String::new(),
            text: String::new(),
            done: false,
        };
        (writer, reader)
    }

    /// The wire messages of a whole clip's frames (PCM16LE at `sample_rate`), converted
    /// once for every session that plays it (`load`): realtime resamples the clip as one
    /// stream, its tail in the last frame's message.
    pub fn clip_messages(self, sample_rate: u32, frames: &[Bytes]) -> Vec<Message> {
        let (mut writer, _) = self.session(&Ask::new(sample_rate));
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| writer.encode(f.clone(), i + 1 == frames.len()))
            .collect()
    }

    /// Whether a normal close comes after [`ClientEvent::Metadata`] (Deepgram's goodbye).
    pub fn says_goodbye(self) -> bool {
        self == Dialect::Deepgram
    }

    /// One server text message, as v1's event (see the module docs).
    pub fn read(self, text: &str) -> ClientEvent {
        match self {
            Dialect::V1 => ClientEvent::parse(text),
            Dialect::Deepgram => match DeepgramMessage::parse(text) {
                Some(DeepgramMessage::Results(r)) => results(&r),
                Some(DeepgramMessage::Metadata {}) => ClientEvent::Metadata,
                Some(DeepgramMessage::GatewayStatus { state, message }) => {
                    ClientEvent::Status(Status {
                        state: state.into(),
                        message: message.into(),
                    })
                }
                Some(DeepgramMessage::Error { code, description }) => {
                    ClientEvent::Error(ServerError {
                        recoverable: recoverable(&code),
                        code: code.into(),
                        message: description.into(),
                    })
                }
                Some(DeepgramMessage::Other) | None => other(text),
            },
            Dialect::OpenaiRealtime => realtime_event(RealtimeEvent::parse(text), text),
        }
    }
}

/// A realtime server event as v1's (see the module docs).
fn realtime_event(event: Option<RealtimeEvent>, text: &str) -> ClientEvent {
    match event {
        Some(RealtimeEvent::Delta { delta, .. }) => ClientEvent::Partial(Partial {
            text: delta.into(),
            confidence: 0.0,
            timestamp_ms: 0,
            words: None,
        }),
        // An item without words (a commit of silence) is no final: v1 sends none.
        Some(RealtimeEvent::Completed { transcript, .. }) if transcript.trim().is_empty() => {
            other(text)
        }
        Some(RealtimeEvent::Completed { transcript, .. }) => ClientEvent::Final(Final {
            text: transcript.into(),
            confidence: 0.0,
            is_end_of_utterance: true,
            timestamp_ms: 0,
            duration_ms: 0,
            words: None,
        }),
        Some(RealtimeEvent::SpeechStopped { audio_end_ms }) => ClientEvent::SpeechEnd {
            audio_ms: audio_end_ms,
        },
        Some(RealtimeEvent::GatewayStatus { state, message }) => ClientEvent::Status(Status {
            state: state.into(),
            message: message.into(),
        }),
        Some(RealtimeEvent::Error { error }) => {
            let code = realtime_code(error.code.as_deref());
            ClientEvent::Error(ServerError {
                recoverable: recoverable(&code),
                code: code.into(),
                message: error.message.into(),
            })
        }
        Some(RealtimeEvent::SessionUpdated {} | RealtimeEvent::Other) | None => other(text),
    }
}

fn other(text: &str) -> ClientEvent {
    ClientEvent::Other(
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
    )
}

/// The sending half of a session ([`Dialect::session`]).
pub struct Writer {
    dialect: Dialect,
    /// Realtime: to 24 kHz.
    upsampler: Option<Upsampler>,
    committed: Arc<AtomicBool>,
}

impl Writer {
    /// One frame of PCM16LE at the session's rate, as a wire message: binary on v1 and
    /// Deepgram; on realtime an `input_audio_buffer.append` of the frame at 24 kHz (lagging
    /// by the resampler's look-ahead, 1.7 ms from 16 kHz, which [`Writer::closing`] sends).
    pub fn audio(&mut self, frame: Bytes) -> Message {
        self.encode(frame, false)
    }

    fn encode(&mut self, frame: Bytes, last: bool) -> Message {
        match &mut self.upsampler {
            None => Message::Binary(frame),
            Some(up) => Message::text(realtime::append(&up.push(&frame, last))),
        }
    }

    /// What goes after the audio: [`Dialect::closing`], after realtime's resampler tail.
    pub fn closing(&mut self) -> Vec<Message> {
        let mut out = Vec::with_capacity(2);
        if let Some(up) = &mut self.upsampler {
            let tail = up.push(&[], true);
            if !tail.is_empty() {
                out.push(Message::text(realtime::append(&tail)));
            }
            self.committed.store(true, Ordering::Release);
        }
        out.push(Message::text(self.dialect.closing()));
        out
    }
}

/// The receiving half of a session ([`Dialect::session`]).
pub struct Reader {
    dialect: Dialect,
    /// Realtime: the commit went out (set by the [`Writer`]).
    committed: Arc<AtomicBool>,
    /// Realtime: `session.updated` came (the session started).
    configured: bool,
    /// Realtime: the open item and its deltas so far.
    item: String,
    text: String,
    done: bool,
}

impl Reader {
    /// One server text message, as v1's event ([`Dialect::read`]; a realtime partial
    /// holds the open item's text so far).
    pub fn read(&mut self, text: &str) -> ClientEvent {
        if self.dialect != Dialect::OpenaiRealtime {
            return self.dialect.read(text);
        }
        let parsed = RealtimeEvent::parse(text);
        match &parsed {
            Some(RealtimeEvent::Delta { item_id, .. }) if *item_id != self.item => {
                self.item.clone_from(item_id);
                self.text.clear();
            }
            Some(RealtimeEvent::Completed { .. }) => {
                self.item.clear();
                self.text.clear();
                self.done |= self.committed.load(Ordering::Acquire);
            }
            _ => {}
        }
        let mut event = realtime_event(parsed, text);
        match &mut event {
            ClientEvent::Partial(p) => {
                self.text.push_str(&p.text);
                p.text = self.text.trim().to_string().into();
            }
            ClientEvent::Error(e) if !self.configured => {
                // The session.update was refused (or the start was): nothing will come.
                e.recoverable = false;
                self.done = true;
            }
            ClientEvent::Other(v) if v["type"] == "session.updated" => self.configured = true,
            _ => {}
        }
        event
    }

    /// The session is over and the client closes: realtime only (the answer to the
    /// commit came, or the session never started); v1 and Deepgram wait for the server's
    /// close.
    pub fn done(&self) -> bool {
        self.done
    }
}

/// OpenAI's error code as the gateway's v1 code (the mapping of
/// `ingress::openai::error_type`, read backwards; `internal_error` is also a buffer
/// overflow's, read as the fatal `INTERNAL_ERROR`). Another code is kept as it came.
fn realtime_code(code: Option<&str>) -> String {
    let kind = match code.unwrap_or_default() {
        "invalid_api_key" => ErrorKind::AuthenticationFailed,
        "rate_limit_exceeded" => ErrorKind::RateLimitExceeded,
        "invalid_value" => ErrorKind::AudioFormat,
        "invalid_request" => ErrorKind::InvalidRequest,
        "model_unavailable" => ErrorKind::ModelUnavailable,
        "timeout" => ErrorKind::SessionTimeout,
        "internal_error" => ErrorKind::Internal,
        other => return other.to_string(),
    };
    kind.label().to_string()
}

/// Seconds to whole milliseconds (v1's unit): `start + duration` lands a hair off the
/// millisecond the gateway counted in.
fn ms(seconds: f64) -> u64 {
    (seconds * 1000.0).round().max(0.0) as u64
}

fn results(r: &deepgram::Results) -> ClientEvent {
    let best = r.best();
    let text = r.transcript().to_string();
    let confidence = best.map_or(0.0, |a| a.confidence);
    let words: Vec<Word<'static>> = best
        .map(|a| a.words.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|w| Word {
            word: w
                .punctuated_word
                .clone()
                .unwrap_or_else(|| w.word.clone())
                .into(),
            start: w.start,
            end: w.end,
            confidence: w.confidence,
        })
        .collect();
    if r.is_final {
        ClientEvent::Final(Final {
            text: text.into(),
            confidence,
            is_end_of_utterance: r.speech_final,
            timestamp_ms: ms(r.audio_end()),
            duration_ms: ms(r.duration),
            words: Some(words),
        })
    } else {
        ClientEvent::Partial(Partial {
            text: text.into(),
            confidence,
            timestamp_ms: ms(r.audio_end()),
            words: Some(words),
        })
    }
}

/// Every error kind of the gateway; [`listed`] fails to compile when one is added.
const KINDS: [ErrorKind; 10] = [
    ErrorKind::AudioFormat,
    ErrorKind::BufferOverflow,
    ErrorKind::ModelUnavailable,
    ErrorKind::RateLimitExceeded,
    ErrorKind::AuthenticationFailed,
    ErrorKind::Internal,
    ErrorKind::InvalidRequest,
    ErrorKind::SessionTimeout,
    ErrorKind::MessageTooLarge,
    ErrorKind::ProtocolError,
];

#[cfg(test)]
fn listed(kind: ErrorKind) -> bool {
    match kind {
        ErrorKind::AudioFormat
        | ErrorKind::BufferOverflow
        | ErrorKind::ModelUnavailable
        | ErrorKind::RateLimitExceeded
        | ErrorKind::AuthenticationFailed
        | ErrorKind::Internal
        | ErrorKind::InvalidRequest
        | ErrorKind::SessionTimeout
        | ErrorKind::MessageTooLarge
        | ErrorKind::ProtocolError => KINDS.contains(&kind),
    }
}

/// Whether the session goes on after an error of `code`, as v1 would say: fixed per code.
/// A code this gateway does not have counts as fatal (the session is then judged failed
/// with it, which shows).
fn recoverable(code: &str) -> bool {
    KINDS
        .iter()
        .find(|k| k.label() == code)
        .is_some_and(|k| k.recoverable())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_urls() {
        let d = Dialect::Deepgram;
        for url in [
            "ws://h:1/v1/audio/stream",
            "ws://h:1",
            "ws://h:1/",
            "ws://h:1/v1/listen",
        ] {
            assert_eq!(d.endpoint(url), "ws://h:1/v1/listen", "{url}");
        }
        assert_eq!(
            d.endpoint("wss://h/asr/v1/audio/stream"),
            "wss://h/asr/v1/listen"
        );
        assert_eq!(d.endpoint("ws://h:1/custom"), "ws://h:1/custom");
        assert_eq!(Dialect::V1.endpoint("ws://h:1/x"), "ws://h:1/x");
        assert_eq!(
            Dialect::V1.endpoint("ws://h:1/"),
            "ws://h:1/v1/audio/stream"
        );
        assert_eq!(
            Dialect::V1.url("ws://h:1", &Ask::new(16_000)),
            "ws://h:1/v1/audio/stream"
        );
        let mut ask = Ask::new(8_000);
        ask.route = Some("offline".into());
        ask.language = Some("en-US".into());
        assert_eq!(
            d.url("ws://h:1/v1/audio/stream", &ask),
            "ws://h:1/v1/listen?model=offline&language=en-US&encoding=linear16\
             &sample_rate=8000&interim_results=true&punctuate=true"
        );
        assert_eq!(
            Dialect::V1.url("ws://h:1/v1/audio/stream", &ask),
            "ws://h:1/v1/audio/stream"
        );
    }

    #[test]
    fn openings_and_closings() {
        let ask = Ask {
            route: Some("fast".into()),
            ..Ask::new(16_000)
        };
        let start: Value = serde_json::from_str(&Dialect::V1.opening(&ask).unwrap()).unwrap();
        assert_eq!(
            start,
            serde_json::json!({"type":"start","config":{"sample_rate":16000,
                "encoding":"pcm_s16le","word_timestamps":true,"interim_results":true,
                "punctuate":true,"model":"fast"}})
        );
        assert_eq!(Dialect::Deepgram.opening(&ask), None);
        assert_eq!(Dialect::V1.closing(), ClientMessage::End.to_text());
        assert_eq!(Dialect::Deepgram.closing(), deepgram::CLOSE_STREAM);
    }

    /// The same results in both dialects read as the same events.
    #[test]
    fn deepgram_reads_as_v1() {
        let pairs = [
            (
                r#"{"type":"partial","text":"hello wor","confidence":0.5,"timestamp_ms":1300,
                   "words":[{"word":"hello","start":0.7,"end":1.1,"confidence":0.5}]}"#,
                r#"{"type":"Results","is_final":false,"speech_final":false,"start":0.7,
                   "duration":0.6000000000000001,"channel":{"alternatives":[{"transcript":
                   "hello wor","confidence":0.5,"words":[{"word":"hello",
                   "punctuated_word":"hello","start":0.7,"end":1.1,"confidence":0.5}]}]}}"#,
            ),
            (
                r#"{"type":"final","text":"Hello world.","confidence":0.75,
                   "is_end_of_utterance":true,"timestamp_ms":2000,"duration_ms":1500,
                   "words":[{"word":"Hello","start":0.7,"end":1.1,"confidence":0.5},
                   {"word":"world.","start":1.2,"end":2.0,"confidence":1.0}]}"#,
                r#"{"type":"Results","is_final":true,"speech_final":true,"start":0.5,
                   "duration":1.5,"channel":{"alternatives":[{"transcript":"Hello world.",
                   "confidence":0.75,"words":[{"word":"hello","punctuated_word":"Hello",
                   "start":0.7,"end":1.1,"confidence":0.5},{"word":"world",
                   "punctuated_word":"world.","start":1.2,"end":2.0,"confidence":1.0}]}]}}"#,
            ),
            (
                r#"{"type":"status","state":"failover","message":"m"}"#,
                r#"{"type":"GatewayStatus","state":"failover","message":"m"}"#,
            ),
            (
                r#"{"type":"error","code":"INVALID_REQUEST","message":"m","recoverable":true}"#,
                r#"{"type":"Error","variant":"invalid_request","code":"INVALID_REQUEST","description":"m","message":"m"}"#,
            ),
            (
                r#"{"type":"error","code":"MODEL_UNAVAILABLE","message":"m","recoverable":false}"#,
                r#"{"type":"Error","code":"MODEL_UNAVAILABLE","description":"m"}"#,
            ),
        ];
        for (v1, dg) in pairs {
            assert_eq!(Dialect::V1.read(v1), Dialect::Deepgram.read(dg), "{dg}");
        }
        assert_eq!(
            Dialect::Deepgram.read(r#"{"type":"Metadata","duration":8.0}"#),
            ClientEvent::Metadata
        );
        assert!(matches!(
            Dialect::Deepgram.read(r#"{"type":"SpeechStarted","timestamp":1.0}"#),
            ClientEvent::Other(_)
        ));
        assert!(matches!(
            Dialect::Deepgram.read(r#"{"type":"Error","code":"NEW_CODE","description":"m"}"#),
            ClientEvent::Error(ServerError {
                recoverable: false,
                ..
            })
        ));
    }

    #[test]
    fn every_error_kind_is_listed() {
        assert!(KINDS.iter().all(|&k| listed(k)));
        for k in KINDS {
            assert_eq!(recoverable(k.label()), k.recoverable(), "{}", k.label());
        }
    }

    #[test]
    fn realtime_endpoints_openings_and_closings() {
        let d = Dialect::OpenaiRealtime;
        for url in [
            "ws://h:1/v1/audio/stream",
            "ws://h:1",
            "ws://h:1/v1/realtime",
        ] {
            assert_eq!(d.endpoint(url), "ws://h:1/v1/realtime", "{url}");
        }
        let ask = Ask {
            route: Some("fast".into()),
            ..Ask::new(16_000)
        };
        assert_eq!(
            d.url("ws://h:1/v1/audio/stream", &ask),
            "ws://h:1/v1/realtime?intent=transcription"
        );
        assert_eq!(
            d.url("ws://h:1/v1/realtime?intent=transcription", &ask),
            "ws://h:1/v1/realtime?intent=transcription"
        );
        let update: Value = serde_json::from_str(&d.opening(&ask).unwrap()).unwrap();
        assert_eq!(update["type"], "session.update");
        assert_eq!(
            update["session"]["audio"]["input"]["format"],
            serde_json::json!({"type": "audio/pcm", "rate": 24000}),
            "24 kHz whatever the source rate"
        );
        assert_eq!(
            update["session"]["audio"]["input"]["transcription"]["model"],
            "fast"
        );
        assert_eq!(d.closing(), realtime::COMMIT);
        assert!(!d.positions() && Dialect::V1.positions());
        assert_eq!(
            serde_json::from_str::<Dialect>(r#""openai-realtime""#).unwrap(),
            d
        );
        assert_eq!(d.name(), "openai-realtime");
    }

    /// 100 ms of 16 kHz audio goes out as an append of 24 kHz samples; the closing sends
    /// the resampler's tail, then the commit. v1 and Deepgram send the frame as it is.
    #[test]
    fn the_realtime_writer_appends_24_khz_audio_and_commits() {
        let frame = Bytes::from(vec![1u8; 3200]);
        let (mut v1, _) = Dialect::V1.session(&Ask::new(16_000));
        assert_eq!(v1.audio(frame.clone()), Message::Binary(frame.clone()));
        assert_eq!(v1.closing(), vec![Message::text(V1_END)]);
        let (mut w, r) = Dialect::OpenaiRealtime.session(&Ask::new(16_000));
        let samples = |m: &Message| {
            let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
            assert_eq!(v["type"], "input_audio_buffer.append");
            base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                v["audio"].as_str().unwrap(),
            )
            .unwrap()
            .len()
                / 2
        };
        let first = samples(&w.audio(frame.clone()));
        assert!(
            first < 2400 && first > 2300,
            "{first}: minus the look-ahead"
        );
        assert!(!r.done());
        let closing = w.closing();
        assert_eq!(closing.len(), 2);
        assert_eq!(first + samples(&closing[0]), 2400, "1600 samples make 2400");
        assert_eq!(closing[1], Message::text(realtime::COMMIT));
        // A whole clip at once (load): the tail is in the last frame's message.
        let messages = Dialect::OpenaiRealtime.clip_messages(16_000, &[frame.clone(), frame]);
        assert_eq!(messages.iter().map(samples).sum::<usize>(), 4800);
    }

    #[test]
    fn realtime_reads_as_v1_and_is_done_at_the_completed_after_the_commit() {
        let (mut w, mut r) = Dialect::OpenaiRealtime.session(&Ask::new(16_000));
        let delta = |item: &str, d: &str| {
            serde_json::json!({"type": "conversation.item.input_audio_transcription.delta",
                "item_id": item, "content_index": 0, "delta": d})
            .to_string()
        };
        let completed = |item: &str, t: &str| {
            serde_json::json!({"type": "conversation.item.input_audio_transcription.completed",
                "item_id": item, "content_index": 0, "transcript": t})
            .to_string()
        };
        assert!(matches!(
            r.read(r#"{"type":"session.created","session":{}}"#),
            ClientEvent::Other(_)
        ));
        assert!(matches!(
            r.read(r#"{"type":"session.updated","session":{}}"#),
            ClientEvent::Other(_)
        ));
        // Deltas join into the open item's text.
        let texts: Vec<String> = [delta("a", "Hello"), delta("a", " wor"), delta("a", "ld")]
            .iter()
            .map(|m| match r.read(m) {
                ClientEvent::Partial(p) => p.text.into_owned(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["Hello", "Hello wor", "Hello world"]);
        assert_eq!(
            r.read(
                r#"{"type":"input_audio_buffer.speech_stopped","audio_end_ms":1250,"item_id":"a"}"#
            ),
            ClientEvent::SpeechEnd { audio_ms: 1250 }
        );
        // A server-VAD item before the commit: a final, not the end.
        let ClientEvent::Final(f) = r.read(&completed("a", "Hello world.")) else {
            panic!()
        };
        assert_eq!((f.text.as_ref(), f.words.is_none()), ("Hello world.", true));
        assert!(!r.done());
        assert!(matches!(r.read(&delta("b", "Bye")), ClientEvent::Partial(p) if p.text == "Bye"));
        assert_eq!(
            r.read(r#"{"type":"gateway.status","state":"failover","message":"m"}"#),
            Dialect::V1.read(r#"{"type":"status","state":"failover","message":"m"}"#)
        );
        // A recoverable error after the start goes on.
        let ClientEvent::Error(e) = r.read(
            r#"{"type":"error","error":{"message":"m","type":"invalid_request_error",
               "param":null,"code":"invalid_request"}}"#,
        ) else {
            panic!()
        };
        assert_eq!((e.code.as_ref(), e.recoverable), ("INVALID_REQUEST", true));
        w.closing();
        assert!(!r.done());
        r.read(&completed("b", "Bye."));
        assert!(r.done(), "the completed after the commit ends the session");
        // A commit of silence: an empty item is no final, and still the end.
        let (mut w, mut r) = Dialect::OpenaiRealtime.session(&Ask::new(16_000));
        w.closing();
        assert!(matches!(r.read(&completed("c", "")), ClientEvent::Other(_)));
        assert!(r.done());
    }

    #[test]
    fn a_realtime_error_before_the_session_started_ends_it() {
        let (_, mut r) = Dialect::OpenaiRealtime.session(&Ask::new(16_000));
        let ClientEvent::Error(e) = r.read(
            r#"{"type":"error","error":{"message":"unknown transcription model","type":
               "invalid_request_error","param":null,"code":"invalid_request"}}"#,
        ) else {
            panic!()
        };
        assert!(!e.recoverable && r.done());
        let ClientEvent::Error(e) = Dialect::OpenaiRealtime
            .read(r#"{"type":"error","error":{"message":"m","code":"model_unavailable"}}"#)
        else {
            panic!()
        };
        assert_eq!(
            (e.code.as_ref(), e.recoverable),
            ("MODEL_UNAVAILABLE", false)
        );
        assert_eq!(realtime_code(Some("brand_new")), "brand_new");
        assert_eq!(
            realtime_code(Some("rate_limit_exceeded")),
            "RATE_LIMIT_EXCEEDED"
        );
    }
}
