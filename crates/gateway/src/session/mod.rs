//! The session domain: one client conversation, independent of any transport.
//!
//! Ingress codecs turn wire messages into [`Command`]s and render [`Event`]s; the
//! [`engine`] owns everything in between: validation of audio, resampling, the bounded
//! queue towards the back end, the replay buffer since the last final, partial/final
//! bookkeeping in session time, stream rotation and reopening, and latency stamps.
//! Nothing here imports axum, tonic or generated protobuf types.

pub mod audio;
pub mod engine;
pub mod resample;
mod shutdown;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::SessionLimits;
use crate::resilience::retry::{RetryBudget, RetrySettings};
use crate::router::Router;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::throttle::SessionLogs;

pub use engine::run;
pub use shutdown::Shutdown;

/// The client's recognition settings (`start.config`), with the contract's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct StartConfig {
    pub language: String,
    pub interim_results: bool,
    pub punctuate: bool,
    pub profanity_filter: bool,
    /// Rate of the client's audio; the session resamples to the back end's rate.
    pub sample_rate: u32,
    pub word_timestamps: bool,
    /// Route name; `None` means `default`.
    pub model: Option<String>,
    pub endpointing_ms: Option<u32>,
    pub custom: Vec<(String, String)>,
    /// Phrase hints with their boosts (see [`crate::backend::RecognitionParams::phrases`]).
    pub phrases: Vec<(String, f32)>,
    /// The dialect's own idle rule; `None`: `session.idle_timeout`.
    pub idle_timeout: Option<std::time::Duration>,
    /// The audio is a file, not a live source: the session takes the next frame only when
    /// the back end has room for it (its queue under half of `session.queue`), so a file
    /// streams as fast as the back end goes instead of overflowing its queue.
    pub paced: bool,
    /// Send [`Event::SpeechStarted`] from the gateway's VAD (Deepgram's `vad_events`).
    pub vad_events: bool,
    /// Send [`Event::UtteranceEnd`] after a gap this long in the words (Deepgram's
    /// `utterance_end_ms`).
    pub utterance_end_ms: Option<u32>,
    /// Label words by speaker (Deepgram's `diarize`; Riva's speaker diarization).
    pub diarize: bool,
    /// The contract has no end message (OpenAI's realtime): a client that closes with no
    /// commit awaiting its answer ends the session as `completed`, not `client_gone`.
    pub ends_by_closing: bool,
}

impl Default for StartConfig {
    fn default() -> Self {
        StartConfig {
            language: "auto".into(),
            interim_results: true,
            punctuate: true,
            profanity_filter: false,
            sample_rate: 16_000,
            word_timestamps: true,
            model: None,
            endpointing_ms: None,
            custom: Vec::new(),
            phrases: Vec::new(),
            idle_timeout: None,
            paced: false,
            vad_events: false,
            utterance_end_ms: None,
            diarize: false,
            ends_by_closing: false,
        }
    }
}

/// Lowest and highest client sample rate accepted.
pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 8_000..=48_000;

/// What a client asks of its session.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Start(StartConfig),
    /// Raw PCM16LE mono at the session's sample rate.
    Audio(Bytes),
    /// Flush every pending utterance, send the finals, then close normally.
    End,
    /// Answered with a pong echoing `timestamp` as the client sent it.
    Ping(serde_json::Value),
    /// The client is still there (counts against the idle timeout); no answer.
    KeepAlive,
    /// Finish the current utterance now: the back end finalises what it holds (the stream
    /// is half-closed, and a partial it never finalised becomes a final), then the session
    /// goes on with a new stream for the audio that follows.
    Finalize,
    /// The codec could not make a command of a message; the session answers with this error.
    Reject(SessionError),
    /// A dialect's own answer to a client message (an acknowledgement the engine has no
    /// part in), sent back in order with the session's events as [`Event::Reply`].
    Reply(std::sync::Arc<str>),
}

/// A word in session time (seconds since the session's first audio sample).
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
    pub confidence: f32,
    /// The speaker's label (diarization), when the back end gives one.
    pub speaker: Option<u32>,
}

/// A partial or final hypothesis in session time.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub confidence: f32,
    /// Session audio time (ms) up to which this result accounts.
    pub timestamp_ms: u64,
    /// Finals: audio this final covers, from the end of the previous final's last word
    /// (session start for the first) to the end of this one's last word.
    pub duration_ms: u64,
    /// `None` when the client turned word timestamps off.
    pub words: Option<Vec<Word>>,
    /// A final that the client's `Finalize` brought about (finalised early, or promoted
    /// from the last partial); false for partials.
    pub from_finalize: bool,
}

