//! Server → client messages of contract v1, parsed for the client tools.
//!
//! Parsing is deliberately forgiving: the contract lets the gateway add message types,
//! and a client that failed on one would break the day the server grew a feature.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One word with times in seconds from session start (contract v1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
    #[serde(default)]
    pub confidence: Option<f64>,
}

/// A replaceable hypothesis of the current utterance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Partial {
    pub text: String,
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Audio time (ms since session start) up to which the result accounts.
    #[serde(default)]
    pub timestamp_ms: Option<f64>,
    #[serde(default)]
    pub words: Vec<Word>,
}

/// An append-only result: never revised by later messages.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Final {
    pub text: String,
    #[serde(default)]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub is_end_of_utterance: Option<bool>,
    #[serde(default)]
    pub duration_ms: Option<f64>,
    #[serde(default)]
    pub words: Vec<Word>,
}

/// An `error` message. A non-recoverable one is followed by the server's close frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerError {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub recoverable: bool,
}

/// A parsed server message. Parsing never fails: unknown types (e.g. `status`), known
/// types whose fields do not fit, and non-JSON text are all kept as [`ClientEvent::Other`],
/// because the contract lets the gateway add message types and clients must ignore them.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    Partial(Partial),
    Final(Final),
    Error(ServerError),
    Pong {
        timestamp: Option<i64>,
        server_time: Option<i64>,
    },
    Other(Value),
}

impl ClientEvent {
    /// Parses one text frame; see the type's docs for what becomes [`ClientEvent::Other`].
    pub fn parse(text: &str) -> Self {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Self::Other(Value::String(text.to_owned()));
        };
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let parsed = match kind {
            "partial" => Partial::deserialize(&value).map(Self::Partial).ok(),
            "final" => Final::deserialize(&value).map(Self::Final).ok(),
            "error" => ServerError::deserialize(&value).map(Self::Error).ok(),
            "pong" => Some(Self::Pong {
                timestamp: value.get("timestamp").and_then(Value::as_i64),
                server_time: value.get("server_time").and_then(Value::as_i64),
            }),
            _ => None,
        };
        parsed.unwrap_or(Self::Other(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_message_kind_and_keeps_unknown_ones() {
        let partial = ClientEvent::parse(
            r#"{"type":"partial","text":"Hello how are","confidence":0.82,"timestamp_ms":1500,
            "words":[{"word":"Hello","start":0.0,"end":0.3,"confidence":0.95}]}"#,
        );
        let ClientEvent::Partial(p) = partial else {
            panic!("{partial:?}")
        };
        assert_eq!(
            (p.text.as_str(), p.timestamp_ms, p.words[0].end),
            ("Hello how are", Some(1500.0), 0.3)
        );

        let fin = ClientEvent::parse(
            r#"{"type":"final","text":"Hi.","is_end_of_utterance":true,"duration_ms":2100}"#,
        );
        assert!(
            matches!(fin, ClientEvent::Final(Final { duration_ms: Some(d), .. }) if d == 2100.0)
        );

        let error = ClientEvent::parse(
            r#"{"type":"error","code":"BUFFER_OVERFLOW","message":"slow down","recoverable":true}"#,
        );
        assert_eq!(
            error,
            ClientEvent::Error(ServerError {
                code: "BUFFER_OVERFLOW".into(),
                message: "slow down".into(),
                recoverable: true
            })
        );

        let pong = ClientEvent::parse(r#"{"type":"pong","timestamp":1,"server_time":6}"#);
        assert_eq!(
            pong,
            ClientEvent::Pong {
                timestamp: Some(1),
                server_time: Some(6)
            }
        );

        for raw in [
            r#"{"type":"status","backend":"riva"}"#,
            r#"{"type":"partial"}"#,
            r#"{"no":"type"}"#,
        ] {
            assert_eq!(
                ClientEvent::parse(raw),
                ClientEvent::Other(serde_json::from_str(raw).unwrap()),
                "{raw}"
            );
        }
        assert_eq!(
            ClientEvent::parse("not json"),
            ClientEvent::Other(Value::String("not json".into()))
        );
    }
}
