//! Server → client messages of contract v1, for the client tools: the gateway's own wire
//! types ([`speech_gateway::ingress::v1::wire`]), read leniently.
//!
//! The contract lets the gateway add message types, and a client that failed on one would
//! break the day the server grew a feature: anything that is not one of the contract's
//! messages is kept as [`ClientEvent::Other`].

use serde_json::Value;

pub use speech_gateway::ingress::v1::wire::{
    ErrorMessage as ServerError, Final, Partial, Pong, ServerMessage, Status, Word,
};

/// A server message as the tools read it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    Partial(Partial<'static>),
    Final(Final<'static>),
    Error(ServerError<'static>),
    Pong(Pong<'static>),
    Status(Status<'static>),
    /// Deepgram's `Metadata`, the last message before a normal close (v1 has none; see
    /// [`super::dialect`]).
    Metadata,
    /// Where the speech of the utterance the next final closes ended, in ms of session
    /// audio: the OpenAI realtime dialect's `input_audio_buffer.speech_stopped`, whose
    /// finals carry no word times (v1 and Deepgram say it with their finals' words).
    SpeechEnd {
        audio_ms: u64,
    },
    /// Not a message of the contract (an unknown type, fields that do not fit, not JSON),
    /// kept as it came.
    Other(Value),
}

impl ClientEvent {
    /// Parses one text frame; see the type's docs for what becomes [`ClientEvent::Other`].
    pub fn parse(text: &str) -> Self {
        match ServerMessage::parse(text) {
            Some(ServerMessage::Partial(p)) => Self::Partial(p),
            Some(ServerMessage::Final(f)) => Self::Final(f),
            Some(ServerMessage::Error(e)) => Self::Error(e),
            Some(ServerMessage::Pong(p)) => Self::Pong(p),
            Some(ServerMessage::Status(s)) => Self::Status(s),
            None => Self::Other(
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())),
            ),
        }
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
            (p.text.as_ref(), p.timestamp_ms, p.words.unwrap()[0].end),
            ("Hello how are", 1500, 0.3)
        );

        let fin = ClientEvent::parse(
            r#"{"type":"final","text":"Hi.","confidence":0.9,"is_end_of_utterance":true,"timestamp_ms":2100,"duration_ms":2100}"#,
        );
        assert!(matches!(
            fin,
            ClientEvent::Final(Final {
                duration_ms: 2100,
                ..
            })
        ));

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
        assert!(matches!(
            pong,
            ClientEvent::Pong(Pong { server_time: 6, .. })
        ));

        let status = ClientEvent::parse(r#"{"type":"status","state":"failover","message":"m"}"#);
        assert!(matches!(status, ClientEvent::Status(s) if s.state == "failover"));

        for raw in [
            r#"{"type":"shiny","backend":"riva"}"#,
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
