//! A minimal client side of the gateway's OpenAI realtime transcription WebSocket
//! (`GET /v1/realtime?intent=transcription`, GA event format; README "OpenAI-compatible
//! API"): the opening `session.update`, audio as base64 `input_audio_buffer.append`
//! events of PCM16 at 24 kHz, the closing `input_audio_buffer.commit`, and the server
//! events a client acts on. [`super::dialect`] reads those as their v1 counterparts.
//!
//! The tools hold audio at the WAV's own rate (16 kHz for the golden clips); `audio/pcm`
//! is 24 kHz, so [`Upsampler`] converts on the way out with the gateway's own
//! band-limited resampler (Kaiser-windowed sinc, polyphase: `speech_gateway::session::
//! resample`), which the gateway then runs again from 24 kHz to the back end's rate.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use speech_gateway::session::resample::Resampler;

/// The endpoint's path (the query names the intent: [`QUERY`]).
pub const PATH: &str = "/v1/realtime";
/// The query every connection carries.
pub const QUERY: &str = "intent=transcription";
/// The rate of `audio/pcm`.
pub const RATE: u32 = 24_000;
/// Ends the current item: the back end finalises what it holds and the item's
/// `completed` follows.
pub const COMMIT: &str = r#"{"type":"input_audio_buffer.commit"}"#;

/// The `session.update` that configures a transcription session: `audio/pcm` at 24 kHz,
/// the route as the transcription model (the gateway's default when `None`), server VAD.
pub fn session_update(route: Option<&str>, language: Option<&str>) -> String {
    let mut transcription = json!({});
    if let Some(route) = route {
        transcription["model"] = json!(route);
    }
    if let Some(language) = language {
        transcription["language"] = json!(language);
    }
    json!({
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": RATE},
                "transcription": transcription,
                "turn_detection": {"type": "server_vad"},
            }},
        },
    })
    .to_string()
}

/// An `input_audio_buffer.append` of PCM16LE at 24 kHz.
pub fn append(pcm: &[u8]) -> String {
    let audio = base64::engine::general_purpose::STANDARD.encode(pcm);
    format!(r#"{{"type":"input_audio_buffer.append","audio":"{audio}"}}"#)
}

/// PCM16LE at the source rate in, PCM16LE at 24 kHz out, streaming: the output lags by
/// the filter's look-ahead (27 input samples, 1.7 ms, at 16 kHz), released by
/// `push(…, true)` at the end. A source already at 24 kHz passes untouched.
pub struct Upsampler {
    resampler: Resampler,
    input: Vec<i16>,
    output: Vec<i16>,
}

impl Upsampler {
    pub fn new(from_hz: u32) -> Self {
        Upsampler {
            resampler: Resampler::new(from_hz, RATE),
            input: Vec::new(),
            output: Vec::new(),
        }
    }

    /// Converts `pcm` (a trailing odd byte is dropped); `last` also releases the tail.
    pub fn push(&mut self, pcm: &[u8], last: bool) -> Vec<u8> {
        self.input.clear();
        self.input.extend(
            pcm.chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
        self.output.clear();
        self.resampler.process(&self.input, &mut self.output);
        if last {
            self.resampler.flush(&mut self.output);
        }
        self.output.iter().flat_map(|s| s.to_le_bytes()).collect()
    }
}

/// Server → client, as far as a client reads it; other types (`session.created`,
/// `input_audio_buffer.speech_started`, …) are `Other`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum ServerEvent {
    /// The answer to `session.update`: the session started.
    #[serde(rename = "session.updated")]
    SessionUpdated {},
    /// Where the item's speech ended, in ms of session audio (server VAD items only).
    #[serde(rename = "input_audio_buffer.speech_stopped")]
    SpeechStopped { audio_end_ms: u64 },
    /// New text of the open item's transcript.
    #[serde(rename = "conversation.item.input_audio_transcription.delta")]
    Delta { item_id: String, delta: String },
    /// An item's final transcript.
    #[serde(rename = "conversation.item.input_audio_transcription.completed")]
    Completed { item_id: String, transcript: String },
    #[serde(rename = "error")]
    Error { error: ErrorBody },
    /// The gateway's notices (`failover`, `audio_gap`, lag), which SDKs skip.
    #[serde(rename = "gateway.status")]
    GatewayStatus {
        state: String,
        #[serde(default)]
        message: String,
    },
    #[serde(other)]
    Other,
}

/// OpenAI's error object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub code: Option<String>,
}

