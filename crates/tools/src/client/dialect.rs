//! The WebSocket contracts the tools speak: the gateway's own (v1, `/v1/audio/stream`)
//! and Deepgram's live one (`/v1/listen`). They differ in four small things, the methods
//! of [`Dialect`]: where a client connects ([`Dialect::url`]), what it says first
//! ([`Dialect::opening`]: v1's `start`; Deepgram takes its settings from the query), what
//! it says after the audio ([`Dialect::closing`]: `end` / `CloseStream`), and how it reads
//! a server message ([`Dialect::read`]: a Deepgram message becomes its v1 counterpart).
//! Everything else — pacing, latency, judging — is written once against v1's events and
//! shared: `transcribe` (and so `eval`), `load` and `chaos` take a dialect.
//!
//! Reading Deepgram as v1: an interim `Results` is a partial accounting for the audio up
//! to `start + duration` (v1's `timestamp_ms`), a final `Results` a final with the same
//! words (`punctuated_word`, `start`, `end` in seconds, as v1's), `GatewayStatus` a
//! status, `Error` an error, and `Metadata` — the last message before a normal close,
//! which v1 does not have — [`ClientEvent::Metadata`]. Deepgram's `Error` does not say
//! whether the session goes on; its `code` is the gateway's v1 code, and whether an error
//! of that code is recoverable is fixed per code (the gateway's `ErrorKind`), so the
//! client reads it from there.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::deepgram::{self, ServerMessage as DeepgramMessage};
use super::events::{ClientEvent, Final, Partial, ServerError, Status, Word};
use speech_gateway::ingress::v1::wire::{ClientMessage, StartSettings};
use speech_gateway::session::ErrorKind;

/// v1's endpoint path.
pub const V1_PATH: &str = "/v1/audio/stream";
/// Deepgram's live endpoint path.
pub const LISTEN_PATH: &str = "/v1/listen";

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
}

/// What a session asks of the gateway, whatever the dialect.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// Of the PCM16 mono audio sent.
    pub sample_rate: u32,
    /// The route (both dialects call it `model`); the gateway's default when `None`.
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
    /// `v1` or `deepgram`, as the command line and scenario files spell it.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::V1 => "v1",
            Dialect::Deepgram => "deepgram",
        }
    }

    /// The endpoint of this dialect on the gateway of `url` (a v1 URL, a bare
    /// `ws://host:port`, or this dialect's own endpoint): a bare URL gets the dialect's
    /// path; Deepgram also turns v1's path into `/v1/listen`; any other path is kept.
    pub fn endpoint(self, url: &str) -> String {
        let base = url.trim_end_matches('/');
        let bare = base
            .split_once("://")
            .is_some_and(|(_, rest)| !rest.contains('/'));
        match self {
            Dialect::V1 if bare => format!("{base}{V1_PATH}"),
            Dialect::V1 => url.to_string(),
            Dialect::Deepgram => match base.strip_suffix(V1_PATH) {
                Some(host) => format!("{host}{LISTEN_PATH}"),
                None if bare => format!("{base}{LISTEN_PATH}"),
                None => url.to_string(),
            },
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
        }
    }

    /// The first text message (v1's `start`); Deepgram needs none.
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
        }
    }

    /// After the audio: flush, then close (`end` / `CloseStream`).
    pub fn closing(self) -> &'static str {
        match self {
            Dialect::V1 => V1_END,
            Dialect::Deepgram => deepgram::CLOSE_STREAM,
        }
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
                Some(DeepgramMessage::Other) | None => ClientEvent::Other(
                    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
                ),
            },
        }
    }
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
}
