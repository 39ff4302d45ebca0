//! The back-end port: one trait, one adapter per server protocol — [`riva`] and [`triton`]
//! over gRPC ([`grpc`]), [`openai_http`] over HTTP, [`deepgram`] (Deepgram's streaming API)
//! over a WebSocket; [`utterances`] is the gateway-side endpointing of the adapters whose
//! servers decode whole utterances.
//!
//! A back end turns a stream of audio into a stream of domain [`TranscriptEvent`]s. The
//! generated protobuf types and the upstream wire messages never leave this module tree:
//! adapters map them to the domain types below, and every failure to a [`BackendError`]
//! that knows its class.

pub mod deepgram;
pub mod grpc;
pub mod openai_http;
pub mod proto;
pub mod riva;
pub mod scheduler;
pub mod triton;
pub mod utterances;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::config::{BackendProtocol, BackendUrl, Config};
use crate::error::ErrorClass;
use crate::telemetry::metrics::Metrics;

/// PCM16LE mono audio at the back end's sample rate.
pub type AudioStream = BoxStream<'static, Bytes>;

/// What a back end sends back for one open stream.
pub type EventStream = BoxStream<'static, Result<TranscriptEvent, BackendError>>;

/// What the client asked for, in back-end-neutral terms.
#[derive(Debug, Clone, PartialEq)]
pub struct RecognitionParams {
    /// BCP-47 code, or `auto` (passed through; the back end decides what it supports).
    pub language: String,
    /// Rate of the audio on the stream (the back end's rate; the session resamples).
    pub sample_rate_hz: u32,
    pub punctuate: bool,
    pub profanity_filter: bool,
    pub interim_results: bool,
    /// Silence that ends an utterance, when the client asked for a value.
    pub endpointing_ms: Option<u32>,
    /// Free-form key/value pairs forwarded to back ends that take them (Riva's
    /// `custom_configuration`).
    pub custom: Vec<(String, String)>,
    /// Words or short phrases to favour, each with its boost (Riva's speech contexts);
    /// back ends without phrase boosting ignore them.
    pub phrases: Vec<(String, f32)>,
    /// Label words by speaker (Riva's speaker diarization); back ends without it ignore it.
    pub diarize: bool,
}

/// One word with times relative to the start of the back-end stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamWord {
    pub word: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub confidence: f32,
    /// The speaker's label, when diarization is on and the back end gives one.
    pub speaker: Option<u32>,
}

/// One result from the back end, times relative to the start of its stream.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptEvent {
    pub is_final: bool,
    pub text: String,
    pub confidence: f32,
    pub stability: f32,
    /// Audio the back end had consumed when it produced this result, if it says.
    pub audio_processed_ms: Option<u64>,
    pub words: Vec<StreamWord>,
    /// When the adapter received the result (for the relay-overhead histogram).
    pub received_at: Instant,
    /// A sign of life from the adapter itself, not from the server ([`Self::idle`]).
    pub local: bool,
    /// The adapter's news for the client (on a `local` event): see [`Notice`].
    pub notice: Option<Notice>,
}

/// What an adapter tells its session's client besides results (a `status` message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Partial re-decodes are paused: the back end's finals back up ([`scheduler`]).
    InterimPaused,
    /// Partial re-decodes come again.
    InterimResumed,
}

impl TranscriptEvent {
    /// An answer with nothing to say: proof that the stream is alive (stall detection).
    /// It carries no text and is never forwarded to the client.
    pub fn progress(received_at: Instant) -> Self {
        TranscriptEvent {
            is_final: false,
            text: String::new(),
            confidence: 0.0,
            stability: 0.0,
            audio_processed_ms: None,
            words: Vec::new(),
            received_at,
            local: false,
            notice: None,
        }
    }

    /// The adapter is alive while the server has nothing to say (an endpointing adapter
    /// between utterances, or while a request it bounds by its own deadline runs): it
    /// keeps stall detection quiet but proves nothing about the back end —
    /// it neither settles the session's lease as a success nor ends a failure episode, so
    /// a server that fails every request still trips its breaker and runs out of retries.
    pub fn idle(received_at: Instant) -> Self {
        TranscriptEvent {
            local: true,
            ..Self::progress(received_at)
        }
    }

    pub fn is_progress(&self) -> bool {
        !self.is_final && self.text.is_empty()
    }
}

/// The back end's own answer to "can you take sessions now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Up,
    Down(String),
}

/// Why a back end failed. `class` decides retry and failover; `message` is safe to log
/// (never audio or transcript text).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BackendError {
    pub kind: BackendErrorKind,
    pub class: ErrorClass,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// Could not connect, or the connection dropped.
    Unavailable,
    /// A deadline passed (open, health, or the server's own).
    Timeout,
    /// The server refused the request as invalid (bad model, language, config).
    Rejected,
    /// The server answered with something we cannot map.
    Protocol,
    /// The server failed internally or aborted the stream.
    ServerError,
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendErrorKind::Unavailable => "unavailable",
            BackendErrorKind::Timeout => "timeout",
            BackendErrorKind::Rejected => "rejected",
            BackendErrorKind::Protocol => "protocol",
            BackendErrorKind::ServerError => "server_error",
        })
    }
}

