//! A minimal client side of the gateway's Deepgram-compatible live dialect
//! (`GET /v1/listen`, README "Deepgram-compatible API"): the URL with its query, the
//! `CloseStream` message, and the server messages a client acts on. Audio is sent as
//! binary messages of raw PCM16LE (`encoding=linear16`); nothing else is needed.
//! [`super::dialect`] reads these messages as their v1 counterparts.

use serde::Deserialize;

/// The text message that flushes the session; the gateway answers with the last finals,
/// `Metadata`, and the close (1000).
pub const CLOSE_STREAM: &str = r#"{"type":"CloseStream"}"#;

/// The live endpoint `endpoint` (`ws://host:port/v1/listen`) with `params` as its query,
/// percent-encoded.
pub fn live_url(endpoint: &str, params: &[(&str, String)]) -> String {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    format!("{endpoint}{sep}{}", query.join("&"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
        #[serde(default)]
        message: String,
    },
    /// A refused message or frame, or a fatal error (then the close is not 1000). `code`
    /// is the gateway's v1 error code.
    Error {
        code: String,
        #[serde(default)]
        description: String,
    },
    #[serde(other)]
    Other,
}

/// An interim (`is_final: false`) or final result. `start` and `duration` are seconds of
/// session audio: an interim accounts for the audio up to `start + duration`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Results {
    pub is_final: bool,
    #[serde(default)]
    pub speech_final: bool,
    pub start: f64,
    pub duration: f64,
    pub channel: Channel,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Channel {
    pub alternatives: Vec<Alternative>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Alternative {
    pub transcript: String,
    #[serde(default)]
    pub confidence: f32,
    #[serde(default)]
    pub words: Vec<ResultWord>,
}

/// A word: `word` lower case without punctuation, `punctuated_word` as the back end
/// spelled it; times in seconds of session audio.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResultWord {
    pub word: String,
    #[serde(default)]
    pub punctuated_word: Option<String>,
    pub start: f64,
    pub end: f64,
    #[serde(default)]
    pub confidence: f32,
}

impl Results {
    /// `channel.alternatives[0]`, if there is one.
    pub fn best(&self) -> Option<&Alternative> {
        self.channel.alternatives.first()
    }

    /// `channel.alternatives[0].transcript` (empty if there is none).
    pub fn transcript(&self) -> &str {
        self.best().map_or("", |a| a.transcript.as_str())
    }

    /// Seconds of session audio the result accounts for: `start + duration`.
    pub fn audio_end(&self) -> f64 {
        self.start + self.duration
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
            r#"{"type":"Results","is_final":true,"speech_final":true,"start":0.5,"duration":1.25,
               "channel":{"alternatives":[{"transcript":"W1 w2","confidence":0.5,"words":[
               {"word":"w1","punctuated_word":"W1","start":0.5,"end":0.9,"confidence":1.0},
               {"word":"w2","start":1.0,"end":1.75,"confidence":1.0}]}]}}"#,
        );
        let Some(ServerMessage::Results(r)) = r else {
            panic!("{r:?}")
        };
        assert!(r.is_final && r.speech_final);
        assert_eq!(r.transcript(), "W1 w2");
        assert_eq!(r.audio_end(), 1.75);
        let words = &r.best().unwrap().words;
        assert_eq!(words[0].punctuated_word.as_deref(), Some("W1"));
        assert_eq!((words[1].word.as_str(), words[1].end), ("w2", 1.75));
        assert_eq!(
            ServerMessage::parse(r#"{"type":"GatewayStatus","state":"failover","message":"m"}"#),
            Some(ServerMessage::GatewayStatus {
                state: "failover".into(),
                message: "m".into()
            })
        );
        assert_eq!(
            ServerMessage::parse(r#"{"type":"Metadata","request_id":"x","duration":1.0}"#),
            Some(ServerMessage::Metadata {})
        );
        assert_eq!(
            ServerMessage::parse(r#"{"type":"Error","code":"INTERNAL_ERROR","description":"d"}"#),
            Some(ServerMessage::Error {
                code: "INTERNAL_ERROR".into(),
                description: "d".into()
            })
        );
        assert_eq!(
            ServerMessage::parse(r#"{"type":"UtteranceEnd"}"#),
            Some(ServerMessage::Other)
        );
        assert_eq!(ServerMessage::parse("not json"), None);
    }

    #[test]
    fn the_query_is_percent_encoded() {
        assert_eq!(
            live_url(
                "ws://h:1/v1/listen",
                &[("model", "default".into()), ("language", "en US&x".into())]
            ),
            "ws://h:1/v1/listen?model=default&language=en%20US%26x"
        );
        assert_eq!(
            live_url("ws://h:1/v1/listen?a=b", &[("c", "d".into())]),
            "ws://h:1/v1/listen?a=b&c=d"
        );
    }
}
