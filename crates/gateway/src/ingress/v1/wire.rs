//! The v1 contract's messages as types — the one set of them in the workspace. The
//! gateway renders its events with [`ServerMessage`]; the client tools (`sgw transcribe`,
//! `eval`, `load`, `chaos`) and the test kit read server messages with it and write
//! client messages with [`ClientMessage`].
//!
//! Strings are `Cow`: the server serializes borrowed text (no copy per result), clients
//! deserialize owned text (`ServerMessage<'static>`).
//!
//! The server reads client messages with its own validator ([`super::decode`]), not by
//! deserializing [`ClientMessage`]: every wrong field must get its own error code and a
//! message that names it, which a derived parser cannot say. The contract tests read raw
//! JSON on purpose, to pin the wire format from outside these types.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A word, with times in seconds from the session's first sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word<'a> {
    pub word: Cow<'a, str>,
    pub start: f64,
    pub end: f64,
    pub confidence: f32,
}

/// A replaceable hypothesis of the current utterance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partial<'a> {
    pub text: Cow<'a, str>,
    pub confidence: f32,
    /// Session audio time (ms) up to which the result accounts.
    pub timestamp_ms: u64,
    /// Absent when the client turned word timestamps off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word<'a>>>,
}

/// An append-only result, never revised by later messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Final<'a> {
    pub text: Cow<'a, str>,
    pub confidence: f32,
    pub is_end_of_utterance: bool,
    pub timestamp_ms: u64,
    /// Audio this final covers: from the previous final's last word to this one's.
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word<'a>>>,
}

/// The answer to a `ping`: its `timestamp` echoed exactly as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong<'a> {
    pub timestamp: Cow<'a, Value>,
    /// The server's clock, ms since the Unix epoch.
    pub server_time: i64,
}

/// An error; a non-recoverable one is followed by the close.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMessage<'a> {
    pub code: Cow<'a, str>,
    pub message: Cow<'a, str>,
    pub recoverable: bool,
}

/// Informational (`failover`, `audio_gap`, `backend_lagging`, `backend_caught_up`,
/// `interim_paused`, `interim_resumed`);
/// clients may ignore it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status<'a> {
    pub state: Cow<'a, str>,
    pub message: Cow<'a, str>,
}

/// Server → client: a JSON text frame with a `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage<'a> {
    Partial(Partial<'a>),
    Final(Final<'a>),
    Pong(Pong<'a>),
    Error(ErrorMessage<'a>),
    Status(Status<'a>),
}

impl ServerMessage<'static> {
    /// Reads one text frame; `None` for anything that is not one of these messages (the
    /// contract lets the gateway add types: clients ignore what they do not know).
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// `start.config`: every key optional (the server applies the contract's defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StartSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interim_results: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub punctuate: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profanity_filter: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_timestamps: Option<bool>,
    /// The route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpointing_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_configuration: Option<BTreeMap<String, String>>,
}

/// Client → server text frames (audio goes in binary frames).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage<'a> {
    Start {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<StartSettings>,
    },
    End,
    Ping {
        timestamp: Cow<'a, Value>,
    },
}

impl ClientMessage<'_> {
    /// The message as the text of a WebSocket frame.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("client messages always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The wire format, pinned from outside the types: each literal is what the contract
    /// (README, "The client contract (v1)") shows.
    #[test]
    fn messages_read_and_write_the_contracts_json() {
        let cases = [
            json!({"type":"partial","text":"hello wor","confidence":0.5,"timestamp_ms":1500,
                   "words":[{"word":"hello","start":0.25,"end":0.5,"confidence":0.75}]}),
            json!({"type":"final","text":"hello world","confidence":0.5,"is_end_of_utterance":true,
                   "timestamp_ms":2000,"duration_ms":2000}),
            json!({"type":"pong","timestamp":"t-1","server_time":1700000000000_i64}),
            json!({"type":"error","code":"BUFFER_OVERFLOW","message":"m","recoverable":true}),
            json!({"type":"status","state":"failover","message":"m"}),
        ];
        for value in cases {
            let parsed = ServerMessage::parse(&value.to_string()).expect("parses");
            assert_eq!(serde_json::to_value(&parsed).unwrap(), value);
        }
        let start = ClientMessage::Start {
            config: Some(StartSettings {
                sample_rate: Some(8_000),
                model: Some("offline".into()),
                ..StartSettings::default()
            }),
        };
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            json!({"type":"start","config":{"sample_rate":8000,"model":"offline"}})
        );
        assert_eq!(ClientMessage::End.to_text(), r#"{"type":"end"}"#);
    }

    #[test]
    fn unknown_types_and_other_text_are_not_messages() {
        for raw in [r#"{"type":"shiny"}"#, r#"{"type":"partial"}"#, "not json"] {
            assert_eq!(ServerMessage::parse(raw), None, "{raw}");
        }
    }
}
