//! One load session, on either path: a WebSocket client through the gateway
//! ([`ws_session`], contract v1, the Deepgram dialect or OpenAI realtime: [`Dialect`] says
//! how to open, send, close and read, the loop is the same), or a Riva `StreamingRecognize` client straight
//! to the back end ([`direct_session`]) — the baseline that makes the gateway's own cost
//! visible. All pace the same frames at real time and measure latency the same way:
//!
//! - partial: arrival − send time of the frame that ends where the result says it
//!   accounts (`timestamp_ms` on v1, `start + duration` on Deepgram, `audio_processed`
//!   from Riva; a realtime delta says nothing, so gives none);
//! - final: arrival − send time of the frame holding its last word's end (realtime: where
//!   `speech_stopped` said the item's speech ended) or of `end` / `CloseStream` / the
//!   commit / the half-close when that came first or there is no such reference.
//!
//! The direct client is a test tool and, like `sim`, one of the few places outside
//! `backend/` that use the generated protobuf types (it speaks the back end's protocol).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use super::histogram::LatencyHistogram;
use crate::client::dialect::{Ask, Dialect};
use crate::client::events::ClientEvent;
use sgw_proto::nvidia::riva::AudioEncoding;
use sgw_proto::nvidia::riva::asr::riva_speech_recognition_client::RivaSpeechRecognitionClient;
use sgw_proto::nvidia::riva::asr::streaming_recognize_request::StreamingRequest;
use sgw_proto::nvidia::riva::asr::{
    RecognitionConfig, StreamingRecognitionConfig, StreamingRecognizeRequest,
};

/// Frames kept for matching results to send times: results trail the audio by far less.
const RING: usize = 128;
/// A result may account for audio up to this much past a frame's end and still match it
/// (servers round to the millisecond).
const MATCH_TOLERANCE_MS: f64 = 1.0;
/// How long a session waits for its close after `end`.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// A clip cut into frames, shared by every session that plays it.
#[derive(Debug)]
pub struct Clip {
    pub sample_rate: u32,
    pub frames: Vec<Bytes>,
    /// Audio per frame, in ms (the last frame of a clip may be shorter; `frame_ms` of its
    /// own is kept in `frame_ms_each`).
    pub frame_ms_each: Vec<f64>,
}

