//! The session loop: one task per client conversation.
//!
//! It reads [`Command`]s, writes [`Event`]s, and drives one back-end stream at a time.
//! Invariants it keeps:
//! - audio is never dropped silently: a refused frame is answered with an error naming it,
//!   and accepted audio stays in the replay buffer until a final covers it;
//! - finals are append-only: each covers session audio after the previous one, and a
//!   reopened stream is fed only the audio after the last final;
//! - a client that vanishes cancels its back-end stream (dropping the stream cancels it);
//! - a back end that fails (error, reset, deadline, or a stall: audio sent and nothing
//!   heard for `session.stall_timeout`) is reported to its breaker, and the session moves
//!   at once to another back end of its route that has not failed in this episode; a back
//!   end that did fail is retried after a jittered backoff, within the retry budget. An
//!   episode ends when a stream delivers any result. Only when nothing is left does the
//!   client get `MODEL_UNAVAILABLE`.
//!
//! | piece | idea |
//! |---|---|
//! | this file | the loop: commands, timers, results to events, `end` / drain / limits, writes with a deadline |
//! | [`upstream`] | the one open back-end stream and the failover episode (open, replay, fail over, retry) |
//! | [`results`] | back-end results to partials and finals, the replay cut, stream rotation, the lag signal |
//! | [`timeline`] | session time: stream times placed on the session's timeline, the cut of the last final |
//! | [`two_pass`] | two-pass recognition: finals held, in order, for their quality pass on the finals route |
//!
//! Unit tests (`tests.rs`) drive the engine in memory: an in-memory back end whose
//! streams the test reads and answers, channels for the client, paused tokio time.

pub(crate) mod cues;
mod results;
mod timeline;
mod two_pass;
mod upstream;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use futures::future::{Either, FutureExt, pending};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tracing::{Instrument, Span, field};

use self::cues::{SpeechDetector, WordGaps};
use self::timeline::Timeline;
use self::upstream::{Episode, Upstream};

use super::audio::{FrameLog, ReplayBuffer, bytes_to_ms, validate_frame};
use super::resample::Resampler;
use super::{
    CloseCause, Command, ErrorKind, Event, Outcome, SAMPLE_RATES, SessionContext, SessionError,
    StartConfig, StatusState, Transcript,
};
use crate::backend::{BackendError, RecognitionParams, TranscriptEvent};
use crate::pcm::{pcm_bytes, pcm_samples};
use crate::resilience::admission::{Refusal, Ticket};
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::AtomicU64;

/// How often a paced session (a file) looks again whether the back end has room.
const PACE_CHECK: std::time::Duration = std::time::Duration::from_millis(5);

/// Replayed audio is sent in chunks of this many milliseconds.
const REPLAY_CHUNK_MS: u64 = 100;

/// Runs one session to its end and returns how it ended. `dialect` labels metrics; `key`
/// is the name of the API key the client came in with, if any (per-key metrics).
pub async fn run<C, E>(
    ctx: Arc<SessionContext>,
    dialect: &'static str,
    ticket: Ticket,
    key: Option<Arc<str>>,
    commands: C,
    events: E,
) -> Outcome
where
    C: Stream<Item = Command> + Unpin + Send,
    E: Sink<Event> + Unpin + Send,
{
    let id = uuid::Uuid::new_v4();
    let span = tracing::info_span!(
        "session",
        session_id = %id,
        dialect,
        route = field::Empty,
        sample_rate = field::Empty,
    );
    ctx.metrics.sessions_active.inc();
    let key_active = key.as_deref().map(|k| ctx.metrics.key_session_opened(k));
    let metrics = ctx.metrics.clone();
    let audio_seconds = metrics.audio_counter(key.as_deref());
    let engine = Engine::new(ctx, ticket, events, span.clone(), audio_seconds);
    let outcome = engine.run(commands).instrument(span).await;
    metrics.sessions_active.dec();
    if let Some(active) = key_active {
        active.dec();
    }
    metrics.session_ended(dialect, outcome.as_str());
    outcome
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No `start` yet (and no audio).
    Idle,
    Streaming,
    /// `end` (or shutdown) received: the back end is flushing its last results.
    Ending,
}

