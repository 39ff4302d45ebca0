//! Whole-file transcription, for the endpoints that take a file in one HTTP request
//! (`POST /v1/listen`): reading the body within `files.*`, decoding it on the blocking
//! pool ([`crate::media`]), and running each channel through an ordinary session — the
//! same routes, breakers, failover with replay and admission as a live stream. The file's
//! audio is *paced* ([`StartConfig::paced`]): the session takes the next frame when the
//! back end has room, so a file goes as fast as the back end transcribes it.
//!
//! Every request is bounded: its body by `files.max_bytes` (413) and
//! `files.upload_timeout` (408), its audio by `files.max_duration` (413), and the files
//! held at once by `files.max_concurrent` (503): each holds its body and its samples.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use http_body_util::BodyExt;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::dialect::Contract;
use super::{AppState, gate};
use crate::config::FileLimits;
use crate::media::{self, MediaError, Pcm};
use crate::resilience::admission::Ticket;
use crate::session::audio::max_frame_bytes;
use crate::session::{
    self, Command, ErrorKind, Event, Outcome, SessionContext, SessionError, StartConfig, Transcript,
};
use tokio_util::task::TaskTracker;

/// A place among `files.max_concurrent`, held while the file is received, decoded and
/// transcribed; or the 503 + `Retry-After` refusal in the contract's shape.
pub fn take_place<C: Contract>(
    state: &AppState,
) -> Result<tokio::sync::OwnedSemaphorePermit, Box<Response>> {
    state.files.clone().try_acquire_owned().map_err(|_| {
        let retry_after = gate::retry_after_secs(state);
        state.ctx.metrics.rejected("file_limit");
        Box::new(gate::refusal::<C>(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(retry_after),
            ErrorKind::RateLimitExceeded,
            &format!(
                "the gateway is taking {} files at once (files.max_concurrent); retry after \
                 {retry_after} s",
                state.config.files.max_concurrent
            ),
        ))
    })
}

/// The request's `Content-Length`, if it is a number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// The answer when a file's session did not complete: the error that ended it (or an
/// internal one), with the status it means for an HTTP client and `Retry-After` where
/// waiting helps.
pub fn failure<C: Contract>(state: &AppState, error: Option<SessionError>) -> Response {
    let e = error.unwrap_or_else(|| {
        SessionError::new(ErrorKind::Internal, "the transcription did not complete")
    });
    let status = match e.kind {
        ErrorKind::ModelUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::SessionTimeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let retry = matches!(
        status,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
    )
    .then(|| gate::retry_after_secs(state));
    gate::refusal::<C>(status, retry, e.kind, &e.message)
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than {limit} bytes (files.max_bytes)")]
    TooLarge { limit: usize },
    #[error("the body did not arrive within {seconds} s (files.upload_timeout)")]
    Timeout { seconds: u64 },
    #[error("the body could not be read: the connection broke")]
    Broken,
    #[error("the body is empty: send the audio file as the request body")]
    Empty,
}

/// Reads a whole request body within the limits. A `Content-Length` above the limit is
/// refused before anything is read.
pub async fn read_body(
    body: axum::body::Body,
    content_length: Option<u64>,
    limits: &FileLimits,
) -> Result<Bytes, BodyError> {
    let limit = limits.max_bytes;
    if content_length.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let read = http_body_util::Limited::new(body, limit).collect();
    let collected = tokio::time::timeout(limits.upload_timeout, read)
        .await
        .map_err(|_| BodyError::Timeout {
            seconds: limits.upload_timeout.as_secs(),
        })?;
    match collected {
        Ok(c) => {
            let bytes = c.to_bytes();
            if bytes.is_empty() {
                return Err(BodyError::Empty);
            }
            Ok(bytes)
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge { limit }),
        Err(_) => Err(BodyError::Broken),
    }
}

/// Decodes a file on the blocking pool (it is CPU work), bounded by `files.max_duration`.
pub async fn decode(bytes: Bytes, limits: &FileLimits) -> Result<Pcm, MediaError> {
    let max_seconds = limits.max_duration.as_secs_f64();
    tokio::task::spawn_blocking(move || media::decode(bytes, max_seconds))
        .await
        .unwrap_or_else(|_| Err(MediaError::Corrupt("the decoder failed".into())))
}

/// What one channel's session produced.
#[derive(Debug)]
pub struct FileTranscript {
    /// Finals in order (append-only, as a live client gets them).
    pub finals: Vec<Transcript>,
    /// The error that ended the session early, if any (the finals before it stand).
    pub error: Option<SessionError>,
    pub outcome: Outcome,
}

/// Starts one session on `samples` (PCM16 at `config.sample_rate`), tracked by `tracker`
/// (a shutdown waits for it to flush); its events as they come, and its outcome. `config`
/// is used as given, with `paced` and no interim results.
pub fn start(
    ctx: Arc<SessionContext>,
    tracker: &TaskTracker,
    dialect: &'static str,
    ticket: Ticket,
    key: Option<Arc<str>>,
    mut config: StartConfig,
    samples: Vec<i16>,
) -> (mpsc::Receiver<Event>, tokio::task::JoinHandle<Outcome>) {
    config.paced = true;
    config.interim_results = false;
    let frame = max_frame_bytes(config.sample_rate, ctx.limits.max_frame).max(2);
    let bytes = crate::pcm::pcm_bytes(&samples);
    drop(samples);
    let frames = (0..bytes.len())
        .step_by(frame)
        .map(move |at| Command::Audio(bytes.slice(at..(at + frame).min(bytes.len()))));
    // After `end` the "client" stays connected (pending) until the session closes.
    let commands = futures::stream::iter(
        std::iter::once(Command::Start(config))
            .chain(frames)
            .chain(std::iter::once(Command::End)),
    )
    .chain(futures::stream::pending());
    // Bounded: a reader that stops (an HTTP client that stopped reading a stream) holds
    // the session back until its write deadline.
    let (events, received) = mpsc::channel::<Event>(EVENT_QUEUE);
    let task = tracker.spawn(session::run(ctx, dialect, ticket, key, commands, events));
    (received, task)
}

/// Events a file session may have waiting for its reader.
const EVENT_QUEUE: usize = 64;

/// Runs `samples` through one session ([`start`]) and collects its finals.
pub async fn transcribe(
    ctx: Arc<SessionContext>,
    tracker: &TaskTracker,
    dialect: &'static str,
    ticket: Ticket,
    key: Option<Arc<str>>,
    config: StartConfig,
    samples: Vec<i16>,
) -> FileTranscript {
    let (mut received, task) = start(ctx, tracker, dialect, ticket, key, config, samples);
    let mut finals = Vec::new();
    let mut error = None;
    while let Some(ev) = received.next().await {
        match ev {
            Event::Final(t) => finals.push(t),
            Event::Error(e) if error.is_none() => error = Some(e),
            _ => {}
        }
    }
    let outcome = task.await.unwrap_or(Outcome::Failed);
    FileTranscript {
        finals,
        error,
        outcome,
    }
}

/// The channels of `pcm` to transcribe: each on its own (`separate`), or mixed into one.
pub fn channels(pcm: Pcm, separate: bool) -> Vec<Vec<i16>> {
    if separate || pcm.channels.len() == 1 {
        pcm.channels
    } else {
        vec![pcm.mixed()]
    }
}
