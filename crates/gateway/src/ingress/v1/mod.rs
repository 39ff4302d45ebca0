//! The v1 contract (`GET /v1/audio/stream`), the gateway's own: its [`Dialect`]
//! ([`V1`]), its codec, and its wire types ([`wire`], shared with every client in the
//! workspace).
//!
//! Client → server: binary frames are PCM16LE audio; text frames are JSON objects with a
//! `type` of `start`, `end` or `ping` ([`decode`]). Server → client: `partial`, `final`,
//! `pong`, `error`, `status`, then a close frame ([`encode`]). Pure functions: nothing
//! here logs or counts.

mod decode;
mod render;
pub mod wire;

use std::borrow::Cow;

use axum::extract::ws::{CloseFrame, Message};
use serde_json::json;

pub use self::decode::{CUSTOM_KEY_BYTES, CUSTOM_TOTAL_BYTES, CUSTOM_VALUE_BYTES, decode};
use self::wire::{ErrorMessage, Pong, ServerMessage, Status};
use super::dialect::{Contract, Decoded, Dialect, Upgrade};
use crate::session::{CloseCause, ErrorKind, Event, SessionError};

/// The v1 dialect: settings come in the `start` message, credentials as
/// `Authorization: Bearer` (or `?token=` when `auth.query_token` is on).
#[derive(Debug, Default)]
pub struct V1;

impl Contract for V1 {
    const NAME: &'static str = "v1";

    fn error_body(kind: ErrorKind, message: &str) -> serde_json::Value {
        json!({
            "type": "error",
            "code": error_code(kind),
            "message": message,
            "recoverable": kind.recoverable(),
        })
    }
}

impl Dialect for V1 {
    fn accept(_request: &Upgrade<'_>) -> Result<Self, SessionError> {
        Ok(V1)
    }

    fn decode(&self, msg: Message) -> Decoded {
        decode(msg).into()
    }

    fn encode(&self, ev: &Event) -> Vec<Message> {
        encode(ev).into_iter().collect()
    }

    fn close_code(cause: CloseCause) -> u16 {
        close_code(cause)
    }
}

/// The wire code of each error kind. v1 is the contract whose codes the domain adopted as
/// its labels, so they are the same strings; another dialect maps them in its own codec.
pub fn error_code(kind: ErrorKind) -> &'static str {
    kind.label()
}

/// The WebSocket close code that ends a session.
pub fn close_code(cause: CloseCause) -> u16 {
    match cause {
        CloseCause::Normal => 1000,
        CloseCause::GoingAway => 1001,
        CloseCause::Error(kind) => match kind {
            ErrorKind::ModelUnavailable | ErrorKind::RateLimitExceeded => 1013,
            ErrorKind::Internal => 1011,
            ErrorKind::AuthenticationFailed
            | ErrorKind::AudioFormat
            | ErrorKind::BufferOverflow
            | ErrorKind::InvalidRequest
            | ErrorKind::SessionTimeout => 1008,
            ErrorKind::MessageTooLarge => 1009,
            ErrorKind::ProtocolError => 1002,
        },
    }
}

/// The close frame that ends a session, for every dialect: v1's code for the cause
/// ([`close_code`]) and a reason naming it — `normal` for a normal end, the error's code
/// for an error.
pub fn close_message(cause: CloseCause, normal: &'static str) -> Message {
    let reason = match cause {
        CloseCause::Normal => normal,
        CloseCause::GoingAway => "server shutting down",
        CloseCause::Error(kind) => error_code(kind),
    };
    Message::Close(Some(CloseFrame {
        code: close_code(cause),
        reason: reason.into(),
    }))
}