impl BackendError {
    pub fn new(kind: BackendErrorKind, class: ErrorClass, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            class,
            message: message.into(),
        }
    }

    /// Another attempt (this back end or the next) may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class == ErrorClass::UpstreamRetryable
    }
}

/// One server protocol.
///
/// An adapter's event stream must yield something (a result, or
/// [`TranscriptEvent::progress`]) within a few seconds of being sent audio while the back
/// end is working: the session treats a silent stream as stalled after
/// `session.stall_timeout` and fails over.
#[async_trait]
pub trait SpeechBackend: Send + Sync {
    /// The URL as configured: the back end's name in logs, metrics and `/status`.
    fn name(&self) -> &str;
    /// Sample rate the back end wants its audio in.
    fn sample_rate_hz(&self) -> u32;
    /// Opens one recognition stream. Dropping the returned stream cancels it upstream;
    /// ending `audio` half-closes it, after which the back end flushes its last results.
    async fn open(
        &self,
        params: RecognitionParams,
        audio: AudioStream,
    ) -> Result<EventStream, BackendError>;
    /// One health probe.
    async fn health(&self) -> Health;
    /// Decodes one whole utterance (`pcm`: PCM16LE at [`Self::sample_rate_hz`]) and
    /// returns its transcript as one final, word times relative to the utterance's start:
    /// two-pass recognition's quality pass. The default opens a stream, sends the audio
    /// in 100 ms chunks, half-closes it and joins the finals; adapters with a
    /// whole-utterance call may do better.
    async fn recognize(
        &self,
        params: RecognitionParams,
        pcm: Bytes,
    ) -> Result<TranscriptEvent, BackendError> {
        recognize_by_stream(self, params, pcm).await
    }
    /// Streams older than this are rotated at the next final (back ends that cap stream
    /// length); `None` keeps streams open for the whole session.
    fn max_stream_age(&self) -> Option<std::time::Duration> {
        None
    }
    /// The back end's decode queue, for back ends that queue requests in the gateway
    /// ([`scheduler`]).
    fn queue(&self) -> Option<scheduler::QueueStatus> {
        None
    }
}

/// [`SpeechBackend::recognize`] over [`SpeechBackend::open`]: one stream fed the audio in
/// 100 ms chunks and half-closed; its finals joined into one.
pub async fn recognize_by_stream<B: SpeechBackend + ?Sized>(
    backend: &B,
    params: RecognitionParams,
    pcm: Bytes,
) -> Result<TranscriptEvent, BackendError> {
    use futures::StreamExt;
    let chunk = (params.sample_rate_hz as usize / 10).max(1) * 2;
    let chunks: Vec<Bytes> = (0..pcm.len())
        .step_by(chunk)
        .map(|i| pcm.slice(i..(i + chunk).min(pcm.len())))
        .collect();
    let mut events = backend
        .open(params, futures::stream::iter(chunks).boxed())
        .await?;
    let mut text: Vec<String> = Vec::new();
    let mut words = Vec::new();
    let mut confidence = 0.0f32;
    let mut finals = 0u32;
    while let Some(ev) = events.next().await {
        let ev = ev?;
        if !ev.is_final || ev.text.trim().is_empty() {
            continue;
        }
        text.push(ev.text.trim().to_string());
        words.extend(ev.words);
        confidence += ev.confidence;
        finals += 1;
    }
    Ok(TranscriptEvent {
        is_final: true,
        text: text.join(" "),
        confidence: if finals > 0 {
            confidence / finals as f32
        } else {
            0.0
        },
        stability: 1.0,
        audio_processed_ms: None,
        words,
        received_at: Instant::now(),
        local: false,
        notice: None,
    })
}

/// Trims a result's text in place (no new allocation per result, as `trim().to_string()`
/// would make).
pub(crate) fn trim_in_place(s: &mut String) {
    let end = s.trim_end().len();
    s.truncate(end);
    let lead = s.len() - s.trim_start().len();
    if lead > 0 {
        s.drain(..lead);
    }
}

/// Builds the adapter a URL names.
pub fn connect(
    url: &BackendUrl,
    config: &Config,
    metrics: &Metrics,
) -> Result<Arc<dyn SpeechBackend>, BackendError> {
    match url.protocol {
        BackendProtocol::Riva => Ok(Arc::new(riva::RivaBackend::new(url, &config.riva)?)),
        BackendProtocol::Triton => Ok(Arc::new(
            triton::TritonBackend::new(url, &config.triton)?
                .with_queue_metrics(metrics.decode_queue(&url.url)),
        )),
        BackendProtocol::Deepgram => Ok(Arc::new(deepgram::DeepgramBackend::new(
            url,
            &config.deepgram_backend,
        )?)),
        BackendProtocol::OpenAi => Ok(Arc::new(
            openai_http::OpenAiBackend::new(url, &config.openai_backend)?
                .with_queue_metrics(metrics.decode_queue(&url.url)),
        )),
    }
}
