//! The `sgw transcribe` client: streams a WAV file to a gateway over client
//! contract v1 (`/v1/audio/stream`), the Deepgram-compatible dialect (`/v1/listen`) or
//! OpenAI's realtime one (`/v1/realtime`; [`TranscribeOptions::dialect`]: only the wire
//! differs, see [`super::dialect`]), hands
//! every server message to the caller as it arrives (as v1's events), and measures
//! latency from the client's side of the wire the way DESIGN.md ("Latency, as measured by
//! clients") defines it.
//!
//! The session runs as one `select!` loop that both sends paced frames and reads server
//! messages, so no state is shared between tasks. Everything needed for latency (the
//! send instant of each frame and of `end`, the arrival instant of each message) is
//! logged during the run and turned into numbers afterwards by pure functions
//! ([`super::latency`]), which keeps the arithmetic testable without a network.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::dialect::{Ask, Dialect};
pub use super::events::{ClientEvent, Final, Partial, ServerError, Word};
use super::latency::{self, Arrival, FrameRecord, SessionLog};
pub use super::latency::{
    LatencySamples, LatencyStats, LatencySummary, speech_frames, speech_onset_frame,
};
pub use super::render::{LiveLine, render_live, render_report};
use super::wav::Wav;

/// How long the client waits, after sending `end` (and after each later message), for
/// the server to answer or close before giving up.
pub const END_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    /// `ws://HOST:PORT/v1/audio/stream` or `wss://…` (for Deepgram, the same gateway's
    /// `/v1/listen` is used: [`Dialect::endpoint`]).
    pub url: String,
    /// The contract spoken (v1 by default).
    pub dialect: Dialect,
    /// For `wss://`: a CA file trusted besides the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// Pacing: 1.0 = real time, 2.0 = twice as fast, 0 = as fast as the socket allows.
    pub speed: f64,
    /// Audio per binary frame; the contract allows 20–500 ms and recommends 100.
    pub frame_ms: u32,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    pub language: Option<String>,
    /// A route name on the gateway.
    pub model: Option<String>,
    /// Word times make final latency exact (see [`LatencySummary`]); without them the
    /// client falls back to coarser references.
    pub word_timestamps: bool,
    pub interim_results: bool,
}

impl TranscribeOptions {
    /// Real-time pacing, 100 ms frames, word timestamps and interim results on.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            dialect: Dialect::V1,
            ca: None,
            speed: 1.0,
            frame_ms: 100,
            token: None,
            language: None,
            model: None,
            word_timestamps: true,
            interim_results: true,
        }
    }
}

/// A final as received, with when it came and how late it was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinalResult {
    pub text: String,
    pub confidence: f32,
    pub duration_ms: u64,
    pub words: Vec<Word<'static>>,
    /// Milliseconds from the first frame's send to this final's arrival.
    pub arrival_ms: f64,
    /// Final latency as defined in [`LatencySummary`]; `None` when no reference exists.
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TranscribeReport {
    pub finals: Vec<FinalResult>,
    /// Number of partial messages received.
    pub partials: usize,
    pub errors: Vec<ServerError<'static>>,
    /// The server's close code; `None` if the connection ended without a close frame.
    /// A realtime session, which the server never closes, has 1000 when the client closed
    /// it once done ([`super::dialect::Reader::done`]).
    pub close_code: Option<u16>,
    pub latency: LatencySummary,
    /// Every latency sample, so a harness can pool several files before taking percentiles.
    pub samples: LatencySamples,
    pub audio_seconds: f64,
    /// From the first frame's send to the end of the connection (connect time excluded).
    pub wall_seconds: f64,
}

/// Streams `wav` to the gateway and reports what came back.
///
/// `on_event` sees every server text message as it arrives (for live display). Returns
/// an error when the connection cannot be made, breaks without a close frame after a
/// send failed, or when the server neither answers nor closes within [`END_TIMEOUT`]
/// after `end`. Server `error` messages and close codes are results, not errors: they
/// are in the report.
pub async fn transcribe(
    wav: &Wav,
    opts: &TranscribeOptions,
    on_event: impl FnMut(&ClientEvent),
) -> anyhow::Result<TranscribeReport> {
    let frame_len = frame_samples(wav.sample_rate, opts.frame_ms)?;
    let log = run_session(wav, opts, END_TIMEOUT, on_event).await?;
    let speech = speech_frames(&wav.samples, frame_len);
    Ok(build_report(wav, &log, &speech))
}

