//! A scripted Riva server for tests: the Riva skeleton ([`crate::skeleton::riva`]) on
//! 127.0.0.1:0, its streams answered by the test. Two modes:
//! - `Scripted`: every stream is handed to the test as a [`DoubleStream`], which sees the
//!   config and the audio as it arrives and decides what to answer (any result sequence,
//!   any `Status`, at any point);
//! - `Auto`: answers by itself — a partial per audio chunk and a final every
//!   `final_every_ms` of audio and at half-close — for tests that need many sessions.
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use sgw_proto::grpc::health::v1::health_check_response::ServingStatus;
use sgw_proto::nvidia::riva::asr::{
    SpeechRecognitionAlternative, StreamingRecognitionConfig, StreamingRecognitionResult,
    StreamingRecognizeRequest, StreamingRecognizeResponse, WordInfo,
    riva_speech_recognition_config_response::Config, streaming_recognize_request::StreamingRequest,
};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use crate::skeleton::riva::{self, RivaStreams};
use crate::skeleton::{ResponseStream, Running, ServerOptions};

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Scripted,
    Auto { final_every_ms: u64 },
}

/// What the inbound side of a stream reported.
#[derive(Debug)]
pub enum Inbound {
    Audio(Bytes),
    /// The gateway half-closed the request stream.
    HalfClosed,
    /// The request stream broke (e.g. the gateway cancelled the call).
    Broken(String),
}

/// One stream, as the test sees it.
pub struct DoubleStream {
    pub config: StreamingRecognitionConfig,
    /// The client's end of the TCP connection this stream came on.
    pub peer: Option<SocketAddr>,
    pub inbound: mpsc::UnboundedReceiver<Inbound>,
    pub results: mpsc::Sender<Result<StreamingRecognizeResponse, Status>>,
    /// Resolves when the gateway drops the response side (call cancelled).
    pub cancelled: oneshot::Receiver<()>,
    /// Open the tap: until this is sent `true` (when created with `hold_audio`), the
    /// double does not read the request stream at all, so HTTP/2 flow control pushes back.
    pub reading: watch::Sender<bool>,
}

impl DoubleStream {
    /// Reads inbound audio until at least `bytes` arrived; returns what arrived.
    pub async fn audio_at_least(&mut self, bytes: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < bytes {
            match tokio::time::timeout(Duration::from_secs(10), self.inbound.recv()).await {
                Ok(Some(Inbound::Audio(b))) => got.extend_from_slice(&b),
                other => panic!("expected audio, got {other:?} after {} bytes", got.len()),
            }
        }
        got
    }

    /// Reads inbound until half-close; returns the audio that came before it.
    pub async fn until_half_close(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.inbound.recv()).await {
                Ok(Some(Inbound::Audio(b))) => got.extend_from_slice(&b),
                Ok(Some(Inbound::HalfClosed)) => return got,
                other => panic!("expected audio or half-close, got {other:?}"),
            }
        }
    }

    pub async fn send(&self, r: StreamingRecognitionResult) {
        self.results
            .send(Ok(StreamingRecognizeResponse {
                results: vec![r],
                ..Default::default()
            }))
            .await
            .expect("gateway still listening");
    }

    pub async fn fail(&self, status: Status) {
        let _ = self.results.send(Err(status)).await;
    }
}

pub fn partial(text: &str, audio_processed: f32) -> StreamingRecognitionResult {
    StreamingRecognitionResult {
        alternatives: vec![SpeechRecognitionAlternative {
            transcript: text.into(),
            ..Default::default()
        }],
        is_final: false,
        stability: 0.5,
        audio_processed,
        ..Default::default()
    }
}

