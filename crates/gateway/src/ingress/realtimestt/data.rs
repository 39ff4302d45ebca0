//! RealtimeSTT's data connection (`/realtimestt/data`) as a [`Dialect`]: one connection,
//! one session.
//!
//! - Each binary message is a 4-byte little-endian length, that many bytes of JSON
//!   metadata (`sampleRate`; other keys are ignored), then PCM16LE mono at that rate. The
//!   first message starts the session at its rate (with the pair's `language` and
//!   `post_speech_silence_duration`, see [`super::control`]); a later message at another
//!   rate is refused (that chunk only). A chunk longer than `session.max_frame` is split.
//! - Results, as the server broadcasts them: `{"type":"realtime","text":…}` for each
//!   partial, `{"type":"fullSentence","text":…}` for each final, `recording_start` before
//!   an utterance's first partial and `recording_stop` before its sentence.
//! - Errors: `{"status":"error","message":…,"code":…}`, the server's answer shape (its
//!   client prints it as an unknown data message); the gateway's notices are
//!   `gateway_status` messages.
//! - The contract has no end message: the client's close ends the session
//!   (`call_method shutdown` on the control connection flushes and closes instead).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::{DataLink, PairKey, Pairs, SIDE_QUEUE, Slot, error_value};
use crate::ingress::dialect::{Contract, Decoded, Dialect, Upgrade};
use crate::ingress::{AppState, gate, socket};
use crate::security::tls::PeerAddr;
use crate::session::audio::max_frame_bytes;
use crate::session::{
    CloseCause, Command, ErrorKind, Event, SAMPLE_RATES, SessionError, StartConfig, Transcript,
};

/// The data endpoint: the gate, then a session whose codec joins the client's pair.
pub async fn endpoint(
    Extension(pairs): Extension<Arc<Pairs>>,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = gate::client_ip(&state.config, &headers, peer);
    let allow_query = state.config.auth.query_token;
    socket::upgrade_with(state, peer, &headers, query.as_deref(), ws, |request| {
        let slot = pairs.join(PairKey::of(request, ip, allow_query));
        RealtimeStt::new(request, Some(slot))
    })
}

/// One data connection's codec.
#[derive(Debug)]
pub struct RealtimeStt {
    max_frame: Duration,
    /// `?model=`: the route (the gateway's addition; `default` when absent).
    model: Option<String>,
    slot: Option<Arc<Slot>>,
    link: Arc<DataLink>,
    /// The control connections' commands, until the socket loop takes them.
    side: Mutex<Option<tokio::sync::mpsc::Receiver<Command>>>,
    /// The rate of the first chunk, once it came (the session's rate).
    rate: Mutex<Option<u32>>,
}

impl Drop for RealtimeStt {
    fn drop(&mut self) {
        if let Some(slot) = &self.slot {
            slot.detach(self.link.id);
        }
    }
}

fn invalid(kind: ErrorKind, message: impl Into<String>) -> SessionError {
    SessionError::new(kind, message)
}

/// The metadata's `sampleRate` and the PCM of one data message.
fn unframe(msg: &Bytes) -> Result<(u32, Bytes), SessionError> {
    const SHAPE: &str = "a data message is a 4-byte little-endian length, that many bytes \
                         of JSON metadata with `sampleRate`, then PCM16LE mono";
    let Some(head) = msg.get(..4) else {
        return Err(invalid(
            ErrorKind::InvalidRequest,
            format!("{SHAPE}: this one has {} bytes", msg.len()),
        ));
    };
    let n = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let Some(meta) = msg.get(4..4usize.saturating_add(n)) else {
        return Err(invalid(
            ErrorKind::InvalidRequest,
            format!(
                "{SHAPE}: the length says {n} bytes of metadata, the message holds {}",
                msg.len() - 4
            ),
        ));
    };
    let Ok(Value::Object(meta)) = serde_json::from_slice::<Value>(meta) else {
        return Err(invalid(
            ErrorKind::InvalidRequest,
            format!("{SHAPE}: the metadata is not a JSON object"),
        ));
    };
    let rate = meta
        .get("sampleRate")
        .and_then(Value::as_f64)
        .filter(|r| r.fract() == 0.0 && SAMPLE_RATES.contains(&(*r as u32)))
        .map(|r| r as u32)
        .ok_or_else(|| {
            invalid(
                ErrorKind::AudioFormat,
                "the metadata's `sampleRate` must be a whole number from 8000 to 48000; \
                 this chunk was not transcribed",
            )
        })?;
    let pcm = msg.slice(4 + n..);
    if !pcm.len().is_multiple_of(2) {
        return Err(invalid(
            ErrorKind::AudioFormat,
            format!(
                "{} bytes of PCM16 is not a whole number of samples; this chunk was not \
                 transcribed",
                pcm.len()
            ),
        ));
    }
    Ok((rate, pcm))
}

