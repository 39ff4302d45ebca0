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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{Instrument, Span, field};

use super::audio::{FrameLog, ReplayBuffer, bytes_to_ms, pcm_bytes, pcm_samples, validate_frame};
use super::resample::Resampler;
use super::{
    CloseCause, Command, ErrorKind, Event, Outcome, SAMPLE_RATES, SessionContext, SessionError,
    StartConfig, StatusState, Transcript, Word,
};
use crate::backend::{BackendError, EventStream, RecognitionParams, TranscriptEvent};
use crate::error::ErrorClass;
use crate::resilience::admission::{Refusal, Ticket};
use crate::router::Lease;

/// Replayed audio is sent in chunks of this many milliseconds.
const REPLAY_CHUNK_MS: u64 = 100;

/// Runs one session to its end and returns how it ended. `dialect` labels metrics.
pub async fn run<C, E>(
    ctx: Arc<SessionContext>,
    dialect: &'static str,
    ticket: Ticket,
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
    let metrics = ctx.metrics.clone();
    let engine = Engine::new(ctx, ticket, events, span.clone());
    let outcome = engine.run(commands).instrument(span).await;
    metrics.sessions_active.dec();
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

/// One open back-end stream.
struct Upstream {
    /// The session's place on the back end; carries the verdict to its breaker.
    lease: Lease,
    /// `None` once the audio side is half-closed.
    audio: Option<mpsc::UnboundedSender<Bytes>>,
    /// Bytes handed to the channel that the gRPC stream has not yet taken.
    queued: Arc<AtomicUsize>,
    events: EventStream,
    /// Session sample index of this stream's first sample.
    offset: u64,
    /// Samples sent on this stream.
    sent: u64,
    opened_at: Instant,
    /// The back end has answered something on this stream.
    heard: bool,
    /// Since when audio has been sent without anything heard back (stall detection).
    waiting_since: Option<tokio::time::Instant>,
}

impl Upstream {
    fn send(&mut self, chunk: Bytes, samples: u64) {
        self.sent += samples;
        if let Some(tx) = &self.audio {
            self.waiting_since
                .get_or_insert_with(tokio::time::Instant::now);
            self.queued.fetch_add(chunk.len(), Ordering::Relaxed);
            // A closed receiver means the stream already ended; its event stream says why.
            let _ = tx.send(chunk);
        }
    }
}

/// A run of back-end failures, from the first until a stream delivers a result.
struct Episode {
    since: Instant,
    /// The back end the session was on when the episode began (the failover's "from").
    from: Option<String>,
    /// Back ends that failed in this round: retried only after a backoff.
    tried: Vec<String>,
    retries: u32,
}

impl Episode {
    fn new(from: Option<String>) -> Self {
        Episode {
            since: Instant::now(),
            from,
            tried: Vec::new(),
            retries: 0,
        }
    }
}

struct Engine<E> {
    ctx: Arc<SessionContext>,
    /// Admission places (global, and the route's once started).
    ticket: Ticket,
    events: E,
    span: Span,
    phase: Phase,
    config: StartConfig,
    route: String,
    backend_rate: u32,
    resampler: Option<Resampler>,
    upstream: Option<Upstream>,
    replay: ReplayBuffer,
    frames: FrameLog,
    /// Session samples accepted so far (at the back end's rate).
    total: u64,
    frames_received: u64,
    /// Session ms where the last final's speech ended: finals never reach before it.
    last_cut_ms: u64,
    last_partial: Option<Transcript>,
    first_partial_sent: bool,
    /// A `backend_lagging` status was sent and no `backend_caught_up` since.
    lagging: bool,
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
}

impl<E> Engine<E>
where
    E: Sink<Event> + Unpin + Send,
{
    fn new(ctx: Arc<SessionContext>, ticket: Ticket, events: E, span: Span) -> Self {
        let replay_held = ctx.metrics.replay_buffer_bytes.clone();
        Engine {
            ctx,
            ticket,
            events,
            span,
            phase: Phase::Idle,
            config: StartConfig::default(),
            route: String::new(),
            backend_rate: 16_000,
            resampler: None,
            upstream: None,
            replay: ReplayBuffer::new(0, replay_held),
            frames: FrameLog::new(0),
            total: 0,
            frames_received: 0,
            last_cut_ms: 0,
            last_partial: None,
            first_partial_sent: false,
            lagging: false,
            episode: None,
            retry_at: None,
            flush_deadline: None,
            close_cause: CloseCause::Normal,
            close_error: None,
            end_received_at: None,
            last_client_at: tokio::time::Instant::now(),
            started_at: tokio::time::Instant::now(),
        }
    }

    async fn run<C>(mut self, mut commands: C) -> Outcome
    where
        C: Stream<Item = Command> + Unpin + Send,
    {
        let shutdown = self.ctx.shutdown.clone();
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
            let stall_at = self.stall_deadline();
            let stall_timer = async move {
                match stall_at {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let limit_at = self.limit_deadline();
            let limit_timer = async move {
                match limit_at {
                    Some((d, _)) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let upstream_event = async {
                match self.upstream.as_mut() {
                    Some(u) => u.events.next().await,
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled(), if self.close_cause != CloseCause::GoingAway => {
                    Step::Shutdown
                }
                cmd = commands.next() => match cmd {
                    Some(cmd) => Step::Command(cmd),
                    None => Step::ClientGone,
                },
                ev = upstream_event => Step::Upstream(ev),
                _ = retry_timer => Step::Retry,
                _ = stall_timer => Step::Stall,
                _ = flush_timer => Step::FlushTimeout,
                _ = limit_timer => Step::Limit(limit_at.map(|(_, which)| which).unwrap_or(Limit::Idle)),
            };
            let r = match step {
                Step::Shutdown => self.begin_end(CloseCause::GoingAway).await,
                Step::Command(cmd) => {
                    self.last_client_at = tokio::time::Instant::now();
                    self.on_command(cmd).await
                }
                Step::Limit(which) => self.on_limit(which).await,
                Step::ClientGone => Err(Outcome::ClientGone),
                Step::Upstream(Some(Ok(ev))) => self.on_result(ev).await,
                Step::Upstream(Some(Err(e))) => self.on_stream_error(e).await,
                Step::Upstream(None) => self.on_stream_end().await,
                Step::Retry => self.try_open().await,
                Step::Stall => self.on_stall().await,
                Step::FlushTimeout => self.on_flush_timeout().await,
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
            audio_ms = self.samples_to_ms(self.total),
            frames = self.frames_received,
            "session ended"
        );
        result
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
        self.backend_rate = entry.backends[0].backend.sample_rate_hz();
        self.span.record("route", route.as_str());
        self.span.record("sample_rate", cfg.sample_rate);
        self.route = route;
        self.resampler = Some(Resampler::new(cfg.sample_rate, self.backend_rate));
        let limits = &self.ctx.limits;
        self.replay = ReplayBuffer::new(
            (u128::from(self.backend_rate) * limits.replay.as_millis() / 1000) as usize,
            self.ctx.metrics.replay_buffer_bytes.clone(),
        );
        self.frames = FrameLog::new(limits.replay.as_millis() as u64);
        self.config = cfg;
        self.phase = Phase::Streaming;
        tracing::info!("session started");
        self.ctx.budget.deposit();
        self.try_open().await
    }

    fn params(&self) -> RecognitionParams {
        RecognitionParams {
            language: self.config.language.clone(),
            sample_rate_hz: self.backend_rate,
            punctuate: self.config.punctuate,
            profanity_filter: self.config.profanity_filter,
            interim_results: self.config.interim_results,
            endpointing_ms: self.config.endpointing_ms,
            custom: self.config.custom.clone(),
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
        let incoming = frame.len() as u64 * u64::from(self.backend_rate) / u64::from(rate);
        let limit = u128::from(self.backend_rate) * 2 * self.ctx.limits.queue.as_millis() / 1000;
        if u128::from(queued as u64 + incoming) > limit {
            let at_ms = self.samples_to_ms(self.total);
            return self
                .error(SessionError::new(
                    ErrorKind::BufferOverflow,
                    format!(
                        "audio frame {n} ({} ms, would start at {:.3} s of session audio) was not \
                         transcribed: the back end is {} ms behind and the limit is {} ms; send \
                         at real time and resend this frame",
                        bytes_to_ms(frame.len(), rate),
                        at_ms as f64 / 1000.0,
                        bytes_to_ms(queued, self.backend_rate),
                        self.ctx.limits.queue.as_millis()
                    ),
                ))
                .await;
        }
        let chunk = match self.resampler.as_mut() {
            Some(r) if !r.is_passthrough() => {
                let input = pcm_samples(&frame);
                let mut out = Vec::with_capacity(
                    input.len() * self.backend_rate as usize / rate as usize + 8,
                );
                r.process(&input, &mut out);
                pcm_bytes(&out)
            }
            // Same rate: the frame goes upstream as it came. It is copied once into an
            // allocation of its own size, because the WebSocket hands out slices of its
            // read buffer and a slice kept for replay would pin the whole buffer.
            _ => Bytes::copy_from_slice(&frame),
        };
        self.accept(chunk, Instant::now());
        Ok(())
    }

    /// Puts resampled audio (PCM16LE at the back end's rate) on the session timeline, in
    /// the replay buffer and upstream.
    fn accept(&mut self, chunk: Bytes, at: Instant) {
        if chunk.is_empty() {
            return;
        }
        let samples = chunk.len() as u64 / 2;
        self.total += samples;
        let end_ms = self.samples_to_ms(self.total);
        self.frames.push(end_ms, at);
        self.ctx
            .metrics
            .audio_seconds
            .inc_by(samples as f64 / f64::from(self.backend_rate));
        if let Some(u) = self.upstream.as_mut() {
            u.send(chunk.clone(), samples);
        }
        self.replay.push(chunk);
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
        let mut tail = Vec::new();
        if let Some(r) = self.resampler.as_mut() {
            r.flush(&mut tail);
        }
        self.accept(pcm_bytes(&tail), Instant::now());
        if let Some(u) = self.upstream.as_mut() {
            u.audio = None; // half-close: the back end finalises what it holds
        }
        self.flush_deadline = Some(tokio::time::Instant::now() + self.ctx.limits.flush_timeout);
        Ok(())
    }

    // ---- the back end ----

    /// When the current stream counts as stalled, if stall detection is on.
    fn stall_deadline(&self) -> Option<tokio::time::Instant> {
        let timeout = self.ctx.limits.stall_timeout?;
        let up = self.upstream.as_ref()?;
        up.waiting_since.map(|t| t + timeout)
    }

    /// Opens a stream on the best back end that has not failed in this round, feeding it
    /// the replay buffer. When every one fails, schedules a retry after a backoff (within
    /// the attempts and the budget) or gives up with `MODEL_UNAVAILABLE`.
    async fn try_open(&mut self) -> Result<(), Outcome> {
        self.retry_at = None;
        let tried = self
            .episode
            .as_ref()
            .map(|e| e.tried.clone())
            .unwrap_or_default();
        let mut last_err: Option<BackendError> = None;
        let mut breaker_refused = 0usize;
        for handle in self.ctx.router.candidates(&self.route, &tried) {
            let Some(lease) = handle.lease() else {
                breaker_refused += 1;
                continue;
            };
            match self.open_on(lease).await {
                Ok(()) => return self.announce_open().await,
                Err((mut lease, e)) => {
                    if e.class == ErrorClass::Client {
                        drop(lease); // the back end is fine: no verdict
                        return self
                            .error(SessionError::new(
                                ErrorKind::ModelUnavailable,
                                format!(
                                    "the recognition back end refused this session's settings \
                                     (language, model): {}",
                                    e.message
                                ),
                            ))
                            .await;
                    }
                    lease.failed();
                    let name = lease.name().to_string();
                    self.episode
                        .get_or_insert_with(|| Episode::new(None))
                        .tried
                        .push(name);
                    last_err = Some(e);
                }
            }
        }
        let retry = &self.ctx.retry;
        let episode = self.episode.get_or_insert_with(|| Episode::new(None));
        let why = if episode.tried.is_empty() {
            format!(
                "every back end of route `{}` has its circuit open",
                self.route
            )
        } else if episode.retries >= retry.attempts {
            self.ctx.metrics.retry("attempts_exhausted");
            format!(
                "no back end of route `{}` is available ({} after {} retries)",
                self.route,
                last_err.map_or_else(|| "failed".to_string(), |e| e.kind.to_string()),
                episode.retries
            )
        } else if !self.ctx.budget.withdraw() {
            self.ctx.metrics.retry("budget_exhausted");
            format!(
                "no back end of route `{}` is available and the gateway's retry budget is \
                 spent",
                self.route
            )
        } else {
            let delay = retry.jittered(episode.retries);
            episode.retries += 1;
            episode.tried.clear();
            self.ctx.metrics.retry("scheduled");
            tracing::info!(
                attempt = episode.retries,
                delay_ms = delay.as_millis() as u64,
                breaker_refused,
                "retrying the back end after a backoff"
            );
            self.retry_at = Some(tokio::time::Instant::now() + delay);
            return Ok(());
        };
        self.episode = None;
        self.error(SessionError::new(ErrorKind::ModelUnavailable, why))
            .await
    }

    /// Opens one stream on the leased back end and feeds it the replay buffer.
    async fn open_on(&mut self, lease: Lease) -> Result<(), (Lease, BackendError)> {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let audio = UnboundedReceiverStream::new(rx)
            .inspect(move |chunk| {
                q.fetch_sub(chunk.len(), Ordering::Relaxed);
            })
            .boxed();
        let started = Instant::now();
        let backend = lease.handle().backend.clone();
        match backend.open(self.params(), audio).await {
            Ok(events) => {
                self.ctx
                    .metrics
                    .backend_request(backend.name(), "ok", started.elapsed());
                tracing::info!(backend = backend.name(), "back-end stream open");
                let mut up = Upstream {
                    lease,
                    audio: Some(tx),
                    queued,
                    events,
                    offset: self.replay.start(),
                    sent: 0,
                    opened_at: Instant::now(),
                    heard: false,
                    waiting_since: None,
                };
                let chunk = (u64::from(self.backend_rate) * REPLAY_CHUNK_MS / 1000) as usize;
                for c in self.replay.chunks(chunk) {
                    let samples = c.len() as u64 / 2;
                    up.send(c, samples);
                }
                if self.phase == Phase::Ending {
                    up.audio = None;
                }
                self.upstream = Some(up);
                Ok(())
            }
            Err(e) => {
                self.ctx.metrics.backend_request(
                    backend.name(),
                    e.class.as_str(),
                    started.elapsed(),
                );
                if let Some(suppressed) = self.ctx.logs.open_failed.admit(Instant::now()) {
                    tracing::warn!(backend = backend.name(), error = %e, class = %e.class, suppressed, "back-end stream open failed");
                }
                Err((lease, e))
            }
        }
    }

    /// Tells the client what the new stream means: audio that could not be replayed, and
    /// a move to another back end (counted once, here, where it happened).
    async fn announce_open(&mut self) -> Result<(), Outcome> {
        let name = match &self.upstream {
            Some(u) => u.lease.name().to_string(),
            None => return Ok(()),
        };
        let moved = self
            .episode
            .as_ref()
            .and_then(|e| e.from.as_deref().map(|from| (from.to_string(), e.since)))
            .filter(|(from, _)| *from != name);
        if let Some((from, since)) = &moved {
            self.ctx.metrics.failed_over(from, &name, since.elapsed());
            tracing::info!(from = %from, to = %name, took_ms = since.elapsed().as_millis() as u64, "session failed over");
            if let Some(e) = self.episode.as_mut() {
                e.from = Some(name.clone()); // a later move is counted from here
            }
        }
        let lost = self.replay.lost();
        if lost > 0 {
            let ms = self.samples_to_ms(lost);
            self.emit(Event::Status {
                state: StatusState::AudioGap,
                message: format!(
                    "the back-end stream was reopened but {ms} ms of audio before {:.3} s \
                     could not be replayed (replay buffer exceeded)",
                    self.samples_to_ms(self.replay.start()) as f64 / 1000.0
                ),
            })
            .await?;
        }
        if moved.is_some() {
            self.emit(Event::Status {
                state: StatusState::Failover,
                message: "the session moved to another recognition back end".into(),
            })
            .await?;
        }
        Ok(())
    }

    /// The current stream failed upstream: tell its breaker, drop it (cancelling it) and
    /// move on. `reason` labels the reopen metric.
    async fn upstream_failed(&mut self, reason: &'static str) -> Result<(), Outcome> {
        let Some(mut up) = self.upstream.take() else {
            return Ok(());
        };
        up.lease.failed();
        let name = up.lease.name().to_string();
        drop(up);
        self.ctx.metrics.stream_reopened(&name, reason);
        let episode = self.episode.get_or_insert_with(|| Episode::new(None));
        episode.from.get_or_insert_with(|| name.clone());
        episode.tried.push(name);
        self.try_open().await
    }

    /// Replaces a healthy stream (rotation, or the back end ended it cleanly).
    async fn reopen_healthy(&mut self, reason: &'static str) -> Result<(), Outcome> {
        if let Some(up) = self.upstream.take() {
            let name = up.lease.name().to_string();
            drop(up);
            self.ctx.metrics.stream_reopened(&name, reason);
            tracing::info!(backend = %name, reason, "reopening back-end stream");
        }
        self.try_open().await
    }

    async fn on_stream_error(&mut self, e: BackendError) -> Result<(), Outcome> {
        let name = self
            .upstream
            .as_ref()
            .map(|u| u.lease.name().to_string())
            .unwrap_or_default();
        if let Some(suppressed) = self.ctx.logs.stream_failed.admit(Instant::now()) {
            tracing::warn!(backend = %name, error = %e, class = %e.class, suppressed, "back-end stream failed");
        }
        if e.class == ErrorClass::Client {
            self.upstream = None; // a client fault: the back end's breaker is not told
            return self
                .error(SessionError::new(
                    ErrorKind::ModelUnavailable,
                    format!(
                        "the recognition back end refused this session's settings: {}",
                        e.message
                    ),
                ))
                .await;
        }
        self.upstream_failed("error").await
    }

    async fn on_stall(&mut self) -> Result<(), Outcome> {
        if let Some(up) = &self.upstream
            && let Some(suppressed) = self.ctx.logs.stalled.admit(Instant::now())
        {
            tracing::warn!(
                backend = up.lease.name(),
                suppressed,
                timeout_ms = self
                    .ctx
                    .limits
                    .stall_timeout
                    .unwrap_or_default()
                    .as_millis() as u64,
                "back-end stream stalled: audio sent and nothing heard back"
            );
        }
        self.upstream_failed("stall").await
    }

    async fn on_stream_end(&mut self) -> Result<(), Outcome> {
        if self.phase == Phase::Ending {
            return self.finish().await;
        }
        // The back end closed the stream while audio was still flowing (e.g. its own
        // stream-length cap). After results, that is a clean end: carry on on a new
        // stream. Before any, it is a failure.
        if self.upstream.as_ref().is_some_and(|u| u.heard) {
            return self.reopen_healthy("ended").await;
        }
        self.upstream_failed("ended").await
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
        let covered_ms = self
            .last_partial
            .as_ref()
            .map_or(self.last_cut_ms, |p| p.timestamp_ms.max(self.last_cut_ms));
        let total_ms = self.samples_to_ms(self.total);
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
        if let Some(mut last) = self.last_partial.take() {
            last.duration_ms = last.timestamp_ms.saturating_sub(self.last_cut_ms);
            self.last_cut_ms = self.last_cut_ms.max(last.timestamp_ms);
            self.emit(Event::Final(last)).await?;
        }
        Err(self.close().await)
    }

    /// The last messages: the error that explains a limit, if any, then the close.
    async fn close(&mut self) -> Outcome {
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

    /// The next session limit to run out, if any: idle (not once `end` was received —
    /// the flush timeout bounds that phase) or the maximum duration.
    fn limit_deadline(&self) -> Option<(tokio::time::Instant, Limit)> {
        if self.phase == Phase::Ending {
            return None;
        }
        let limits = &self.ctx.limits;
        let idle = limits
            .idle_timeout
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
            Limit::Idle => format!(
                "no message from the client for {} s (session.idle_timeout): the session is closed",
                limits.idle_timeout.unwrap_or_default().as_secs()
            ),
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

    async fn on_result(&mut self, ev: TranscriptEvent) -> Result<(), Outcome> {
        let Some(up) = self.upstream.as_mut() else {
            return Ok(());
        };
        // Anything heard proves the stream alive and ends a failure episode.
        up.waiting_since = None;
        if !up.heard {
            up.heard = true;
            up.lease.succeeded();
            self.episode = None;
        }
        if let Some(processed) = ev.audio_processed_ms {
            let offset = up.offset;
            self.check_lag(self.samples_to_ms(offset) + processed)
                .await?;
        }
        if ev.is_progress() {
            return Ok(());
        }
        let up = self.upstream.as_ref().expect("checked above");
        let offset_ms = self.samples_to_ms(up.offset);
        let stream_ms = ev
            .audio_processed_ms
            .unwrap_or_else(|| self.samples_to_ms(up.sent));
        let timestamp_ms =
            (offset_ms + stream_ms).min(self.samples_to_ms(self.total).max(offset_ms));
        let words: Vec<Word> = ev
            .words
            .iter()
            .map(|w| Word {
                word: w.word.clone(),
                start: (offset_ms + w.start_ms) as f64 / 1000.0,
                end: (offset_ms + w.end_ms) as f64 / 1000.0,
                confidence: w.confidence,
            })
            .collect();
        let speech_end_ms = ev.words.last().map(|w| offset_ms + w.end_ms);
        let speech_start_ms = ev.words.first().map(|w| offset_ms + w.start_ms);
        let transcript = Transcript {
            text: ev.text,
            confidence: ev.confidence,
            timestamp_ms,
            duration_ms: 0,
            words: self.config.word_timestamps.then_some(words),
        };
        let metrics = self.ctx.metrics.clone();
        if !ev.is_final {
            if transcript.text.is_empty() || !self.config.interim_results {
                return Ok(());
            }
            let now = Instant::now();
            if let Some(at) = self.frames.arrival_of(timestamp_ms) {
                metrics
                    .partial_latency
                    .observe(now.saturating_duration_since(at).as_secs_f64());
            }
            if !self.first_partial_sent {
                self.first_partial_sent = true;
                if let Some(at) = self.frames.arrival_of(speech_start_ms.unwrap_or(0)) {
                    metrics
                        .first_partial
                        .observe(now.saturating_duration_since(at).as_secs_f64());
                }
            }
            self.last_partial = Some(transcript.clone());
            self.emit(Event::Partial(transcript)).await?;
            metrics
                .relay_overhead
                .observe(ev.received_at.elapsed().as_secs_f64());
            return Ok(());
        }
        // A final covers audio up to its last word (or all the back end processed).
        let cut_ms = speech_end_ms.unwrap_or(timestamp_ms).max(self.last_cut_ms);
        self.last_partial = None;
        if !transcript.text.is_empty() {
            let mut fin = transcript;
            fin.duration_ms = cut_ms - self.last_cut_ms;
            let now = Instant::now();
            let speech_end = self
                .frames
                .arrival_of(speech_end_ms.unwrap_or(timestamp_ms));
            let from = match (speech_end, self.end_received_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(at) = from {
                metrics
                    .final_latency
                    .observe(now.saturating_duration_since(at).as_secs_f64());
            }
            self.emit(Event::Final(fin)).await?;
            metrics
                .relay_overhead
                .observe(ev.received_at.elapsed().as_secs_f64());
        }
        self.last_cut_ms = cut_ms;
        self.replay.cut(self.ms_to_samples(cut_ms));
        self.frames.cut(cut_ms);
        let rotate = self.phase == Phase::Streaming
            && self.upstream.as_ref().is_some_and(|u| {
                u.lease
                    .handle()
                    .backend
                    .max_stream_age()
                    .is_some_and(|age| u.opened_at.elapsed() >= age)
            });
        if rotate {
            return self.reopen_healthy("rotation").await;
        }
        Ok(())
    }

    /// The back end has processed session audio up to `processed_ms`. Its lag is the age
    /// of the oldest audio it has not processed (zero when it has processed everything,
    /// so a client that pauses is not taken for a lagging back end). Past
    /// `session.lag_warning` the client is told once (`backend_lagging`), and again when
    /// the lag is back under half of it (`backend_caught_up`).
    async fn check_lag(&mut self, processed_ms: u64) -> Result<(), Outcome> {
        let Some(warning) = self.ctx.limits.lag_warning else {
            return Ok(());
        };
        let lag = if processed_ms >= self.samples_to_ms(self.total) {
            std::time::Duration::ZERO
        } else {
            match self.frames.arrival_of(processed_ms) {
                Some(at) => at.elapsed(),
                None => return Ok(()),
            }
        };
        let lag_ms = lag.as_millis() as u64;
        let (state, message) = if !self.lagging && lag > warning {
            self.ctx.metrics.sessions_lagging.inc();
            if let Some(suppressed) = self.ctx.logs.lagging.admit(Instant::now()) {
                tracing::warn!(lag_ms, suppressed, "back-end results trail the audio");
            }
            (
                StatusState::BackendLagging,
                format!(
                    "the recognition back end is {:.1} s behind the audio (more than \
                     session.lag_warning, {:.1} s): it is overloaded, results will come late; \
                     no audio is lost",
                    lag.as_secs_f64(),
                    warning.as_secs_f64()
                ),
            )
        } else if self.lagging && lag < warning / 2 {
            self.ctx.metrics.sessions_lagging.dec();
            if let Some(suppressed) = self.ctx.logs.caught_up.admit(Instant::now()) {
                tracing::info!(
                    lag_ms,
                    suppressed,
                    "back-end results caught up with the audio"
                );
            }
            (
                StatusState::BackendCaughtUp,
                format!(
                    "results are back within {:.1} s of the audio",
                    lag.as_secs_f64()
                ),
            )
        } else {
            return Ok(());
        };
        self.lagging = !self.lagging;
        self.ticket.set_lagging(self.lagging);
        self.emit(Event::Status { state, message }).await
    }

    fn samples_to_ms(&self, samples: u64) -> u64 {
        samples * 1000 / u64::from(self.backend_rate)
    }

    fn ms_to_samples(&self, ms: u64) -> u64 {
        ms * u64::from(self.backend_rate) / 1000
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
}

/// Which session limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Idle,
    MaxDuration,
}