/// A final whose words are given as (word, start ms, end ms).
pub fn final_result(
    text: &str,
    words: &[(&str, i32, i32)],
    audio_processed: f32,
) -> StreamingRecognitionResult {
    StreamingRecognitionResult {
        alternatives: vec![SpeechRecognitionAlternative {
            transcript: text.into(),
            confidence: 0.875,
            words: words
                .iter()
                .map(|(w, s, e)| WordInfo {
                    word: (*w).into(),
                    start_time: *s,
                    end_time: *e,
                    confidence: 0.75,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        is_final: true,
        audio_processed,
        ..Default::default()
    }
}

/// Counters kept by the double in every mode.
#[derive(Default)]
pub struct Stats {
    pub streams_opened: AtomicUsize,
    pub streams_finished: AtomicUsize,
    pub streams_cancelled: AtomicUsize,
    pub audio_bytes: AtomicU64,
}

struct Service {
    mode: Mode,
    hold_audio: bool,
    streams: mpsc::UnboundedSender<DoubleStream>,
    stats: Arc<Stats>,
}

pub struct RivaDouble {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    streams: Mutex<mpsc::UnboundedReceiver<DoubleStream>>,
    health: watch::Sender<ServingStatus>,
    server: Running,
}

impl RivaDouble {
    pub async fn start(mode: Mode) -> RivaDouble {
        Self::start_full(mode, false, None, None, None).await
    }

    /// A double listening on `addr` (replicas of one DNS name share a port on several
    /// loopback addresses: 127.0.0.2, 127.0.0.3, …).
    pub async fn start_at(mode: Mode, addr: SocketAddr) -> RivaDouble {
        Self::start_full_at(mode, false, None, None, None, addr).await
    }

    /// `hold_audio`: streams do not read audio until the test opens their tap.
    /// `window`: the HTTP/2 stream window the server advertises (flow-control tests).
    pub async fn start_with(mode: Mode, hold_audio: bool, window: Option<u32>) -> RivaDouble {
        Self::start_full(mode, hold_audio, window, None, None).await
    }

    /// A double that takes at most `streams` concurrent streams per connection (HTTP/2
    /// `MAX_CONCURRENT_STREAMS`, as proxies set it).
    pub async fn start_capped(mode: Mode, streams: u32) -> RivaDouble {
        Self::start_full(mode, false, None, None, Some(streams)).await
    }

    /// A double serving TLS with `tls` (e.g. demanding client certificates).
    pub async fn start_tls(mode: Mode, tls: tonic::transport::ServerTlsConfig) -> RivaDouble {
        Self::start_full(mode, false, None, Some(tls), None).await
    }

    async fn start_full(
        mode: Mode,
        hold_audio: bool,
        window: Option<u32>,
        tls: Option<tonic::transport::ServerTlsConfig>,
        max_streams: Option<u32>,
    ) -> RivaDouble {
        let any = "127.0.0.1:0".parse().expect("literal");
        Self::start_full_at(mode, hold_audio, window, tls, max_streams, any).await
    }

    async fn start_full_at(
        mode: Mode,
        hold_audio: bool,
        window: Option<u32>,
        tls: Option<tonic::transport::ServerTlsConfig>,
        max_streams: Option<u32>,
        addr: SocketAddr,
    ) -> RivaDouble {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let (health_tx, health_rx) = watch::channel(ServingStatus::Serving);
        let svc = Service {
            mode,
            hold_audio,
            streams: tx,
            stats: stats.clone(),
        };
        let options = ServerOptions {
            tls,
            max_concurrent_streams: max_streams,
            stream_window: window,
            connection_window: window,
        };
        let server = Running::spawn_at(addr, move |listener, shutdown| async move {
            riva::serve(listener, svc, health_rx, &options, shutdown).await
        })
        .await;
        RivaDouble {
            addr: server.addr,
            stats,
            streams: Mutex::new(rx),
            health: health_tx,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("riva://{}", self.addr)
    }

    pub fn set_health(&self, s: ServingStatus) {
        let _ = self.health.send(s);
    }

    /// The next stream the gateway opens (scripted mode).
    pub async fn next_stream(&self) -> DoubleStream {
        tokio::time::timeout(Duration::from_secs(10), self.streams.lock().await.recv())
            .await
            .expect("the gateway opened a stream in time")
            .expect("double alive")
    }

    /// Stops serving (closing the listener, and every connection after a second's grace).
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

/// The response side of a stream. On drop it tells the test; if the stream had not run
/// to its end, the gateway cancelled the call.
struct ResultsOut {
    rx: ReceiverStream<Result<StreamingRecognizeResponse, Status>>,
    done: bool,
    signal: Option<oneshot::Sender<()>>,
    stats: Arc<Stats>,
}

impl Stream for ResultsOut {
    type Item = Result<StreamingRecognizeResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let p = Pin::new(&mut self.rx).poll_next(cx);
        if let std::task::Poll::Ready(None) = p {
            self.done = true;
        }
        p
    }
}

impl Drop for ResultsOut {
    fn drop(&mut self) {
        if let Some(tx) = self.signal.take() {
            let _ = tx.send(());
        }
        if !self.done {
            self.stats.streams_cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tonic::async_trait]
impl RivaStreams for Service {
    async fn stream(
        &self,
        request: Request<Streaming<StreamingRecognizeRequest>>,
    ) -> Result<ResponseStream<StreamingRecognizeResponse>, Status> {
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty stream"))?;
        let config = match first.streaming_request {
            Some(StreamingRequest::StreamingConfig(c)) => c,
            _ => {
                return Err(Status::invalid_argument(
                    "first request must carry the config",
                ));
            }
        };
        self.stats.streams_opened.fetch_add(1, Ordering::Relaxed);
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (tap_tx, mut tap_rx) = watch::channel(!self.hold_audio);
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let _ = tap_rx.wait_for(|open| *open).await;
            loop {
                match inbound.message().await {
                    Ok(Some(req)) => match req.streaming_request {
                        Some(StreamingRequest::AudioContent(a)) => {
                            stats
                                .audio_bytes
                                .fetch_add(a.len() as u64, Ordering::Relaxed);
                            let _ = in_tx.send(Inbound::Audio(a));
                        }
                        _ => {
                            let _ = in_tx
                                .send(Inbound::Broken("a later request carried a config".into()));
                            return;
                        }
                    },
                    Ok(None) => {
                        let _ = in_tx.send(Inbound::HalfClosed);
                        return;
                    }
                    Err(s) => {
                        let _ = in_tx.send(Inbound::Broken(s.to_string()));
                        return;
                    }
                }
            }
        });
        let (res_tx, res_rx) = mpsc::channel(64);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let stream = DoubleStream {
            config,
            peer,
            inbound: in_rx,
            results: res_tx,
            cancelled: cancel_rx,
            reading: tap_tx,
        };
        match self.mode {
            Mode::Scripted => {
                let _ = self.streams.send(stream);
            }
            Mode::Auto { final_every_ms } => {
                tokio::spawn(auto_answer(stream, final_every_ms, self.stats.clone()));
            }
        }
        let out = ResultsOut {
            rx: ReceiverStream::new(res_rx),
            done: false,
            signal: Some(cancel_tx),
            stats: self.stats.clone(),
        };
        Ok(Box::pin(out))
    }

    fn model(&self) -> Result<Config, Status> {
        Ok(Config {
            model_name: "double-asr".into(),
            ..Default::default()
        })
    }
}

/// Auto mode: a partial per chunk, a final every `final_every_ms` of stream audio and at
/// half-close. A final's words tile the audio since the previous final in 100 ms words
/// ("w<k>", k counted from the stream start), the last ending exactly at the audio received.
/// With speaker diarization asked for, the words' speakers take turns every second.
async fn auto_answer(mut s: DoubleStream, final_every_ms: u64, stats: Arc<Stats>) {
    let rate = s
        .config
        .config
        .as_ref()
        .map_or(16_000, |c| c.sample_rate_hertz.max(1)) as u64;
    let diarize = s
        .config
        .config
        .as_ref()
        .and_then(|c| c.diarization_config.as_ref())
        .is_some_and(|d| d.enable_speaker_diarization);
    let mut samples = 0u64;
    let mut last_final_ms = 0u64;
    let send_final = |from_ms: u64, to_ms: u64| {
        let words: Vec<(String, i32, i32)> = (from_ms / 100..to_ms.div_ceil(100))
            .map(|k| {
                (
                    format!("w{k}"),
                    (k * 100) as i32,
                    ((k * 100 + 100).min(to_ms)) as i32,
                )
            })
            .collect();
        let text = words
            .iter()
            .map(|w| w.0.clone())
            .collect::<Vec<_>>()
            .join(" ");
        let refs: Vec<(&str, i32, i32)> =
            words.iter().map(|(w, a, b)| (w.as_str(), *a, *b)).collect();
        let mut result = final_result(&text, &refs, to_ms as f32 / 1000.0);
        // With diarization asked for, speakers 1 and 2 take turns every second.
        if diarize {
            for w in &mut result.alternatives[0].words {
                w.speaker_tag = (w.start_time / 1000) % 2 + 1;
            }
        }
        result
    };
    loop {
        match s.inbound.recv().await {
            Some(Inbound::Audio(a)) => {
                samples += a.len() as u64 / 2;
                let ms = samples * 1000 / rate;
                let result = if ms - last_final_ms >= final_every_ms {
                    let f = send_final(last_final_ms, ms);
                    last_final_ms = ms;
                    f
                } else {
                    let words = (ms - last_final_ms) / 100;
                    let text = (0..words.max(1))
                        .map(|k| format!("w{}", last_final_ms / 100 + k))
                        .collect::<Vec<_>>()
                        .join(" ");
                    partial(&text, ms as f32 / 1000.0)
                };
                let response = StreamingRecognizeResponse {
                    results: vec![result],
                    ..Default::default()
                };
                if s.results.send(Ok(response)).await.is_err() {
                    return;
                }
            }
            Some(Inbound::HalfClosed) => {
                let ms = samples * 1000 / rate;
                if ms > last_final_ms {
                    let f = send_final(last_final_ms, ms);
                    let _ = s
                        .results
                        .send(Ok(StreamingRecognizeResponse {
                            results: vec![f],
                            ..Default::default()
                        }))
                        .await;
                }
                stats.streams_finished.fetch_add(1, Ordering::Relaxed);
                return; // dropping the results sender ends the stream OK
            }
            Some(Inbound::Broken(_)) | None => return,
        }
    }
}