/// What the session tells its client.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Shared: the engine keeps the open partial (a promotion finalises it) while the
    /// client's codec renders it, with no copy of its words per result.
    Partial(std::sync::Arc<Transcript>),
    Final(Transcript),
    Pong {
        timestamp: serde_json::Value,
        server_time_ms: i64,
    },
    Error(SessionError),
    /// Informational; clients of the contract may ignore it.
    Status {
        state: StatusState,
        message: String,
    },
    /// Speech began at this session time (ms), by the gateway's VAD; only when the start
    /// asked for `vad_events`.
    SpeechStarted {
        at_ms: u64,
    },
    /// The words paused for `utterance_end_ms` after the word ending at this session time
    /// (ms); only when the start asked for it.
    UtteranceEnd {
        last_word_end_ms: u64,
    },
    /// A [`Command::Finalize`] is done: every final it brought about was sent.
    Finalized,
    /// A dialect's own message ([`Command::Reply`]), passed through.
    Reply(std::sync::Arc<str>),
    /// The last event of a session.
    Close(CloseCause),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    /// The session moved to another back end; nothing already final is repeated.
    Failover,
    /// The back end lost audio that could not be replayed (replay buffer exceeded).
    AudioGap,
    /// The back end's results trail the audio by more than `session.lag_warning`: it is
    /// overloaded. Results keep coming, late; nothing is lost.
    BackendLagging,
    /// After `BackendLagging`: results are back within half of `session.lag_warning`.
    BackendCaughtUp,
    /// The back end's finals back up (a request/response back end's queue, see
    /// `backend::scheduler`): partials pause so that finals go first. Finals keep coming.
    InterimPaused,
    /// After `InterimPaused`: partials come again.
    InterimResumed,
}

impl StatusState {
    /// Stable name (the v1 contract's `state`; other dialects reuse it).
    pub fn label(self) -> &'static str {
        match self {
            StatusState::Failover => "failover",
            StatusState::AudioGap => "audio_gap",
            StatusState::BackendLagging => "backend_lagging",
            StatusState::BackendCaughtUp => "backend_caught_up",
            StatusState::InterimPaused => "interim_paused",
            StatusState::InterimResumed => "interim_resumed",
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The client sent `end` and every final was delivered.
    Normal,
    /// The gateway is shutting down; pending finals were delivered first.
    GoingAway,
    /// A non-recoverable error was sent just before.
    Error(ErrorKind),
}

/// Every error the contract can carry. The codec spells the wire code; recoverability
/// is a domain fact (the session goes on or ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    AudioFormat,
    BufferOverflow,
    ModelUnavailable,
    RateLimitExceeded,
    AuthenticationFailed,
    Internal,
    /// A message the contract does not allow here (not JSON, unknown type, start twice,
    /// audio after end). Recoverable: the message is ignored, the session lives.
    InvalidRequest,
    /// The session reached `session.idle_timeout` or `session.max_duration`: its pending
    /// finals were sent, then it closes.
    SessionTimeout,
    /// A WebSocket message above `limits.max_message_bytes`: the connection cannot go on.
    MessageTooLarge,
    /// A message that breaks the WebSocket protocol (e.g. a text frame that is not UTF-8):
    /// the connection cannot go on.
    ProtocolError,
}

impl ErrorKind {
    /// Stable name for metric labels (the contract's code).
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::AudioFormat => "AUDIO_FORMAT_ERROR",
            ErrorKind::BufferOverflow => "BUFFER_OVERFLOW",
            ErrorKind::ModelUnavailable => "MODEL_UNAVAILABLE",
            ErrorKind::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorKind::AuthenticationFailed => "AUTHENTICATION_FAILED",
            ErrorKind::Internal => "INTERNAL_ERROR",
            ErrorKind::InvalidRequest => "INVALID_REQUEST",
            ErrorKind::SessionTimeout => "SESSION_TIMEOUT",
            ErrorKind::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorKind::ProtocolError => "PROTOCOL_ERROR",
        }
    }

    /// After a non-recoverable error the session closes.
    pub fn recoverable(self) -> bool {
        match self {
            ErrorKind::AudioFormat
            | ErrorKind::BufferOverflow
            | ErrorKind::RateLimitExceeded
            | ErrorKind::InvalidRequest => true,
            ErrorKind::ModelUnavailable
            | ErrorKind::AuthenticationFailed
            | ErrorKind::Internal
            | ErrorKind::SessionTimeout
            | ErrorKind::MessageTooLarge
            | ErrorKind::ProtocolError => false,
        }
    }
}

/// An error for the client, with a message that names what was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct SessionError {
    pub kind: ErrorKind,
    pub message: String,
}

impl SessionError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SessionError {
            kind,
            message: message.into(),
        }
    }
}

/// How a session ended, as a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    ClientGone,
    Failed,
    ShutDown,
    FlushTimeout,
    /// Closed at `session.idle_timeout` or `session.max_duration`.
    TimedOut,
    /// Cut off: a write to the client waited longer than `limits.write_timeout` (it does
    /// not read what it is sent).
    SlowClient,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::ClientGone => "client_gone",
            Outcome::Failed => "failed",
            Outcome::ShutDown => "shutdown",
            Outcome::FlushTimeout => "flush_timeout",
            Outcome::TimedOut => "timed_out",
            Outcome::SlowClient => "slow_client",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every session shares.
pub struct SessionContext {
    pub router: Arc<Router>,
    pub metrics: Arc<Metrics>,
    pub limits: SessionLimits,
    pub retry: RetrySettings,
    /// Gateway-wide: every session start deposits, every retry withdraws.
    pub budget: RetryBudget,
    /// Cancelled when the drain is over: sessions flush and close with "going away".
    pub shutdown: Shutdown,
    /// Allowances for the warnings every session logs at once when a back end lags or fails.
    pub logs: SessionLogs,
    /// Which routes' finals another route decodes again.
    pub two_pass: crate::config::TwoPassSettings,
}