/// Samples per frame; validates what would otherwise divide by zero or never pace.
fn frame_samples(sample_rate: u32, frame_ms: u32) -> anyhow::Result<usize> {
    if sample_rate == 0 {
        bail!("the WAV's sample rate is 0");
    }
    if frame_ms == 0 {
        bail!("frame_ms must be positive");
    }
    Ok(((u64::from(sample_rate) * u64::from(frame_ms) / 1000) as usize).max(1))
}

/// What the session asks for: the WAV's own rate (the gateway resamples), the options'
/// route, language and flags.
fn ask(sample_rate: u32, opts: &TranscribeOptions) -> Ask {
    Ask {
        sample_rate,
        route: opts.model.clone(),
        language: opts.language.clone(),
        interim_results: opts.interim_results,
        word_timestamps: opts.word_timestamps,
        punctuate: true,
    }
}

/// When frame `k` is due: its audio start time divided by the speed, after `t0`. Using
/// absolute deadlines (not sleeps between sends) keeps pacing from drifting.
fn send_deadline(t0: Instant, start_sample: usize, sample_rate: u32, speed: f64) -> Instant {
    if speed <= 0.0 {
        return t0;
    }
    t0 + Duration::from_secs_f64(start_sample as f64 / f64::from(sample_rate) / speed)
}