struct Engine<E> {
    ctx: Arc<SessionContext>,
    /// Admission places (global, and the route's once started).
    ticket: Ticket,
    events: E,
    span: Span,
    /// `sgw_audio_seconds_total` of this session's API key.
    audio_seconds: Counter<f64, AtomicU64>,
    phase: Phase,
    config: StartConfig,
    route: String,
    /// Session time at the back end's rate; where the last final cut it.
    timeline: Timeline,
    resampler: Option<Resampler>,
    upstream: Option<Upstream>,
    replay: ReplayBuffer,
    frames: FrameLog,
    frames_received: u64,
    last_partial: Option<std::sync::Arc<Transcript>>,
    first_partial_sent: bool,
    /// A `backend_lagging` status was sent and no `backend_caught_up` since.
    lagging: bool,
    /// Session time up to which the open stream was fed from the replay buffer when it
    /// opened (results before it are not judged for lag).
    replayed_until_ms: u64,
    /// Speech onsets, when the start asked for `vad_events`.
    speech: Option<SpeechDetector>,
    /// Gaps in the words, for `utterance_end_ms`.
    gaps: WordGaps,
    /// `Finalize` half-closed the stream: when it ends, its last partial becomes a final
    /// and a new stream takes the audio since.
    finalizing: bool,
    /// Finalizes asked for while one was under way, still to run.
    finalize_again: u32,
    episode: Option<Episode>,
    /// When the next retry of a failed back end is due.
    retry_at: Option<tokio::time::Instant>,
    flush_deadline: Option<tokio::time::Instant>,
    close_cause: CloseCause,
    /// Sent just before the close (a session limit says why it closes).
    close_error: Option<SessionError>,
    /// The client's last message, for `session.idle_timeout`.
    last_client_at: tokio::time::Instant,
    /// For `session.max_duration`.
    started_at: tokio::time::Instant,
    end_received_at: Option<Instant>,
    /// Two-pass recognition, when the session's route has a finals route.
    quality: Option<two_pass::Quality>,
}

