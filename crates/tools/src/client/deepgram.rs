//! A minimal client side of the gateway's Deepgram-compatible live dialect
//! (`GET /v1/listen`, README "Deepgram-compatible API"): the URL with its query, the
//! `CloseStream` message, and the server messages a client acts on. Audio is sent as
//! binary messages of raw PCM16LE (`encoding=linear16`); nothing else is needed.

use serde::Deserialize;

/// The text message that flushes the session; the gateway answers with the last finals,
/// `Metadata`, and the close (1000).
pub const CLOSE_STREAM: &str = r#"{"type":"CloseStream"}"#;

/// The live URL for a gateway at `base` (`ws://host:port`): route `model`, linear16 audio
/// at `sample_rate`, interim results on, punctuation off.
pub fn live_url(base: &str, model: &str, sample_rate: u32) -> String {
    format!(
        "{base}/v1/listen?model={model}&encoding=linear16&sample_rate={sample_rate}\
         &interim_results=true&punctuate=false"
    )
}

/// Server → client, as far as a client reads it. Types the gateway may add are `Other`
/// (Deepgram's SDKs skip types they do not know too).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum ServerMessage {
    Results(Results),
    /// The last message before the close.
    Metadata {},
    /// The gateway's own notices (`failover`, `audio_gap`, lag).
    GatewayStatus {
        state: String,
    },
    /// A refused message or frame, or a fatal error (then the close is not 1000).
    Error {
        code: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Results {
    pub is_final: bool,
    pub channel: Channel,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Channel {
    pub alternatives: Vec<Alternative>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Alternative {
    pub transcript: String,
}

impl Results {
    /// `channel.alternatives[0].transcript` (empty if there is none).
    pub fn transcript(&self) -> &str {
        self.channel
            .alternatives
            .first()
            .map_or("", |a| a.transcript.as_str())
    }
}

impl ServerMessage {
    /// Reads one text frame; `None` if it is not a JSON object with a known shape.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_parse() {
        let r = ServerMessage::parse(
            r#"{"type":"Results","is_final":true,"start":0.0,"channel":{"alternatives":
               [{"transcript":"w1 w2","confidence":1.0,"words":[]}]}}"#,
        );
        let Some(ServerMessage::Results(r)) = r else {
            panic!("{r:?}")
        };
        assert!(r.is_final);
        assert_eq!(r.transcript(), "w1 w2");
        assert_eq!(
            ServerMessage::parse(r#"{"type":"GatewayStatus","state":"failover","message":"m"}"#),
            Some(ServerMessage::GatewayStatus {
                state: "failover".into()
            })
        );
        assert_eq!(
            ServerMessage::parse(r#"{"type":"Metadata","request_id":"x","duration":1.0}"#),
            Some(ServerMessage::Metadata {})
        );
        assert_eq!(
            ServerMessage::parse(r#"{"type":"Error","code":"INTERNAL_ERROR","description":"d"}"#),
            Some(ServerMessage::Error {
                code: "INTERNAL_ERROR".into()
            })
        );
        assert_eq!(
            ServerMessage::parse(r#"{"type":"UtteranceEnd"}"#),
            Some(ServerMessage::Other)
        );
        assert_eq!(ServerMessage::parse("not json"), None);
    }
}