/// Connects, sends the dialect's opening (v1's `start`), paced frames and its closing
/// (`end` / `CloseStream` / the commit), and logs every send and arrival until the server
/// closes (or, realtime, until the client closes once done).
async fn run_session(
    wav: &Wav,
    opts: &TranscribeOptions,
    end_timeout: Duration,
    mut on_event: impl FnMut(&ClientEvent),
) -> anyhow::Result<SessionLog> {
    if !opts.speed.is_finite() || opts.speed < 0.0 {
        bail!(
            "speed must be a finite number ≥ 0 (0 = as fast as possible), got {}",
            opts.speed
        );
    }
    let frame_len = frame_samples(wav.sample_rate, opts.frame_ms)?;
    let dialect = opts.dialect;
    let ask = ask(wav.sample_rate, opts);
    let url = dialect.url(&opts.url, &ask);
    let ws = super::connect::open(&url, opts.token.as_deref(), opts.ca.as_deref()).await?;
    let (mut sink, mut stream) = ws.split();
    let (mut writer, mut reader) = dialect.session(&ask);
    if let Some(opening) = dialect.opening(&ask) {
        sink.send(Message::text(opening))
            .await
            .context("sending start")?;
    }

    let chunks: Vec<&[i16]> = wav.samples.chunks(frame_len).collect();
    let t0 = Instant::now();
    let mut log = SessionLog {
        t0,
        frames: Vec::with_capacity(chunks.len()),
        end_sent: None,
        arrivals: Vec::new(),
        close_code: None,
        finished: t0,
        positions: dialect.positions(),
    };
    let mut next = 0usize;
    // False once `end` went out or the server closed: nothing more to send.
    let mut sending = true;
    let mut send_error: Option<WsError> = None;
    // Armed by `end` (or the server's close frame), pushed back by every later message.
    let mut idle_deadline: Option<Instant> = None;

    loop {
        // `end` goes out right after the last frame, at that frame's deadline.
        let due_sample = next.min(chunks.len().saturating_sub(1)) * frame_len;
        let send_at = send_deadline(t0, due_sample, wav.sample_rate, opts.speed);
        tokio::select! {
            biased;
            message = stream.next() => match message {
                None => break,
                Some(Ok(Message::Text(text))) => {
                    let event = reader.read(text.as_str());
                    on_event(&event);
                    let at = Instant::now();
                    log.arrivals.push(Arrival { at, event });
                    if idle_deadline.is_some() {
                        idle_deadline = Some(at + end_timeout);
                    }
                    if reader.done() {
                        // Realtime: the client ends the session; the server's answering
                        // close is not awaited.
                        let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                        let _ = sink.send(Message::Close(Some(close))).await;
                        log.close_code = Some(1000);
                        break;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    // 1005 is the code reserved for "closed without a status code".
                    log.close_code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    sending = false;
                    idle_deadline = Some(Instant::now() + end_timeout);
                }
                Some(Ok(_)) => {} // binary, ping, pong: nothing in the contract
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => break,
                // The close frame arrived; a rough TCP ending after it changes nothing.
                Some(Err(_)) if log.close_code.is_some() => break,
                Some(Err(e)) => return Err(e).context("connection to the gateway failed"),
            },
            _ = sleep_until(send_at), if sending => {
                let outcome = if let Some(chunk) = chunks.get(next) {
                    let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
                    sink.send(writer.audio(Bytes::from(bytes))).await.map(|()| {
                        let end_sample = next * frame_len + chunk.len();
                        log.frames.push(FrameRecord {
                            sent: Instant::now(),
                            audio_end_ms: end_sample as f64 * 1000.0 / f64::from(wav.sample_rate),
                        });
                        next += 1;
                    })
                } else {
                    let mut sent = Ok(());
                    for message in writer.closing() {
                        sent = sink.send(message).await;
                        if sent.is_err() {
                            break;
                        }
                    }
                    sent.map(|()| {
                        let at = Instant::now();
                        log.end_sent = Some(at);
                        idle_deadline = Some(at + end_timeout);
                        sending = false;
                    })
                };
                if let Err(e) = outcome {
                    // Usually the server closed on us; its close frame explains why.
                    send_error = Some(e);
                    sending = false;
                }
            },
            _ = sleep_until(idle_deadline.unwrap_or(t0)), if idle_deadline.is_some() => {
                if log.close_code.is_some() {
                    // Closed properly; only the TCP teardown is slow. Nothing is lost.
                    break;
                }
                bail!("the gateway neither answered nor closed within {} s after end", end_timeout.as_secs_f64());
            }
        }
    }
    log.finished = Instant::now();
    if let (Some(e), None) = (send_error, log.close_code) {
        return Err(e).context("sending audio failed and the gateway closed without a close frame");
    }
    Ok(log)
}

/// Turns the session log into the report; pure, so tests can feed it synthetic logs.
fn build_report(wav: &Wav, log: &SessionLog, speech: &[bool]) -> TranscribeReport {
    let (samples, final_latencies) = latency::measure(log, speech);
    let mut finals = Vec::new();
    let mut partials = 0;
    let mut errors = Vec::new();
    let mut final_index = 0;
    for arrival in &log.arrivals {
        match &arrival.event {
            ClientEvent::Partial(_) => partials += 1,
            ClientEvent::Final(f) => {
                finals.push(FinalResult {
                    text: f.text.to_string(),
                    confidence: f.confidence,
                    duration_ms: f.duration_ms,
                    words: f.words.clone().unwrap_or_default(),
                    arrival_ms: ms_between(log.t0, arrival.at),
                    latency_ms: final_latencies.get(final_index).copied().flatten(),
                });
                final_index += 1;
            }
            ClientEvent::Error(e) => errors.push(e.clone()),
            ClientEvent::Pong(_)
            | ClientEvent::Status(_)
            | ClientEvent::Metadata
            | ClientEvent::SpeechEnd { .. }
            | ClientEvent::Other(_) => {}
        }
    }
    TranscribeReport {
        finals,
        partials,
        errors,
        close_code: log.close_code,
        latency: LatencySummary::from_samples(&samples),
        samples,
        audio_seconds: wav.duration_seconds(),
        wall_seconds: log.finished.saturating_duration_since(log.t0).as_secs_f64(),
    }
}

fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::events::{ServerMessage, Status};
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    /// How the scripted test server behaves.
    #[derive(Clone, Copy, PartialEq)]
    enum Script {
        /// A partial per frame (timestamp = audio received), a `status` once, and on
        /// `end` a final with word times, then close 1000.
        Echo,
        /// On `start`: a fatal error, then close 1008.
        RejectAuth,
        /// Reads everything and never answers or closes.
        Silent,
    }

    /// What the server saw, for assertions.
    #[derive(Debug, Default)]
    struct Seen {
        authorization: Option<String>,
        start: Option<Value>,
        frames: usize,
        samples: usize,
        got_end: bool,
    }

    /// Serves one connection on 127.0.0.1:0; returns its URL and what it saw.
    // The handshake callback's error type is tungstenite's, large by its design.
    #[allow(clippy::result_large_err)]
    async fn serve(script: Script) -> (String, tokio::task::JoinHandle<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v1/audio/stream", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut seen = Seen::default();
            let auth = Arc::new(Mutex::new(None));
            let auth_in = auth.clone();
            let mut ws =
                tokio_tungstenite::accept_hdr_async(tcp, move |req: &Request, resp: Response| {
                    *auth_in.lock().unwrap() = req
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    Ok(resp)
                })
                .await
                .unwrap();
            seen.authorization = auth.lock().unwrap().take();
            let mut rate = 16_000.0;
            while let Some(Ok(message)) = ws.next().await {
                match message {
                    Message::Text(text) => {
                        let value: Value = serde_json::from_str(text.as_str()).unwrap();
                        match value["type"].as_str().unwrap() {
                            "start" => {
                                rate = value["config"]["sample_rate"].as_f64().unwrap_or(16_000.0);
                                seen.start = Some(value);
                                if script == Script::RejectAuth {
                                    let error = json!({"type":"error","code":"AUTHENTICATION_FAILED","message":"bad token","recoverable":false});
                                    ws.send(Message::text(error.to_string())).await.unwrap();
                                    ws.close(Some(CloseFrame {
                                        code: CloseCode::Policy,
                                        reason: "auth".into(),
                                    }))
                                    .await
                                    .unwrap();
                                }
                            }
                            "end" => {
                                seen.got_end = true;
                                if script == Script::Echo {
                                    let end_s = seen.samples as f64 / rate;
                                    let word = |w: &'static str, start, end| Word {
                                        word: w.into(),
                                        start,
                                        end,
                                        confidence: 0.9,
                                    };
                                    let fin = ServerMessage::Final(Final {
                                        text: "hello world".into(),
                                        confidence: 0.9,
                                        is_end_of_utterance: true,
                                        timestamp_ms: (end_s * 1000.0) as u64,
                                        duration_ms: (end_s * 1000.0) as u64,
                                        words: Some(vec![
                                            word("hello", 0.1, 0.4),
                                            word("world", 0.5, end_s - 0.05),
                                        ]),
                                    });
                                    let text = serde_json::to_string(&fin).unwrap();
                                    ws.send(Message::text(text)).await.unwrap();
                                    ws.close(Some(CloseFrame {
                                        code: CloseCode::Normal,
                                        reason: "".into(),
                                    }))
                                    .await
                                    .unwrap();
                                }
                            }
                            other => panic!("unexpected message type {other}"),
                        }
                    }
                    Message::Binary(bytes) => {
                        seen.frames += 1;
                        seen.samples += bytes.len() / 2;
                        if script == Script::Echo {
                            let ts = (seen.samples as f64 * 1000.0 / rate).round();
                            let text = if seen.frames < 3 {
                                String::new()
                            } else {
                                format!("w{}", seen.frames)
                            };
                            let partial = ServerMessage::Partial(Partial {
                                text: text.into(),
                                confidence: 0.5,
                                timestamp_ms: ts as u64,
                                words: None,
                            });
                            let partial = serde_json::to_string(&partial).unwrap();
                            ws.send(Message::text(partial)).await.unwrap();
                            if seen.frames == 1 {
                                let status = ServerMessage::Status(Status {
                                    state: "failover".into(),
                                    message: "m".into(),
                                });
                                let status = serde_json::to_string(&status).unwrap();
                                ws.send(Message::text(status)).await.unwrap();
                            }
                        }
                    }
                    _ => {}
                }
            }
            seen
        });
        (url, task)
    }

    /// `seconds` of audio: 0.3 s of silence, then a loud tone.
    fn test_wav(rate: u32, seconds: f64) -> Wav {
        let n = (f64::from(rate) * seconds) as usize;
        let onset = (f64::from(rate) * 0.3) as usize;
        let samples = (0..n)
            .map(|i| {
                if i < onset {
                    0
                } else {
                    (8000.0 * (i as f64 * 0.3).sin()) as i16
                }
            })
            .collect();
        Wav {
            sample_rate: rate,
            samples,
        }
    }

    fn fast(url: &str) -> TranscribeOptions {
        TranscribeOptions {
            speed: 0.0,
            ..TranscribeOptions::new(url)
        }
    }

    #[tokio::test]
    async fn streams_a_file_and_reports_what_came_back() {
        let (url, server) = serve(Script::Echo).await;
        let opts = TranscribeOptions {
            token: Some("secret".into()),
            language: Some("en".into()),
            model: Some("fast".into()),
            ..fast(&url)
        };
        let wav = test_wav(16_000, 1.05);
        let mut events = Vec::new();
        let report = transcribe(&wav, &opts, |e| events.push(e.clone()))
            .await
            .unwrap();
        let seen = server.await.unwrap();

        assert_eq!(seen.authorization.as_deref(), Some("Bearer secret"));
        let start = seen.start.unwrap();
        assert_eq!(
            start["config"],
            json!({"sample_rate":16000,"encoding":"pcm_s16le","word_timestamps":true,
            "interim_results":true,"punctuate":true,"language":"en","model":"fast"})
        );
        assert_eq!(
            (seen.frames, seen.samples, seen.got_end),
            (11, 16_800, true)
        );

        assert_eq!(report.partials, 11);
        assert_eq!(report.close_code, Some(1000));
        assert!(report.errors.is_empty());
        assert_eq!(report.finals.len(), 1);
        assert_eq!(report.finals[0].text, "hello world");
        assert_eq!(report.finals[0].words.len(), 2);
        assert!(report.finals[0].latency_ms.is_some());
        assert_eq!(report.latency.partial.count, 11);
        assert_eq!(report.latency.first_partial.count, 1);
        assert_eq!(report.latency.final_.count, 1);
        assert!((report.audio_seconds - 1.05).abs() < 1e-9);
        // 11 partials, one status, one final — all handed to the callback, in order.
        assert_eq!(events.len(), 13);
        assert!(matches!(&events[1], ClientEvent::Status(_)));
        assert!(matches!(events.last(), Some(ClientEvent::Final(_))));
        let table = render_report(&report);
        assert!(
            table.contains("first partial") && table.contains("close code 1000"),
            "{table}"
        );
    }

    #[tokio::test]
    async fn sends_the_files_own_rate_in_frames_of_frame_ms() {
        let (url, server) = serve(Script::Echo).await;
        let opts = TranscribeOptions {
            frame_ms: 20,
            word_timestamps: false,
            interim_results: false,
            ..fast(&url)
        };
        let wav = test_wav(44_100, 0.5);
        let report = transcribe(&wav, &opts, |_| {}).await.unwrap();
        let seen = server.await.unwrap();
        let start = seen.start.unwrap();
        assert_eq!(start["config"]["sample_rate"], 44_100);
        assert_eq!(start["config"]["interim_results"], false);
        assert!(start["config"].get("language").is_none());
        // 882 samples per 20 ms frame: 22 050 samples make 25 frames.
        assert_eq!((seen.frames, seen.samples), (25, 22_050));
        assert_eq!(report.partials, 25);
    }

    #[tokio::test]
    async fn paces_frames_on_absolute_deadlines() {
        let (url, server) = serve(Script::Echo).await;
        let opts = TranscribeOptions {
            speed: 4.0,
            ..TranscribeOptions::new(&url)
        };
        let wav = test_wav(16_000, 1.0);
        let log = run_session(&wav, &opts, END_TIMEOUT, |_| {}).await.unwrap();
        server.await.unwrap();
        assert_eq!(log.frames.len(), 10);
        // Frame k holds audio from k·100 ms; at 4× it may not leave before k·25 ms.
        for (k, frame) in log.frames.iter().enumerate() {
            let earliest = log.t0 + Duration::from_millis(25 * k as u64);
            assert!(frame.sent >= earliest, "frame {k} sent early");
            assert!((frame.audio_end_ms - 100.0 * (k + 1) as f64).abs() < 1e-9);
        }
        let end = log.end_sent.unwrap();
        assert!(end >= log.frames[9].sent);
    }

    #[tokio::test]
    async fn a_rejected_session_is_a_report_not_an_error() {
        let (url, server) = serve(Script::RejectAuth).await;
        let wav = test_wav(16_000, 1.0);
        let report = transcribe(&wav, &TranscribeOptions::new(&url), |_| {})
            .await
            .unwrap();
        server.await.unwrap();
        assert_eq!(report.close_code, Some(1008));
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].code, "AUTHENTICATION_FAILED");
        assert!(!report.errors[0].recoverable);
        assert!(report.finals.is_empty());
    }

    #[tokio::test]
    async fn gives_up_when_the_server_goes_quiet_after_end() {
        let (url, server) = serve(Script::Silent).await;
        let wav = test_wav(16_000, 0.3);
        let error = run_session(&wav, &fast(&url), Duration::from_millis(200), |_| {})
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("neither answered nor closed"),
            "{error}"
        );
        let seen = server.await.unwrap();
        assert!(seen.got_end);
    }

    #[tokio::test]
    async fn connection_refused_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v1/audio/stream", listener.local_addr().unwrap());
        drop(listener);
        let error = transcribe(&test_wav(16_000, 0.1), &fast(&url), |_| {})
            .await
            .unwrap_err();
        assert!(error.to_string().contains("cannot connect"), "{error}");
    }

    #[test]
    fn rejects_unusable_options() {
        assert!(frame_samples(16_000, 0).is_err());
        assert!(frame_samples(0, 100).is_err());
        assert_eq!(frame_samples(11_025, 100).unwrap(), 1102);
        assert_eq!(frame_samples(8_000, 1).unwrap(), 8);
    }
}