impl RealtimeStt {
    fn new(request: &Upgrade<'_>, slot: Option<Arc<Slot>>) -> Result<Self, SessionError> {
        let model = request.query_param("model").filter(|m| !m.is_empty());
        let (tx, rx) = tokio::sync::mpsc::channel(SIDE_QUEUE);
        let link = Arc::new(DataLink::new(tx));
        if let Some(slot) = &slot {
            slot.attach(link.clone());
        }
        Ok(RealtimeStt {
            max_frame: request.config.session.max_frame,
            model,
            slot,
            link,
            side: Mutex::new(Some(rx)),
            rate: Mutex::new(None),
        })
    }

    /// The session's start at `rate`, with the pair's parameters as they are now.
    fn start_config(&self, rate: u32) -> StartConfig {
        let param = |name| self.slot.as_ref().and_then(|s| s.param(name));
        let language = param("language")
            .and_then(|l| l.as_str().map(str::trim).map(str::to_string))
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "auto".into());
        let endpointing_ms = param("post_speech_silence_duration")
            .and_then(|s| s.as_f64())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| (s * 1000.0).clamp(10.0, 10_000.0) as u32);
        StartConfig {
            language,
            sample_rate: rate,
            model: self.model.clone(),
            endpointing_ms,
            interim_results: true,
            ends_by_closing: true,
            ..StartConfig::default()
        }
    }

    fn audio(&self, msg: &Bytes) -> Decoded {
        let (rate, mut pcm) = match unframe(msg) {
            Ok(x) => x,
            Err(e) => return Command::Reject(e).into(),
        };
        let mut out = Vec::new();
        {
            let mut current = self.rate.lock().expect("data rate");
            match *current {
                None => {
                    *current = Some(rate);
                    out.push(Command::Start(self.start_config(rate)));
                }
                Some(r) if r != rate => {
                    return Command::Reject(invalid(
                        ErrorKind::AudioFormat,
                        format!(
                            "sampleRate {rate} differs from this connection's {r} Hz (its \
                             first chunk's); this chunk was not transcribed"
                        ),
                    ))
                    .into();
                }
                Some(_) => {}
            }
        }
        let frame_bytes = max_frame_bytes(rate, self.max_frame).max(2);
        while pcm.len() > frame_bytes {
            out.push(Command::Audio(pcm.split_to(frame_bytes)));
        }
        if !pcm.is_empty() {
            out.push(Command::Audio(pcm));
        }
        Decoded::Many(out.into_iter())
    }

    fn discarding(&self) -> bool {
        self.link.discarding.load(Ordering::Acquire) > 0
    }

    fn on_partial(&self, t: &Transcript) -> Vec<Message> {
        if self.discarding() || t.text.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(2);
        if !self.link.recording.swap(true, Ordering::AcqRel) {
            out.push(text(&json!({"type": "recording_start"})));
        }
        out.push(text(&json!({"type": "realtime", "text": t.text})));
        out
    }

    fn on_final(&self, t: &Transcript) -> Vec<Message> {
        let was_recording = self.link.recording.swap(false, Ordering::AcqRel);
        if self.discarding() || t.text.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(2);
        if was_recording {
            out.push(text(&json!({"type": "recording_stop"})));
        }
        out.push(text(&json!({"type": "fullSentence", "text": t.text})));
        out
    }
}