/// Seconds rounded to the millisecond, as word times go on the wire.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Renders one event as a WebSocket message; `None` for events v1 has no message for
/// (speech cues, which a v1 start cannot ask for).
pub fn encode(ev: &Event) -> Option<Message> {
    let wire = match ev {
        Event::SpeechStarted { .. }
        | Event::UtteranceEnd { .. }
        | Event::Finalized
        | Event::Reply(_) => return None,
        // Results, the bulk of the traffic, are written directly (same bytes as the wire
        // types give; see `render`).
        Event::Partial(t) => return Some(Message::Text(render::partial(t).into())),
        Event::Final(t) => return Some(Message::Text(render::final_(t).into())),
        Event::Pong {
            timestamp,
            server_time_ms,
        } => ServerMessage::Pong(Pong {
            timestamp: Cow::Borrowed(timestamp),
            server_time: *server_time_ms,
        }),
        Event::Error(e) => ServerMessage::Error(ErrorMessage {
            code: Cow::Borrowed(error_code(e.kind)),
            message: Cow::Borrowed(&e.message),
            recoverable: e.kind.recoverable(),
        }),
        Event::Status { state, message } => ServerMessage::Status(Status {
            state: Cow::Borrowed(state.label()),
            message: Cow::Borrowed(message),
        }),
        Event::Close(cause) => return Some(close_message(*cause, "end of session")),
    };
    Some(Message::Text(
        serde_json::to_string(&wire)
            .expect("wire messages always serialize")
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Command, Transcript, Word};
    use serde_json::Value;

    fn text(s: &str) -> Command {
        decode(Message::Text(s.into())).unwrap()
    }

    #[test]
    fn pongs_echo_number_timestamps_exactly() {
        // Found by the client_message fuzz target: without serde_json's float_roundtrip,
        // a client's 1.5555555255555555e+32 was read one unit in the last place off and
        // the pong echoed 1.5555555255555557e+32.
        for sent in [
            "1.5555555255555555e+32",
            "155555552555555555555555702480321",
        ] {
            let Command::Ping(ts) = text(&format!(r#"{{"type":"ping","timestamp":{sent}}}"#))
            else {
                panic!()
            };
            let exact: f64 = sent.parse().unwrap();
            assert_eq!(ts.as_f64(), Some(exact), "{sent}");
            let pong = json(encode(&Event::Pong {
                timestamp: ts,
                server_time_ms: 0,
            }));
            assert_eq!(pong["timestamp"].as_f64(), Some(exact), "{sent}");
        }
    }

    fn json(m: Option<Message>) -> Value {
        match m.expect("v1 renders this event") {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_render_as_the_contract_shows() {
        let t = Transcript {
            from_finalize: false,
            text: "Hello how are".into(),
            confidence: 0.5,
            timestamp_ms: 1500,
            duration_ms: 2100,
            words: Some(vec![Word {
                word: "Hello".into(),
                start: 0.0,
                end: 0.30000001,
                confidence: 0.5,
                speaker: None,
            }]),
        };
        let p = json(encode(&Event::Partial(std::sync::Arc::new(t.clone()))));
        assert_eq!(p["type"], "partial");
        assert_eq!(p["timestamp_ms"], 1500);
        assert_eq!(p["words"][0]["end"], 0.3);
        assert!(p.get("duration_ms").is_none());
        let f = json(encode(&Event::Final(t.clone())));
        assert_eq!(f["type"], "final");
        assert_eq!(f["is_end_of_utterance"], true);
        assert_eq!(f["duration_ms"], 2100);
        let no_words = json(encode(&Event::Final(Transcript { words: None, ..t })));
        assert!(no_words.get("words").is_none());
        let e = json(encode(&Event::Error(SessionError::new(
            ErrorKind::BufferOverflow,
            "x",
        ))));
        assert_eq!(
            e,
            serde_json::json!({"type":"error","code":"BUFFER_OVERFLOW","message":"x","recoverable":true})
        );
        let pong = json(encode(&Event::Pong {
            timestamp: serde_json::json!(17),
            server_time_ms: 20,
        }));
        assert_eq!(
            pong,
            serde_json::json!({"type":"pong","timestamp":17,"server_time":20})
        );
    }

    #[test]
    fn every_kind_has_a_code_and_fatal_ones_a_close_code() {
        let kinds = [
            ErrorKind::AudioFormat,
            ErrorKind::BufferOverflow,
            ErrorKind::ModelUnavailable,
            ErrorKind::RateLimitExceeded,
            ErrorKind::AuthenticationFailed,
            ErrorKind::Internal,
            ErrorKind::InvalidRequest,
        ];
        let codes: Vec<&str> = kinds.iter().map(|k| error_code(*k)).collect();
        assert_eq!(
            codes,
            [
                "AUDIO_FORMAT_ERROR",
                "BUFFER_OVERFLOW",
                "MODEL_UNAVAILABLE",
                "RATE_LIMIT_EXCEEDED",
                "AUTHENTICATION_FAILED",
                "INTERNAL_ERROR",
                "INVALID_REQUEST"
            ]
        );
        assert_eq!(
            close_code(CloseCause::Error(ErrorKind::ModelUnavailable)),
            1013
        );
        assert_eq!(
            close_code(CloseCause::Error(ErrorKind::AuthenticationFailed)),
            1008
        );
        assert_eq!(close_code(CloseCause::Error(ErrorKind::Internal)), 1011);
        assert_eq!(close_code(CloseCause::Normal), 1000);
        assert_eq!(close_code(CloseCause::GoingAway), 1001);
        match encode(&Event::Close(CloseCause::Error(ErrorKind::Internal))).unwrap() {
            Message::Close(Some(f)) => {
                assert_eq!((f.code, f.reason.as_str()), (1011, "INTERNAL_ERROR"))
            }
            other => panic!("{other:?}"),
        }
    }
}
