//! The engine's results side: a back-end result placed on the session's timeline
//! ([`super::timeline`]) and sent to the client as a partial or an append-only final, with
//! its latency observed; the replay buffer cut at each final; rotation of streams that
//! reached their back end's age cap; and the lag signal (`backend_lagging` /
//! `backend_caught_up`) from what the back end says it has processed.

use std::sync::Arc;
use std::time::Instant;

use futures::Sink;

use super::super::{Event, Outcome, StatusState, Transcript};
use super::two_pass::Utterance;
use super::{Engine, Phase};
use crate::backend::{Notice, TranscriptEvent};

impl<E> Engine<E>
where
    E: Sink<Event> + Unpin + Send,
{
    pub(super) async fn on_result(&mut self, ev: TranscriptEvent) -> Result<(), Outcome> {
        let Some(up) = self.upstream.as_mut() else {
            return Ok(());
        };
        // Anything heard proves the stream alive; only the server's own answers prove the
        // back end works (settle the lease, end a failure episode).
        up.waiting_since = None;
        if ev.local {
            return match ev.notice {
                Some(notice) if self.config.interim_results => self.on_notice(notice).await,
                _ => Ok(()),
            };
        }
        if !up.heard {
            up.heard = true;
            up.lease.succeeded();
            self.episode = None;
        }
        if let Some(processed) = ev.audio_processed_ms {
            let offset = up.offset;
            self.check_lag(self.timeline.ms(offset) + processed).await?;
        }
        if ev.is_progress() {
            return Ok(());
        }
        let up = self.upstream.as_ref().expect("checked above");
        let (is_final, received_at) = (ev.is_final, ev.received_at);
        let mut placed = self
            .timeline
            .place(ev, up.offset, up.sent, self.config.word_timestamps);
        let metrics = self.ctx.metrics.clone();
        if !is_final {
            let transcript = placed.transcript;
            if transcript.text.is_empty() || !self.config.interim_results {
                return Ok(());
            }
            let now = Instant::now();
            if let Some(at) = self.frames.arrival_of(transcript.timestamp_ms) {
                metrics
                    .partial_latency
                    .observe(now.saturating_duration_since(at).as_secs_f64());
            }
            if !self.first_partial_sent {
                self.first_partial_sent = true;
                if let Some(at) = self.frames.arrival_of(placed.speech_start_ms.unwrap_or(0)) {
                    metrics
                        .first_partial
                        .observe(now.saturating_duration_since(at).as_secs_f64());
                }
            }
            self.gaps.words_until(last_word_end_ms(&transcript));
            // The partial as the back end gave it is what a promotion would finalise; the
            // client is sent the same allocation (no copy of a long utterance's words).
            let transcript = Arc::new(transcript);
            self.last_partial = Some(transcript.clone());
            let shown = match self.quality.as_ref().filter(|q| !q.is_empty()) {
                // Finals held for their quality pass: the open hypothesis still covers them.
                Some(q) => {
                    let mut shown = Transcript::clone(&transcript);
                    shown.text = format!("{} {}", q.held_text(), shown.text);
                    Arc::new(shown)
                }
                None => transcript,
            };
            self.emit(Event::Partial(shown)).await?;
            metrics
                .relay_overhead
                .observe(received_at.elapsed().as_secs_f64());
            return Ok(());
        }
        self.last_partial = None;
        let from_ms = self.timeline.last_cut_ms();
        let cut_ms = self.timeline.cut_final(&mut placed);
        placed.transcript.from_finalize = self.finalizing;
        if !placed.transcript.text.is_empty() {
            let speech_end = self.frames.arrival_of(
                placed
                    .speech_end_ms
                    .unwrap_or(placed.transcript.timestamp_ms),
            );
            let from = match (speech_end, self.end_received_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let audio = self.utterance_audio(from_ms, cut_ms);
            self.deliver_final(placed.transcript, audio, from).await?;
            metrics
                .relay_overhead
                .observe(received_at.elapsed().as_secs_f64());
        }
        self.replay.cut(self.timeline.samples(cut_ms));
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

    /// The audio of the utterance a final ends at `cut_ms` (from the previous cut at
    /// `from_ms`, plus `two_pass.pad`), with the session ms it starts at — when the session
    /// runs two-pass; call before the replay buffer is cut.
    pub(super) fn utterance_audio(&self, from_ms: u64, cut_ms: u64) -> Option<Utterance> {
        let q = self.quality.as_ref()?;
        let from = self.timeline.samples(from_ms).max(self.replay.start());
        let to = self.timeline.samples(cut_ms + q.pad_ms);
        let pcm = self.replay.copy_range(from, to);
        (!pcm.is_empty()).then(|| Utterance {
            start_ms: self.timeline.ms(from),
            span_ms: (from_ms, cut_ms),
            pcm,
        })
    }

    /// Sends a final — or, when the session runs two-pass, holds it for its quality pass
    /// (in order behind those held already). `since`: when the speech it ends ended, for
    /// the final-latency histogram, observed when the final goes.
    pub(super) async fn deliver_final(
        &mut self,
        fast: crate::session::Transcript,
        audio: Option<Utterance>,
        since: Option<Instant>,
    ) -> Result<(), Outcome> {
        self.gaps.words_until(last_word_end_ms(&fast));
        let Some(q) = self.quality.as_ref() else {
            return self.send_final(fast, since).await;
        };
        if fast.text.trim().is_empty() && q.is_empty() {
            return self.send_final(fast, since).await;
        }
        let finals_route = q.route.clone();
        let (start_ms, span_ms, decode) = match audio {
            Some(Utterance {
                start_ms,
                span_ms,
                pcm,
            }) if !fast.text.trim().is_empty() => {
                let mut params = self.params();
                params.interim_results = false;
                let task = super::two_pass::decode(
                    self.ctx.router.clone(),
                    finals_route,
                    params,
                    pcm,
                    self.timeline.rate(),
                );
                (start_ms, span_ms, Some(task))
            }
            _ => (0, (0, 0), None),
        };
        let q = self.quality.as_mut().expect("checked above");
        q.hold(fast, start_ms, span_ms, since, decode);
        self.release_finals().await
    }

    async fn send_final(
        &mut self,
        t: crate::session::Transcript,
        since: Option<Instant>,
    ) -> Result<(), Outcome> {
        if let Some(at) = since {
            self.ctx
                .metrics
                .final_latency
                .observe(Instant::now().saturating_duration_since(at).as_secs_f64());
        }
        self.emit(Event::Final(t)).await
    }

    /// Sends the held finals whose quality pass is over, in order.
    pub(super) async fn release_finals(&mut self) -> Result<(), Outcome> {
        let word_timestamps = self.config.word_timestamps;
        let ready = match self.quality.as_mut() {
            Some(q) => q.release(word_timestamps),
            None => return Ok(()),
        };
        for (t, outcome, since) in ready {
            if outcome != "nothing_to_decode" {
                self.ctx.metrics.two_pass_final(outcome);
            }
            if !t.text.trim().is_empty() {
                self.send_final(t, since).await?;
            }
        }
        Ok(())
    }

    /// Waits for every held final's quality pass (each within `two_pass.deadline`) and
    /// sends them: before a `Finalized`, and before the close.
    pub(super) async fn flush_finals(&mut self) -> Result<(), Outcome> {
        while let Some(q) = self.quality.as_mut().filter(|q| !q.is_empty()) {
            q.next_done().await;
            self.release_finals().await?;
        }
        Ok(())
    }

    /// `Finalized`, after the finals held for their quality pass.
    pub(super) async fn emit_finalized(&mut self) -> Result<(), Outcome> {
        self.flush_finals().await?;
        self.emit(Event::Finalized).await
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
        // A new stream still working through the replay (after a failover) trails audio
        // that arrived before the failure: that is not lag, and would be reported as such
        // for the few milliseconds the replay takes (seen in the chaos suite).
        if processed_ms < self.replayed_until_ms {
            return Ok(());
        }
        let lag = if processed_ms >= self.timeline.total_ms() {
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
}

impl<E> Engine<E>
where
    E: Sink<Event> + Unpin + Send,
{
    /// The adapter's news as a `status` for the client (only sessions with partials hear
    /// that partials pause).
    async fn on_notice(&mut self, notice: Notice) -> Result<(), Outcome> {
        let (state, message) = match notice {
            Notice::InterimPaused => (
                StatusState::InterimPaused,
                "the recognition back end's finals are backing up: partial results pause \
                 so that finals go first; finals keep coming",
            ),
            Notice::InterimResumed => (StatusState::InterimResumed, "partial results resume"),
        };
        self.emit(Event::Status {
            state,
            message: message.into(),
        })
        .await
    }
}

/// Where a result's words end (session ms): its last word, or what it accounts for when it
/// carries no word timings.
fn last_word_end_ms(t: &crate::session::Transcript) -> u64 {
    t.words
        .as_ref()
        .and_then(|w| w.last())
        .map_or(t.timestamp_ms, |w| (w.end * 1000.0).round() as u64)
}
