//! The engine's upstream side: the one open back-end stream ([`Upstream`]) and the
//! failover episode ([`Episode`]) — a run of failures from the first until a stream
//! delivers a result. Opening picks the best back end of the route that has not failed in
//! this episode and feeds it the replay buffer (audio since the last final); when every
//! one has failed, a retry is scheduled after a jittered backoff within the attempts and
//! the gateway's retry budget, and only when nothing is left does the client get
//! `MODEL_UNAVAILABLE`. Each stream's lease carries the verdict to its breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures::{Sink, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::super::{ErrorKind, Event, Outcome, SessionError, StatusState};
use super::{Engine, Phase, REPLAY_CHUNK_MS};
use crate::backend::{BackendError, EventStream};
use crate::error::ErrorClass;
use crate::router::Lease;

/// One open back-end stream.
pub(super) struct Upstream {
    /// The session's place on the back end; carries the verdict to its breaker.
    pub lease: Lease,
    /// `None` once the audio side is half-closed.
    pub audio: Option<mpsc::UnboundedSender<Bytes>>,
    /// Bytes handed to the channel that the gRPC stream has not yet taken.
    pub queued: Arc<AtomicUsize>,
    pub events: EventStream,
    /// Session sample index of this stream's first sample.
    pub offset: u64,
    /// Samples sent on this stream.
    pub sent: u64,
    pub opened_at: Instant,
    /// The back end has answered something on this stream.
    pub heard: bool,
    /// Since when audio has been sent without anything heard back (stall detection).
    pub waiting_since: Option<tokio::time::Instant>,
}

impl Upstream {
    pub fn send(&mut self, chunk: Bytes, samples: u64) {
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
pub(super) struct Episode {
    pub since: Instant,
    /// The back end the session was on when the episode began (the failover's "from").
    pub from: Option<String>,
    /// Back ends that failed in this round: retried only after a backoff.
    pub tried: Vec<String>,
    pub retries: u32,
}

impl Episode {
    pub fn new(from: Option<String>) -> Self {
        Episode {
            since: Instant::now(),
            from,
            tried: Vec::new(),
            retries: 0,
        }
    }
}

impl<E> Engine<E>
where
    E: Sink<Event> + Unpin + Send,
{
    /// When the current stream counts as stalled, if stall detection is on.
    pub(super) fn stall_deadline(&self) -> Option<tokio::time::Instant> {
        let timeout = self.ctx.limits.stall_timeout?;
        let up = self.upstream.as_ref()?;
        up.waiting_since.map(|t| t + timeout)
    }

    /// Opens a stream on the best back end that has not failed in this round, feeding it
    /// the replay buffer. When every one fails, schedules a retry after a backoff (within
    /// the attempts and the budget) or gives up with `MODEL_UNAVAILABLE`.
    pub(super) async fn try_open(&mut self) -> Result<(), Outcome> {
        self.retry_at = None;
        let tried = self
            .episode
            .as_ref()
            .map(|e| e.tried.clone())
            .unwrap_or_default();
        let mut last_err: Option<BackendError> = None;
        let mut breaker_refused = 0usize;
        let mut full = 0usize;
        for handle in self.ctx.router.candidates(&self.route, &tried) {
            let Some(lease) = handle.lease() else {
                if handle.is_full() {
                    full += 1;
                } else {
                    breaker_refused += 1;
                }
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
        // Full back ends free places as sessions end: worth a retry, as failures are.
        let why = if episode.tried.is_empty() && full == 0 {
            format!(
                "every back end of route `{}` has its circuit open",
                self.route
            )
        } else if episode.retries >= retry.attempts {
            self.ctx.metrics.retry("attempts_exhausted");
            let what = match last_err {
                Some(e) => e.kind.to_string(),
                None => "every one at its max_sessions".to_string(),
            };
            format!(
                "no back end of route `{}` is available ({what} after {} retries)",
                self.route, episode.retries
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
                full,
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
    pub(super) async fn open_on(&mut self, lease: Lease) -> Result<(), (Lease, BackendError)> {
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
                let chunk = self.timeline.samples(REPLAY_CHUNK_MS) as usize;
                for c in self.replay.chunks(chunk) {
                    let samples = c.len() as u64 / 2;
                    up.send(c, samples);
                }
                // The replayed audio arrived long ago: its age is not the new back end's lag.
                self.replayed_until_ms = self.timeline.total_ms();
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
    pub(super) async fn announce_open(&mut self) -> Result<(), Outcome> {
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
            let ms = self.timeline.ms(lost);
            self.emit(Event::Status {
                state: StatusState::AudioGap,
                message: format!(
                    "the back-end stream was reopened but {ms} ms of audio before {:.3} s \
                     could not be replayed (replay buffer exceeded)",
                    self.timeline.ms(self.replay.start()) as f64 / 1000.0
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
    pub(super) async fn upstream_failed(&mut self, reason: &'static str) -> Result<(), Outcome> {
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
    pub(super) async fn reopen_healthy(&mut self, reason: &'static str) -> Result<(), Outcome> {
        if let Some(up) = self.upstream.take() {
            let name = up.lease.name().to_string();
            drop(up);
            self.ctx.metrics.stream_reopened(&name, reason);
            tracing::info!(backend = %name, reason, "reopening back-end stream");
        }
        self.try_open().await
    }

    pub(super) async fn on_stream_error(&mut self, e: BackendError) -> Result<(), Outcome> {
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

    pub(super) async fn on_stall(&mut self) -> Result<(), Outcome> {
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

    pub(super) async fn on_stream_end(&mut self) -> Result<(), Outcome> {
        if self.finalizing {
            self.promote_last_partial().await?;
            self.finalizing = false;
            self.emit_finalized().await?;
            // Audio after the cut (sent while the back end finished) still needs a stream,
            // even when `end` came meanwhile: the new one is half-closed once replayed.
            let pending = self.timeline.total_ms() > self.timeline.last_cut_ms();
            if pending {
                self.reopen_healthy("finalize").await?;
                if self.finalize_again > 0 {
                    self.finalize_again -= 1;
                    return self.finalize().await;
                }
                return Ok(());
            }
            // Nothing after the cut: a Finalize asked for meanwhile has nothing to do, and
            // the next stream opens with the next audio — a client that commits and leaves
            // costs the back end no stream (opening one per commit and cancelling it at
            // once broke a Riva connection under load: HTTP/2 rapid-reset protection).
            for _ in 0..std::mem::take(&mut self.finalize_again) {
                self.emit_finalized().await?;
            }
            if self.phase == Phase::Streaming {
                if let Some(up) = self.upstream.take() {
                    self.ctx
                        .metrics
                        .stream_reopened(up.lease.name(), "finalize");
                }
                return Ok(());
            }
        }
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
}