impl ServerEvent {
    /// Reads one text frame; `None` if it is not a JSON object with a known shape.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_session_update_asks_for_a_transcription_session_at_24_khz() {
        let v: Value = serde_json::from_str(&session_update(Some("fast"), Some("en"))).unwrap();
        assert_eq!(
            v,
            json!({"type":"session.update","session":{"type":"transcription","audio":{"input":{
                "format":{"type":"audio/pcm","rate":24000},
                "transcription":{"model":"fast","language":"en"},
                "turn_detection":{"type":"server_vad"}}}}})
        );
        let v: Value = serde_json::from_str(&session_update(None, None)).unwrap();
        assert_eq!(v["session"]["audio"]["input"]["transcription"], json!({}));
    }

    #[test]
    fn appends_carry_base64_pcm() {
        let v: Value = serde_json::from_str(&append(&[1, 0, 255, 255])).unwrap();
        assert_eq!(
            v,
            json!({"type":"input_audio_buffer.append","audio":"AQD//w=="})
        );
    }

    #[test]
    fn upsampling_makes_three_samples_of_two_and_keeps_a_tone() {
        // 1 s of a 440 Hz tone at 16 kHz in 100 ms frames.
        let tone: Vec<i16> = (0..16_000)
            .map(|i| (8000.0 * (i as f64 * 440.0 / 16_000.0 * std::f64::consts::TAU).sin()) as i16)
            .collect();
        let bytes: Vec<u8> = tone.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut up = Upsampler::new(16_000);
        let mut out = Vec::new();
        let frames: Vec<&[u8]> = bytes.chunks(3200).collect();
        for (i, f) in frames.iter().enumerate() {
            out.extend(up.push(f, i + 1 == frames.len()));
        }
        let out: Vec<i16> = out
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(out.len(), 24_000);
        // Sample 3k at 24 kHz is sample 2k at 16 kHz; away from the edges they agree.
        for k in (300..5000).step_by(97) {
            let (a, b) = (i32::from(out[3 * k]), i32::from(tone[2 * k]));
            assert!((a - b).abs() <= 40, "{k}: {a} vs {b}");
        }
        // 24 kHz passes untouched.
        let mut same = Upsampler::new(24_000);
        assert_eq!(same.push(&bytes[..6], true), bytes[..6].to_vec());
    }

    #[test]
    fn server_events_parse() {
        assert_eq!(
            ServerEvent::parse(
                r#"{"type":"conversation.item.input_audio_transcription.delta","event_id":"e",
                   "item_id":"item_1","content_index":0,"delta":" world"}"#
            ),
            Some(ServerEvent::Delta {
                item_id: "item_1".into(),
                delta: " world".into()
            })
        );
        assert_eq!(
            ServerEvent::parse(
                r#"{"type":"conversation.item.input_audio_transcription.completed",
                   "item_id":"item_1","content_index":0,"transcript":"Hello world.",
                   "usage":{"type":"duration","seconds":2.0}}"#
            ),
            Some(ServerEvent::Completed {
                item_id: "item_1".into(),
                transcript: "Hello world.".into()
            })
        );
        assert_eq!(
            ServerEvent::parse(
                r#"{"type":"input_audio_buffer.speech_stopped","audio_end_ms":1250,"item_id":"i"}"#
            ),
            Some(ServerEvent::SpeechStopped { audio_end_ms: 1250 })
        );
        assert_eq!(
            ServerEvent::parse(
                r#"{"type":"error","error":{"message":"m","type":"server_error","param":null,
                   "code":"model_unavailable"}}"#
            ),
            Some(ServerEvent::Error {
                error: ErrorBody {
                    message: "m".into(),
                    code: Some("model_unavailable".into())
                }
            })
        );
        assert_eq!(
            ServerEvent::parse(r#"{"type":"session.updated","session":{}}"#),
            Some(ServerEvent::SessionUpdated {})
        );
        assert_eq!(
            ServerEvent::parse(
                r#"{"type":"input_audio_buffer.speech_started","audio_start_ms":1}"#
            ),
            Some(ServerEvent::Other)
        );
        assert_eq!(ServerEvent::parse("not json"), None);
    }
}