/// Counters of one path (gateway or direct), shared by its sessions.
#[derive(Default)]
pub struct PathStats {
    pub started: AtomicU64,
    pub active: AtomicI64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub frames: AtomicU64,
    pub partials: AtomicU64,
    pub finals: AtomicU64,
    pub partial: LatencyHistogram,
    pub final_: LatencyHistogram,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl PathStats {
    pub fn error(&self, code: impl Into<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(code.into()).or_default() += 1;
    }

    /// Counts a live session as active while `session` runs, then as completed or (with
    /// the reason it gives) failed.
    async fn live(&self, session: impl std::future::Future<Output = Result<(), String>>) {
        self.active.fetch_add(1, Ordering::Relaxed);
        let outcome = session.await;
        self.active.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => self.completed.fetch_add(1, Ordering::Relaxed),
            Err(why) => {
                self.error(why);
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// When a session starts and stops sending.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub start_at: Instant,
    pub stop_at: Instant,
    pub frame: Duration,
}

/// Send times of recent frames, by the audio time at their end.
struct Sent {
    ring: VecDeque<(f64, Instant)>,
    audio_ms: f64,
}

impl Sent {
    fn new() -> Self {
        Sent {
            ring: VecDeque::with_capacity(RING),
            audio_ms: 0.0,
        }
    }

    fn push(&mut self, frame_ms: f64, at: Instant) {
        self.audio_ms += frame_ms;
        if self.ring.len() == RING {
            self.ring.pop_front();
        }
        self.ring.push_back((self.audio_ms, at));
    }

    /// The send time of the first frame whose audio reaches `audio_ms`.
    fn reaching(&self, audio_ms: f64) -> Option<Instant> {
        self.ring
            .iter()
            .find(|(end, _)| end + MATCH_TOLERANCE_MS >= audio_ms)
            .map(|(_, at)| *at)
    }
}

/// A session's sending side, the same on both paths: frames of `clip` in a loop, one per
/// tick, with their send times, and when `end` (or the half-close) went out.
struct Pace<'a> {
    clip: &'a Clip,
    next: usize,
    ticks: tokio::time::Interval,
    sent: Sent,
    end_sent: Option<Instant>,
}

impl<'a> Pace<'a> {
    fn new(clip: &'a Clip, frame: Duration) -> Self {
        let mut ticks = tokio::time::interval(frame);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
        Pace {
            clip,
            next: 0,
            ticks,
            sent: Sent::new(),
            end_sent: None,
        }
    }

    /// The index of the next frame and its length in ms.
    fn next_frame(&mut self) -> (usize, f64) {
        let i = self.next % self.clip.frames.len();
        self.next += 1;
        (i, self.clip.frame_ms_each[i])
    }

    /// The next frame and its length in ms.
    fn frame(&mut self) -> (Bytes, f64) {
        let (i, ms) = self.next_frame();
        (self.clip.frames[i].clone(), ms)
    }

    /// What a final's latency counts from: the frame holding its last word's end, or
    /// `end` when that came first or there are no word times.
    fn final_reference(&self, word_end_ms: Option<f64>) -> Option<Instant> {
        let frame = word_end_ms.and_then(|t| self.sent.reaching(t));
        match (frame, self.end_sent) {
            (Some(f), Some(e)) => Some(f.min(e)),
            (f, e) => f.or(e),
        }
    }
}

fn latency(from: Option<Instant>, to: Instant) -> Option<Duration> {
    from.filter(|f| *f <= to).map(|f| to - f)
}

/// One WebSocket session through the gateway: `url` and `opening` are `dialect`'s, and
/// `messages` the clip's frames on its wire ([`Dialect::clip_messages`]).
pub async fn ws_session(
    dialect: Dialect,
    url: &str,
    opening: Option<&str>,
    clip: &Clip,
    messages: &[Message],
    plan: Plan,
    stats: &PathStats,
) {
    tokio::time::sleep_until(plan.start_at).await;
    stats.started.fetch_add(1, Ordering::Relaxed);
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let mut ws = match tokio_tungstenite::connect_async_with_config(url, Some(config), true).await {
        Ok((ws, _)) => ws,
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            stats.error(match e {
                tungstenite::Error::Http(resp) => format!("HTTP {}", resp.status().as_u16()),
                tungstenite::Error::Io(io) => format!("connect: {:?}", io.kind()),
                other => format!("connect: {}", short(&other.to_string())),
            });
            return;
        }
    };
    stats
        .live(drive_ws(
            &mut ws, dialect, opening, clip, messages, plan, stats,
        ))
        .await;
}

fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends the opening (v1's `start`), streams until `plan.stop_at`, sends the closing
/// (`end` / `CloseStream` / the commit), waits for the close (realtime: closes once done).
/// `Err` names why the session failed (an error code, a close code, a timeout).
async fn drive_ws(
    ws: &mut WsStream,
    dialect: Dialect,
    opening: Option<&str>,
    clip: &Clip,
    messages: &[Message],
    plan: Plan,
    stats: &PathStats,
) -> Result<(), String> {
    let (mut writer, mut reader) = dialect.session(&Ask::new(clip.sample_rate));
    if let Some(opening) = opening {
        ws.send(Message::text(opening))
            .await
            .map_err(|e| format!("send: {}", short(&e.to_string())))?;
    }
    let mut pace = Pace::new(clip, plan.frame);
    let mut fatal: Option<String> = None;
    // A result came: the start was accepted.
    let mut served = false;
    // Deepgram's `Metadata` came: its goodbye before a normal close.
    let mut goodbye = !dialect.says_goodbye();
    // Realtime: where the server said the speech of the next final's item stopped (ms).
    let mut speech_end: Option<f64> = None;
    loop {
        let close_by = pace.end_sent.map(|e| e + CLOSE_TIMEOUT);
        tokio::select! {
            message = ws.next() => {
                let at = Instant::now();
                match message {
                    Some(Ok(Message::Text(text))) => {
                        match reader.read(text.as_str()) {
                            ClientEvent::Partial(p) => {
                                served = true;
                                stats.partials.fetch_add(1, Ordering::Relaxed);
                                if dialect.positions()
                                    && let Some(l) = latency(pace.sent.reaching(p.timestamp_ms as f64), at)
                                {
                                    stats.partial.record(l);
                                }
                            }
                            ClientEvent::Final(f) => {
                                served = true;
                                stats.finals.fetch_add(1, Ordering::Relaxed);
                                let word_end = f.words.iter().flatten().map(|w| w.end * 1000.0).reduce(f64::max);
                                let speech = word_end.or(speech_end.take());
                                if let Some(l) = latency(pace.final_reference(speech), at) {
                                    stats.final_.record(l);
                                }
                            }
                            ClientEvent::SpeechEnd { audio_ms } => speech_end = Some(audio_ms as f64),
                            // Counted with the errors, as `status:STATE` (what clients were told).
                            ClientEvent::Status(st) => {
                                stats.error(format!("status:{}", st.state));
                            }
                            ClientEvent::Error(e) => {
                                let code = e.code.into_owned();
                                if code == "RATE_LIMIT_EXCEEDED" && !served {
                                    // The start was refused (route limit, or a route shedding
                                    // load): the session ends here, refused, not streamed.
                                    let _ = ws.close(None).await;
                                    return Err(format!("refused: {code}"));
                                } else if !e.recoverable {
                                    fatal = Some(code);
                                } else {
                                    stats.error(code);
                                }
                            }
                            ClientEvent::Metadata => goodbye = true,
                            ClientEvent::Pong(_) | ClientEvent::Other(_) => {}
                        }
                        if reader.done() {
                            // Realtime: the client ends the session, not waiting for the
                            // server's answering close.
                            let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                            let _ = ws.close(Some(close)).await;
                            return match (fatal, pace.end_sent) {
                                (Some(f), _) => Err(f),
                                (None, Some(_)) => Ok(()),
                                (None, None) => Err("done before the commit".into()),
                            };
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        return match (fatal, code, pace.end_sent) {
                            (Some(f), _, _) => Err(f),
                            (None, 1000, Some(_)) if goodbye => Ok(()),
                            (None, 1000, Some(_)) => Err("close 1000 without Metadata".into()),
                            (None, code, _) => Err(format!("close {code}")),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(fatal.unwrap_or_else(|| format!("read: {}", short(&e.to_string())))),
                    None => return Err(fatal.unwrap_or_else(|| "dropped".into())),
                }
            }
            _ = pace.ticks.tick(), if pace.end_sent.is_none() => {
                let now = Instant::now();
                if now >= plan.stop_at {
                    for message in writer.closing() {
                        ws.send(message).await
                            .map_err(|e| format!("send: {}", short(&e.to_string())))?;
                    }
                    pace.end_sent = Some(Instant::now());
                } else {
                    let (i, ms) = pace.next_frame();
                    ws.send(messages[i].clone()).await
                        .map_err(|e| fatal.clone().unwrap_or_else(|| format!("send: {}", short(&e.to_string()))))?;
                    pace.sent.push(ms, Instant::now());
                    stats.frames.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ = tokio::time::sleep_until(close_by.unwrap_or(plan.stop_at)), if close_by.is_some() => {
                return Err("no close after end".into());
            }
        }
    }
}

/// One Riva stream straight to the back end, over the shared `channel`.
pub async fn direct_session(
    channel: tonic::transport::Channel,
    clip: &Clip,
    plan: Plan,
    stats: &PathStats,
) {
    tokio::time::sleep_until(plan.start_at).await;
    stats.started.fetch_add(1, Ordering::Relaxed);
    stats.live(drive_direct(channel, clip, plan, stats)).await;
}

async fn drive_direct(
    channel: tonic::transport::Channel,
    clip: &Clip,
    plan: Plan,
    stats: &PathStats,
) -> Result<(), String> {
    let (tx, rx) = tokio::sync::mpsc::channel::<StreamingRecognizeRequest>(8);
    let config = StreamingRecognitionConfig {
        config: Some(RecognitionConfig {
            encoding: AudioEncoding::LinearPcm as i32,
            sample_rate_hertz: clip.sample_rate as i32,
            language_code: "en-US".into(),
            max_alternatives: 1,
            audio_channel_count: 1,
            enable_word_time_offsets: true,
            ..Default::default()
        }),
        interim_results: true,
    };
    tx.send(StreamingRecognizeRequest {
        streaming_request: Some(StreamingRequest::StreamingConfig(config)),
        ..Default::default()
    })
    .await
    .map_err(|_| "request channel closed".to_string())?;
    let mut client = RivaSpeechRecognitionClient::new(channel);
    let mut responses = client
        .streaming_recognize(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("grpc {:?}", s.code()))?
        .into_inner();
    let mut tx = Some(tx);
    let mut pace = Pace::new(clip, plan.frame);
    loop {
        let close_by = pace.end_sent.map(|e| e + CLOSE_TIMEOUT);
        tokio::select! {
            response = responses.next() => {
                let at = Instant::now();
                match response {
                    Some(Ok(r)) => {
                        for result in &r.results {
                            let Some(alt) = result.alternatives.first() else { continue };
                            if result.is_final {
                                stats.finals.fetch_add(1, Ordering::Relaxed);
                                let word_end = alt.words.iter().map(|w| w.end_time as f64).reduce(f64::max);
                                if let Some(l) = latency(pace.final_reference(word_end), at) {
                                    stats.final_.record(l);
                                }
                            } else if !alt.transcript.is_empty() {
                                // The gateway forwards exactly these (non-empty partials).
                                stats.partials.fetch_add(1, Ordering::Relaxed);
                                let ms = f64::from(result.audio_processed) * 1000.0;
                                if let Some(l) = latency(pace.sent.reaching(ms), at) {
                                    stats.partial.record(l);
                                }
                            }
                        }
                    }
                    Some(Err(status)) => return Err(format!("grpc {:?}", status.code())),
                    None => return if pace.end_sent.is_some() { Ok(()) } else { Err("stream ended early".into()) },
                }
            }
            _ = pace.ticks.tick(), if pace.end_sent.is_none() => {
                if Instant::now() >= plan.stop_at {
                    tx = None; // the half-close
                    pace.end_sent = Some(Instant::now());
                } else if let Some(tx) = &tx {
                    let (frame, ms) = pace.frame();
                    let request = StreamingRecognizeRequest {
                        streaming_request: Some(StreamingRequest::AudioContent(frame)),
                        ..Default::default()
                    };
                    tx.send(request).await.map_err(|_| "stream closed".to_string())?;
                    pace.sent.push(ms, Instant::now());
                    stats.frames.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ = tokio::time::sleep_until(close_by.unwrap_or(plan.stop_at)), if close_by.is_some() => {
                drop(tx);
                return Err("no end of stream after the half-close".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_match_the_first_frame_reaching_their_audio_time() {
        let t0 = Instant::now();
        let mut sent = Sent::new();
        for k in 0..5u64 {
            sent.push(100.0, t0 + Duration::from_millis(k * 100));
        }
        assert_eq!(sent.reaching(100.0), Some(t0));
        assert_eq!(sent.reaching(250.0), Some(t0 + Duration::from_millis(200)));
        assert_eq!(sent.reaching(300.9), Some(t0 + Duration::from_millis(200)));
        assert_eq!(sent.reaching(301.5), Some(t0 + Duration::from_millis(300)));
        assert_eq!(sent.reaching(600.0), None);
        for k in 5..(RING as u64 + 10) {
            sent.push(100.0, t0 + Duration::from_millis(k * 100));
        }
        assert_eq!(sent.ring.len(), RING);
        assert_eq!(
            sent.reaching(100.0),
            Some(t0 + Duration::from_millis(1000)),
            "old frames are gone"
        );
    }

    #[tokio::test]
    async fn finals_count_from_their_last_word_or_from_end_whichever_came_first() {
        let clip = Clip {
            sample_rate: 16_000,
            frames: vec![Bytes::from_static(&[0; 3200])],
            frame_ms_each: vec![100.0],
        };
        let mut pace = Pace::new(&clip, Duration::from_millis(100));
        let t0 = Instant::now();
        for k in 0..5u64 {
            let (_, ms) = pace.frame();
            pace.sent.push(ms, t0 + Duration::from_millis(k * 100));
        }
        assert_eq!(
            pace.final_reference(Some(250.0)),
            Some(t0 + Duration::from_millis(200))
        );
        assert_eq!(pace.final_reference(None), None);
        pace.end_sent = Some(t0 + Duration::from_millis(150));
        assert_eq!(
            pace.final_reference(Some(450.0)),
            Some(t0 + Duration::from_millis(150))
        );
        assert_eq!(
            pace.final_reference(None),
            Some(t0 + Duration::from_millis(150))
        );
        assert_eq!(pace.final_reference(Some(50.0)), Some(t0));
    }
}