impl<E> Engine<E>
where
    E: Sink<Event> + Unpin + Send,
{
    fn new(
        ctx: Arc<SessionContext>,
        ticket: Ticket,
        events: E,
        span: Span,
        audio_seconds: Counter<f64, AtomicU64>,
    ) -> Self {
        let replay_held = ctx.metrics.replay_buffer_bytes.clone();
        Engine {
            ctx,
            ticket,
            events,
            span,
            audio_seconds,
            phase: Phase::Idle,
            config: StartConfig::default(),
            route: String::new(),
            timeline: Timeline::new(16_000),
            resampler: None,
            upstream: None,
            replay: ReplayBuffer::new(0, replay_held),
            frames: FrameLog::new(0),
            frames_received: 0,
            last_partial: None,
            first_partial_sent: false,
            lagging: false,
            finalizing: false,
            finalize_again: 0,
            speech: None,
            gaps: WordGaps::default(),
            replayed_until_ms: 0,
            episode: None,
            retry_at: None,
            flush_deadline: None,
            close_cause: CloseCause::Normal,
            close_error: None,
            end_received_at: None,
            quality: None,
            last_client_at: tokio::time::Instant::now(),
            started_at: tokio::time::Instant::now(),
        }
    }

    async fn run<C>(mut self, mut commands: C) -> Outcome
    where
        C: Stream<Item = Command> + Unpin + Send,
    {
        // Made once: polled at every wake-up (see `shutdown` for why it is not a
        // cancellation token).
        let cancelled = self.ctx.shutdown.wait();
        tokio::pin!(cancelled);
        // The next session limit or stall, whichever comes first: one timer.
        let mut timer = LazyTimer::new();
        let result = loop {
            let deadline = self.flush_deadline;
            let flush_timer = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let retry_at = self.retry_at;
            let retry_timer = async move {
                match retry_at {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            // The one timer serves the branch of whichever deadline is next: a limit is
            // polled before the inputs, a stall after them (a result already waiting
            // is not a stall).
            let (limit_timer, stall_timer) = match self.next_deadline() {
                Some((at, Some(which))) => (
                    Either::Left(timer.until(at).map(move |()| which)),
                    Either::Right(pending()),
                ),
                Some((at, None)) => (Either::Right(pending()), Either::Left(timer.until(at))),
                None => (Either::Right(pending()), Either::Right(pending())),
            };
            let takes_input = self.takes_input();
            let upstream = self.upstream.as_mut();
            let upstream_event = async move {
                match upstream {
                    Some(u) => u.events.next().await,
                    None => std::future::pending().await,
                }
            };
            let quality = self.quality.as_mut();
            let quality_done = async move {
                match quality {
                    Some(q) => q.next_done().await,
                    None => std::future::pending().await,
                }
            };
            // The session's deadlines come before its inputs: a client that always has
            // something to read (a ping flood) spends the task's cooperative budget in
            // the first ready branch, and deadlines polled after it would find the budget
            // gone and never fire (seen under CPU load: a flooder still connected at 20 s).
            let step = tokio::select! {
                biased;
                _ = &mut cancelled, if self.close_cause != CloseCause::GoingAway => {
                    Step::Shutdown
                }
                _ = flush_timer => Step::FlushTimeout,
                which = limit_timer => Step::Limit(which),
                cmd = commands.next(), if takes_input => match cmd {
                    Some(cmd) => Step::Command(cmd),
                    None => Step::ClientGone,
                },
                () = tokio::time::sleep(PACE_CHECK), if !takes_input => Step::Paced,
                ev = upstream_event => Step::Upstream(ev),
                () = quality_done => Step::QualityDone,
                _ = retry_timer => Step::Retry,
                () = stall_timer => Step::Stall,
            };
            let r = match step {
                Step::Shutdown => self.begin_end(CloseCause::GoingAway).await,
                Step::Command(cmd) => {
                    self.last_client_at = tokio::time::Instant::now();
                    self.on_command(cmd).await
                }
                Step::Limit(which) => self.on_limit(which).await,
                // A paced source waits for the back end, not idles.
                Step::Paced => {
                    self.last_client_at = tokio::time::Instant::now();
                    Ok(())
                }
                Step::ClientGone => Err(self.gone()),
                Step::Upstream(Some(Ok(ev))) => self.on_result(ev).await,
                Step::Upstream(Some(Err(e))) => self.on_stream_error(e).await,
                Step::Upstream(None) => self.on_stream_end().await,
                Step::Retry => self.try_open().await,
                Step::Stall => self.on_stall().await,
                Step::FlushTimeout => self.on_flush_timeout().await,
                Step::QualityDone => self.release_finals().await,
            };
            if let Err(outcome) = r {
                break outcome;
            }
        };
        if self.lagging {
            self.ctx.metrics.sessions_lagging.dec();
        }
        // Dropping `self` drops the upstream, which cancels the back-end stream.
        tracing::info!(
            outcome = result.as_str(),
            audio_ms = self.timeline.total_ms(),
            frames = self.frames_received,
            "session ended"
        );
        result
    }

    /// How a session whose client left without ending it ended: `completed` for a
    /// contract without an end message when no Finalize was still to be answered.
    fn gone(&self) -> Outcome {
        if self.config.ends_by_closing && !self.finalizing && self.finalize_again == 0 {
            Outcome::Completed
        } else {
            Outcome::ClientGone
        }
    }

    /// Whether the next client message is read now. Always, but for a paced source (a
    /// file) while streaming: then only when the open stream's queue is under half of
    /// `session.queue` (not while a stream is half-closed, or a back end is being retried:
    /// the audio would only pile up in the replay buffer).
    fn takes_input(&self) -> bool {
        if !self.config.paced || self.phase != Phase::Streaming {
            return true;
        }
        match &self.upstream {
            Some(u) if u.audio.is_some() => {
                let queued = u.queued.load(Ordering::Relaxed) as u128;
                let limit =
                    u128::from(self.timeline.rate()) * 2 * self.ctx.limits.queue.as_millis() / 1000;
                queued * 2 <= limit
            }
            Some(_) => false,
            None => self.retry_at.is_none(),
        }
    }

    // ---- writing to the client ----

    /// Writes one event within `limits.write_timeout`. A client that does not read makes
    /// the write wait (its window is closed, the WebSocket layer's queue is full): past the
    /// deadline the session ends as `slow_client`, so such a client cannot keep its
    /// admission place, its back-end stream or its timers from running out.
    async fn emit(&mut self, ev: Event) -> Result<(), Outcome> {
        if let Event::Error(e) = &ev {
            self.ctx.metrics.error_sent(e.kind.label());
        }
        let deadline = self.ctx.limits.write_timeout;
        match tokio::time::timeout(deadline, self.events.send(ev)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Outcome::ClientGone),
            Err(_) => {
                self.ctx.metrics.connection_cut("write_timeout");
                tracing::info!(
                    write_timeout_ms = deadline.as_millis() as u64,
                    "client stopped reading: the session is cut off"
                );
                Err(Outcome::SlowClient)
            }
        }
    }

    async fn error(&mut self, err: SessionError) -> Result<(), Outcome> {
        tracing::debug!(kind = ?err.kind, "client error");
        let fatal = !err.kind.recoverable();
        let kind = err.kind;
        self.emit(Event::Error(err)).await?;
        if fatal {
            let _ = self.emit(Event::Close(CloseCause::Error(kind))).await;
            return Err(Outcome::Failed);
        }
        Ok(())
    }

    // ---- commands ----

    async fn on_command(&mut self, cmd: Command) -> Result<(), Outcome> {
        match cmd {
            Command::Ping(timestamp) => {
                let server_time_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                self.emit(Event::Pong {
                    timestamp,
                    server_time_ms,
                })
                .await
            }
            Command::Reject(err) => self.error(err).await,
            Command::KeepAlive => Ok(()),
            Command::Reply(text) => self.emit(Event::Reply(text)).await,
            Command::Finalize => self.finalize().await,
            Command::Start(cfg) => match self.phase {
                Phase::Idle => self.start(cfg).await,
                Phase::Streaming | Phase::Ending => {
                    self.error(SessionError::new(
                        ErrorKind::InvalidRequest,
                        "session already started: the second start was ignored; the first \
                         start's settings stay in force",
                    ))
                    .await
                }
            },
            Command::Audio(frame) => self.on_audio(frame).await,
            Command::End => match self.phase {
                Phase::Idle => {
                    let _ = self.emit(Event::Close(CloseCause::Normal)).await;
                    Err(Outcome::Completed)
                }
                Phase::Streaming => self.begin_end(CloseCause::Normal).await,
                Phase::Ending => Ok(()),
            },
        }
    }

    async fn start(&mut self, cfg: StartConfig) -> Result<(), Outcome> {
        if !SAMPLE_RATES.contains(&cfg.sample_rate) {
            return self
                .error(SessionError::new(
                    ErrorKind::AudioFormat,
                    format!(
                        "sample_rate {} Hz is not supported: use 8000-48000 Hz (16000 recommended); \
                         the session was not started",
                        cfg.sample_rate
                    ),
                ))
                .await;
        }
        let route = cfg.model.clone().unwrap_or_else(|| "default".to_string());
        let Some(entry) = self.ctx.router.route(&route) else {
            let known = self.ctx.router.route_names().join(", ");
            return self
                .error(SessionError::new(
                    ErrorKind::ModelUnavailable,
                    format!("unknown model `{route}`: this gateway serves {known}"),
                ))
                .await;
        };
        if let Err(refusal) = self.ticket.enter_route(&route) {
            self.ctx.metrics.rejected(refusal.as_str());
            let why = if refusal == Refusal::RouteLagging {
                "is overloaded: too many of its sessions' results trail their audio \
                 (admission.shed_lagging_percent)"
            } else {
                "is at its session limit"
            };
            return self
                .error(SessionError::new(
                    ErrorKind::RateLimitExceeded,
                    format!(
                        "model `{route}` {why}: the session was not started; \
                         send start again later"
                    ),
                ))
                .await;
        }
        let backend_rate = entry.sample_rate;
        let two_pass = &self.ctx.two_pass;
        self.quality = two_pass.finals_route(&route).map(|finals| {
            two_pass::Quality::new(finals.to_string(), two_pass.deadline, two_pass.pad)
        });
        self.timeline = Timeline::new(backend_rate);
        self.span.record("route", route.as_str());
        self.span.record("sample_rate", cfg.sample_rate);
        self.route = route;
        self.resampler = Some(Resampler::new(cfg.sample_rate, backend_rate));
        let limits = &self.ctx.limits;
        self.replay = ReplayBuffer::new(
            (u128::from(backend_rate) * limits.replay.as_millis() / 1000) as usize,
            self.ctx.metrics.replay_buffer_bytes.clone(),
        );
        self.frames = FrameLog::new(limits.replay.as_millis() as u64);
        self.speech = cfg.vad_events.then(|| SpeechDetector::new(backend_rate));
        self.config = cfg;
        self.phase = Phase::Streaming;
        tracing::info!("session started");
        self.ctx.budget.deposit();
        self.try_open().await
    }

    fn params(&self) -> RecognitionParams {
        RecognitionParams {
            language: self.config.language.clone(),
            sample_rate_hz: self.timeline.rate(),
            punctuate: self.config.punctuate,
            profanity_filter: self.config.profanity_filter,
            interim_results: self.config.interim_results,
            endpointing_ms: self.config.endpointing_ms,
            custom: self.config.custom.clone(),
            phrases: self.config.phrases.clone(),
            diarize: self.config.diarize,
        }
    }

    async fn on_audio(&mut self, frame: Bytes) -> Result<(), Outcome> {
        self.frames_received += 1;
        let n = self.frames_received;
        match self.phase {
            Phase::Ending => {
                return self
                    .error(SessionError::new(
                        ErrorKind::InvalidRequest,
                        format!(
                            "audio frame {n} ({} bytes) arrived after end and was not transcribed",
                            frame.len()
                        ),
                    ))
                    .await;
            }
            Phase::Idle => {
                self.start(StartConfig::default()).await?;
                if self.phase != Phase::Streaming {
                    return Ok(());
                }
            }
            Phase::Streaming => {}
        }
        let rate = self.config.sample_rate;
        if let Err(e) = validate_frame(frame.len(), rate, self.ctx.limits.max_frame, n) {
            return self.error(e).await;
        }
        if frame.is_empty() {
            return Ok(());
        }
        // Backpressure: refuse the frame (and say so) rather than queue without bound.
        let queued = self
            .upstream
            .as_ref()
            .map_or(0, |u| u.queued.load(Ordering::Relaxed));
        let backend_rate = self.timeline.rate();
        let incoming = frame.len() as u64 * u64::from(backend_rate) / u64::from(rate);
        let limit = u128::from(backend_rate) * 2 * self.ctx.limits.queue.as_millis() / 1000;
        if u128::from(queued as u64 + incoming) > limit {
            let at_ms = self.timeline.total_ms();
            return self
                .error(SessionError::new(
                    ErrorKind::BufferOverflow,
                    format!(
                        "audio frame {n} ({} ms, would start at {:.3} s of session audio) was not \
                         transcribed: the back end is {} ms behind and the limit is {} ms; send \
                         at real time and resend this frame",
                        bytes_to_ms(frame.len(), rate),
                        at_ms as f64 / 1000.0,
                        bytes_to_ms(queued, backend_rate),
                        self.ctx.limits.queue.as_millis()
                    ),
                ))
                .await;
        }
        let (upstream, kept) = match self.resampler.as_mut() {
            Some(r) if !r.is_passthrough() => {
                let input = pcm_samples(&frame);
                let mut out =
                    Vec::with_capacity(input.len() * backend_rate as usize / rate as usize + 8);
                r.process(&input, &mut out);
                let chunk = pcm_bytes(&out);
                (chunk.clone(), chunk)
            }
            // Same rate: the frame goes upstream as it came, and the replay buffer keeps a
            // copy in an allocation of its own size: the WebSocket hands out slices of its
            // read buffer, and a slice kept for replay would pin the whole buffer. The
            // stream writes the frame at once and drops it; only frames queued behind a
            // slow back end (at most `session.queue` of audio) hold their read buffer
            // a while.
            _ => {
                let kept = Bytes::copy_from_slice(&frame);
                (frame, kept)
            }
        };
        let onset = self.speech.as_mut().and_then(|d| d.push(&kept));
        self.accept(upstream, kept, Instant::now());
        // No stream since a Finalize (none was opened for nothing): this audio, in the
        // replay buffer, opens one.
        if self.upstream.is_none() && self.retry_at.is_none() && self.episode.is_none() {
            self.try_open().await?;
        }
        if let Some(at_ms) = onset {
            self.emit(Event::SpeechStarted { at_ms }).await?;
        }
        self.check_utterance_end().await
    }

    /// Sends `UtteranceEnd` when the words have paused for `utterance_end_ms` of audio
    /// and no open partial holds words ([`cues::WordGaps`]).
    async fn check_utterance_end(&mut self) -> Result<(), Outcome> {
        let Some(gap) = self.config.utterance_end_ms else {
            return Ok(());
        };
        let open_words = self
            .last_partial
            .as_ref()
            .is_some_and(|p| !p.text.trim().is_empty());
        let audio_ms = self.timeline.total_ms();
        match self.gaps.check(audio_ms, u64::from(gap), open_words) {
            Some(last_word_end_ms) => self.emit(Event::UtteranceEnd { last_word_end_ms }).await,
            None => Ok(()),
        }
    }

    /// Puts resampled audio (PCM16LE at the back end's rate) on the session timeline, in
    /// the replay buffer and upstream.
    /// `upstream` and `kept` hold the same audio: what is sent (dropped once written) and
    /// what the replay buffer keeps (never a slice of a larger buffer).
    fn accept(&mut self, upstream: Bytes, kept: Bytes, at: Instant) {
        debug_assert_eq!(upstream.len(), kept.len());
        if kept.is_empty() {
            return;
        }
        let samples = kept.len() as u64 / 2;
        let end_ms = self.timeline.advance(samples);
        self.frames.push(end_ms, at);
        self.audio_seconds
            .inc_by(samples as f64 / f64::from(self.timeline.rate()));
        if let Some(u) = self.upstream.as_mut() {
            u.send(upstream, samples);
        }
        self.replay.push(kept);
    }

    /// `Finalize`: the back end finalises what it holds (its stream is half-closed; the
    /// audio that follows goes to a new stream). One asked for while another is under way
    /// runs once that one is done, so every Finalize is answered by its own
    /// [`Event::Finalized`].
    pub(super) async fn finalize(&mut self) -> Result<(), Outcome> {
        if self.finalizing {
            self.finalize_again += 1;
            return Ok(());
        }
        if self.phase == Phase::Streaming
            && self.upstream.as_ref().is_some_and(|u| u.audio.is_some())
        {
            // The resampler's look-ahead holds the last ms of the utterance: out with it
            // first, as at `end` (a realtime client's 24 kHz audio lost 1.7 ms at every
            // commit without this).
            self.flush_resampler();
            let u = self.upstream.as_mut().expect("checked above");
            u.audio = None; // half-close: the back end finalises what it holds
            self.finalizing = true;
            return Ok(());
        }
        // Nothing open to finalise (no audio yet, or a failover under way): done.
        self.emit_finalized().await
    }

    /// Sends what the resampler still holds (its look-ahead) and starts it afresh.
    fn flush_resampler(&mut self) {
        let mut tail = Vec::new();
        if let Some(r) = self.resampler.as_mut() {
            r.flush(&mut tail);
        }
        let tail = pcm_bytes(&tail);
        self.accept(tail.clone(), tail, Instant::now());
    }

    async fn begin_end(&mut self, cause: CloseCause) -> Result<(), Outcome> {
        self.close_cause = cause;
        match self.phase {
            Phase::Idle => return Err(self.close().await),
            Phase::Ending => return Ok(()),
            Phase::Streaming => {}
        }
        self.phase = Phase::Ending;
        self.end_received_at = Some(Instant::now());
        self.flush_resampler();
        if self.upstream.is_none() && self.retry_at.is_none() && self.episode.is_none() {
            // No stream since a Finalize and no audio after it: nothing left to flush.
            return self.finish().await;
        }
        if let Some(u) = self.upstream.as_mut() {
            u.audio = None; // half-close: the back end finalises what it holds
        }
        self.flush_deadline = Some(tokio::time::Instant::now() + self.ctx.limits.flush_timeout);
        Ok(())
    }

    async fn on_flush_timeout(&mut self) -> Result<(), Outcome> {
        if let Some(suppressed) = self.ctx.logs.flush_timeout.admit(Instant::now()) {
            tracing::warn!(
                suppressed,
                "back end did not finish within the flush timeout"
            );
        }
        self.upstream = None;
        // Whatever no final or partial covers is not transcribed: say so, never silently.
        let last_cut_ms = self.timeline.last_cut_ms();
        let covered_ms = self
            .last_partial
            .as_ref()
            .map_or(last_cut_ms, |p| p.timestamp_ms.max(last_cut_ms));
        let total_ms = self.timeline.total_ms();
        if total_ms > covered_ms {
            self.emit(Event::Status {
                state: StatusState::AudioGap,
                message: format!(
                    "the back end did not finish within the flush timeout: audio from {:.3} s \
                     to {:.3} s was not transcribed",
                    covered_ms as f64 / 1000.0,
                    total_ms as f64 / 1000.0
                ),
            })
            .await?;
        }
        // `finish` always ends the session; the outcome to record is the timeout.
        let _ = self.finish().await;
        Err(Outcome::FlushTimeout)
    }

    /// Ends the session: a partial the back end never finalised is promoted to a final
    /// (so `end` always yields the last words), then the close.
    async fn finish(&mut self) -> Result<(), Outcome> {
        self.promote_last_partial().await?;
        Err(self.close().await)
    }

    /// A partial the back end never finalised becomes a final (its audio is cut from the
    /// replay buffer like any final's).
    async fn promote_last_partial(&mut self) -> Result<(), Outcome> {
        if let Some(last) = self.last_partial.take() {
            // The client's copy was rendered and dropped: this is the only owner.
            let mut last = std::sync::Arc::unwrap_or_clone(last);
            let from_ms = self.timeline.last_cut_ms();
            self.timeline.promote(&mut last);
            last.from_finalize = self.finalizing;
            let cut_ms = self.timeline.last_cut_ms();
            let audio = self.utterance_audio(from_ms, cut_ms);
            self.replay.cut(self.timeline.samples(cut_ms));
            self.frames.cut(cut_ms);
            self.deliver_final(last, audio, self.end_received_at)
                .await?;
        }
        Ok(())
    }

    /// The last messages: the error that explains a limit, if any, then the close.
    async fn close(&mut self) -> Outcome {
        // Finals held for their quality pass go first (each within two_pass.deadline).
        if let Err(outcome) = self.flush_finals().await {
            return outcome;
        }
        if let Some(err) = self.close_error.take() {
            let _ = self.emit(Event::Error(err)).await;
        }
        let cause = self.close_cause;
        let _ = self.emit(Event::Close(cause)).await;
        match cause {
            CloseCause::GoingAway => Outcome::ShutDown,
            CloseCause::Error(ErrorKind::SessionTimeout) => Outcome::TimedOut,
            _ => Outcome::Completed,
        }
    }

    /// The next deadline, if any: a session limit (`Some(limit)`) or the open stream's
    /// stall (`None`), whichever comes first.
    fn next_deadline(&self) -> Option<(tokio::time::Instant, Option<Limit>)> {
        let limit = self.limit_deadline().map(|(at, which)| (at, Some(which)));
        let stall = self.stall_deadline().map(|at| (at, None));
        match (limit, stall) {
            (Some(l), Some(s)) => Some(if l.0 <= s.0 { l } else { s }),
            (l, s) => l.or(s),
        }
    }

    /// The next session limit to run out, if any: idle (not once `end` was received —
    /// the flush timeout bounds that phase) or the maximum duration.
    fn limit_deadline(&self) -> Option<(tokio::time::Instant, Limit)> {
        if self.phase == Phase::Ending {
            return None;
        }
        let limits = &self.ctx.limits;
        let idle = self
            .config
            .idle_timeout
            .or(limits.idle_timeout)
            .map(|d| (self.last_client_at + d, Limit::Idle));
        let max = limits
            .max_duration
            .map(|d| (self.started_at + d, Limit::MaxDuration));
        match (idle, max) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// A limit ran out: the pending finals are flushed as for `end`, then the client gets
    /// `SESSION_TIMEOUT` and the close (1008).
    async fn on_limit(&mut self, which: Limit) -> Result<(), Outcome> {
        let limits = &self.ctx.limits;
        let message = match which {
            Limit::Idle => match self.config.idle_timeout {
                Some(d) => format!(
                    "no audio and no message from the client for {} s: the session is closed",
                    d.as_secs_f64()
                ),
                None => format!(
                    "no message from the client for {} s (session.idle_timeout): the session is closed",
                    limits.idle_timeout.unwrap_or_default().as_secs()
                ),
            },
            Limit::MaxDuration => format!(
                "the session reached its maximum length of {} s (session.max_duration): \
                 pending finals were sent; open a new session to go on",
                limits.max_duration.unwrap_or_default().as_secs()
            ),
        };
        tracing::info!(limit = ?which, "session limit reached");
        self.close_error = Some(SessionError::new(ErrorKind::SessionTimeout, message));
        self.begin_end(CloseCause::Error(ErrorKind::SessionTimeout))
            .await
    }
}

/// A session deadline that moves with every frame or result (the earlier of the idle
/// timeout and the stall timeout), kept as one timer that is reset only when the deadline
/// moves earlier (or it has fired): a later deadline is found when the timer fires early
/// and checks. Made afresh for every event, the timers were registered in and removed
/// from the runtime's timer wheel per frame and per result.
struct LazyTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl LazyTimer {
    fn new() -> Self {
        // Far enough never to fire unarmed (the `until` branch is off then anyway).
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        LazyTimer {
            sleep: Box::pin(tokio::time::sleep_until(far)),
        }
    }

    /// Completes when `at` is reached. The timer is reset only when `at` is earlier than
    /// it or it has fired.
    async fn until(&mut self, at: tokio::time::Instant) {
        if at < self.sleep.deadline() || self.sleep.is_elapsed() {
            self.sleep.as_mut().reset(at);
        }
        loop {
            self.sleep.as_mut().await;
            if tokio::time::Instant::now() >= at {
                return;
            }
            self.sleep.as_mut().reset(at);
        }
    }
}

enum Step {
    Shutdown,
    Command(Command),
    ClientGone,
    Upstream(Option<Result<TranscriptEvent, BackendError>>),
    Retry,
    Stall,
    FlushTimeout,
    Limit(Limit),
    /// A paced source waited for the back end's queue.
    Paced,
    /// The oldest final held for its quality pass may go.
    QualityDone,
}

/// Which session limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Idle,
    MaxDuration,
}