fn text(value: &Value) -> Message {
    Message::Text(value.to_string().into())
}

impl Contract for RealtimeStt {
    const NAME: &'static str = "realtimestt";

    fn error_body(kind: ErrorKind, message: &str) -> Value {
        error_value(kind, message)
    }
}

impl Dialect for RealtimeStt {
    /// A data connection of its own (no control connection reaches it).
    fn accept(request: &Upgrade<'_>) -> Result<Self, SessionError> {
        Self::new(request, None)
    }

    fn side_channel(&self) -> Option<futures::stream::BoxStream<'static, Command>> {
        let rx = self.side.lock().expect("side channel").take()?;
        Some(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    fn decode(&self, msg: Message) -> Decoded {
        match msg {
            Message::Binary(bytes) => self.audio(&bytes),
            Message::Text(_) => Command::Reject(invalid(
                ErrorKind::InvalidRequest,
                "the data connection takes binary messages (length, metadata, PCM); commands \
                 go to the control connection",
            ))
            .into(),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Decoded::Nothing,
        }
    }

    fn encode(&self, ev: &Event) -> Vec<Message> {
        match ev {
            Event::Partial(t) => self.on_partial(t),
            Event::Final(t) => self.on_final(t),
            Event::Finalized => {
                // An abort's Finalize is done: results count again.
                let _ =
                    self.link
                        .discarding
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
                Vec::new()
            }
            Event::Error(e) => vec![text(&error_value(e.kind, &e.message))],
            Event::Status { state, message } => vec![text(&json!({
                "type": "gateway_status",
                "state": state.label(),
                "message": message,
            }))],
            Event::Reply(t) => vec![Message::Text(t.to_string().into())],
            Event::Pong { .. } | Event::SpeechStarted { .. } | Event::UtteranceEnd { .. } => {
                Vec::new()
            }
            Event::Close(cause) => {
                vec![crate::ingress::v1::close_message(*cause, "end of session")]
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

    fn frame(meta: &str, pcm: &[u8]) -> Bytes {
        let mut m = (meta.len() as u32).to_le_bytes().to_vec();
        m.extend_from_slice(meta.as_bytes());
        m.extend_from_slice(pcm);
        Bytes::from(m)
    }

    #[test]
    fn framing_is_length_metadata_pcm() {
        let (rate, pcm) = unframe(&frame(r#"{"sampleRate":44100,"x":1}"#, &[1, 2, 3, 4])).unwrap();
        assert_eq!((rate, &pcm[..]), (44_100, &[1u8, 2, 3, 4][..]));
        let cases: [(Bytes, ErrorKind); 6] = [
            (Bytes::from_static(&[1, 0]), ErrorKind::InvalidRequest),
            (frame("{}", &[]).slice(..5), ErrorKind::InvalidRequest),
            (frame("[1]", &[]), ErrorKind::InvalidRequest),
            (
                frame(r#"{"sampleRate":"16k"}"#, &[]),
                ErrorKind::AudioFormat,
            ),
            (
                frame(r#"{"sampleRate":96000}"#, &[]),
                ErrorKind::AudioFormat,
            ),
            (
                frame(r#"{"sampleRate":16000}"#, &[1, 2, 3]),
                ErrorKind::AudioFormat,
            ),
        ];
        for (msg, kind) in cases {
            assert_eq!(unframe(&msg).unwrap_err().kind, kind, "{msg:?}");
        }
        // A length past the end.
        let mut lying = frame(r#"{"sampleRate":16000}"#, &[]).to_vec();
        lying[0] = 200;
        assert_eq!(
            unframe(&Bytes::from(lying)).unwrap_err().kind,
            ErrorKind::InvalidRequest
        );
    }
}
