//! Two-pass recognition: the route's own stream gives the fast partials and the
//! utterance boundaries; each final's audio — the replay buffer already holds it — is
//! decoded again, whole, by the finals route (`two_pass.routes`), and that transcript is
//! the final the client receives.
//!
//! - Finals stay in order: a final waits in [`Quality`] until its quality pass is back,
//!   and the ones after it wait behind it. Partials go on meanwhile; while finals wait,
//!   each partial carries their fast text before its own, so the open hypothesis still
//!   covers everything since the last final sent.
//! - A quality pass that fails, finds no back end, or is not back within
//!   `two_pass.deadline`, yields the fast final (counted by outcome in
//!   `sgw_two_pass_finals_total`): the client is never kept waiting longer than that, and
//!   never sees an error for it.
//! - The decoded audio runs from the previous final's cut to this one's, plus
//!   `two_pass.pad` (the fast pass's last word end can be early); quality word times are
//!   placed from its start and clamped to the final's span, so finals stay append-only.
//! - The decode takes a lease on a finals back end like a session does (its capacity and
//!   breaker count it); the task is aborted, freeing the lease, at the deadline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::super::resample;
use super::super::{Transcript, Word};
use crate::backend::{RecognitionParams, TranscriptEvent};
use crate::error::ErrorClass;
use crate::pcm::{pcm_bytes, pcm_samples};
use crate::router::Router;

/// What became of one final's quality pass.
#[derive(Debug)]
pub(super) enum Verdict {
    /// The quality transcript (word times relative to the decoded audio's start).
    Quality(TranscriptEvent),
    /// The fast final goes out; why (a metric label).
    Fast(&'static str),
}

enum State {
    Decoding(JoinHandle<Result<TranscriptEvent, String>>),
    Done(Verdict),
}

/// One utterance's audio for its quality pass.
pub(super) struct Utterance {
    /// Session ms where `pcm` begins.
    pub start_ms: u64,
    /// The final's span on the session's timeline: the previous cut to its own.
    pub span_ms: (u64, u64),
    pub pcm: Vec<u8>,
}

/// One final held for its quality pass.
struct Held {
    fast: Transcript,
    /// Session ms where the decoded audio begins.
    start_ms: u64,
    /// The final's span (quality words are kept inside it).
    span_ms: (u64, u64),
    /// The fast final's arrival at the engine (final latency is observed when it goes).
    since: Option<Instant>,
    due: tokio::time::Instant,
    state: State,
}

/// A session's finals waiting for their quality pass, in order.
pub(super) struct Quality {
    pub route: String,
    pub deadline: Duration,
    pub pad_ms: u64,
    queue: VecDeque<Held>,
}

impl Quality {
    pub fn new(route: String, deadline: Duration, pad: Duration) -> Self {
        Quality {
            route,
            deadline,
            pad_ms: pad.as_millis() as u64,
            queue: VecDeque::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The fast text of the finals still held, to put before a partial.
    pub fn held_text(&self) -> String {
        let mut out = String::new();
        for h in &self.queue {
            let t = h.fast.text.trim();
            if !t.is_empty() {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(t);
            }
        }
        out
    }

    /// Holds `fast` for its quality pass: `decode` is under way (`None`: nothing to decode,
    /// the final only keeps its place in the order).
    pub fn hold(
        &mut self,
        fast: Transcript,
        start_ms: u64,
        span_ms: (u64, u64),
        since: Option<Instant>,
        decode: Option<JoinHandle<Result<TranscriptEvent, String>>>,
    ) {
        let state = match decode {
            Some(task) => State::Decoding(task),
            None => State::Done(Verdict::Fast("nothing_to_decode")),
        };
        self.queue.push_back(Held {
            fast,
            start_ms,
            span_ms,
            since,
            due: tokio::time::Instant::now() + self.deadline,
            state,
        });
    }

    /// Waits until the oldest held final's pass is over (back, failed or out of time);
    /// never resolves while nothing is held.
    pub async fn next_done(&mut self) {
        let Some(head) = self.queue.front_mut() else {
            return std::future::pending().await;
        };
        if let State::Decoding(task) = &mut head.state {
            let verdict = match tokio::time::timeout_at(head.due, &mut *task).await {
                Ok(Ok(Ok(ev))) => Verdict::Quality(ev),
                // The pass failed, or its task did (a panic).
                Ok(_) => Verdict::Fast("failed"),
                Err(_) => {
                    task.abort();
                    Verdict::Fast("deadline")
                }
            };
            head.state = State::Done(verdict);
        }
    }

    /// The held finals whose pass is over, oldest first, up to the first still decoding:
    /// each as (final to send, outcome label, when its fast final came).
    pub fn release(
        &mut self,
        word_timestamps: bool,
    ) -> Vec<(Transcript, &'static str, Option<Instant>)> {
        let mut out = Vec::new();
        while let Some(head) = self.queue.front() {
            if matches!(head.state, State::Decoding(_)) {
                break;
            }
            let held = self.queue.pop_front().expect("a head");
            let State::Done(verdict) = held.state else {
                unreachable!("checked above")
            };
            let (t, outcome) = match verdict {
                Verdict::Quality(ev) if !ev.text.trim().is_empty() => (
                    merge(held.fast, ev, held.start_ms, held.span_ms, word_timestamps),
                    "quality",
                ),
                Verdict::Quality(_) => (held.fast, "quality_empty"),
                Verdict::Fast(why) => (held.fast, why),
            };
            out.push((t, outcome, held.since));
        }
        out
    }
}

/// The fast final with the quality pass's text, confidence and words (placed on the
/// session's timeline from `start_ms`, inside the final's span).
fn merge(
    fast: Transcript,
    q: TranscriptEvent,
    start_ms: u64,
    (from_ms, cut_ms): (u64, u64),
    word_timestamps: bool,
) -> Transcript {
    let (begin_s, end_s) = (from_ms as f64 / 1000.0, cut_ms as f64 / 1000.0);
    let words = (word_timestamps && fast.words.is_some()).then(|| {
        q.words
            .iter()
            .map(|w| {
                let start = ((start_ms + w.start_ms) as f64 / 1000.0).clamp(begin_s, end_s);
                let end = ((start_ms + w.end_ms) as f64 / 1000.0).clamp(start, end_s);
                Word {
                    word: w.word.clone(),
                    start,
                    end,
                    confidence: w.confidence,
                    speaker: w.speaker,
                }
            })
            .collect()
    });
    Transcript {
        text: q.text.trim().to_string(),
        confidence: q.confidence,
        words,
        ..fast
    }
}

/// Starts the quality pass of one utterance (`pcm`: PCM16LE at `from_rate`) on the
/// finals route: its back ends in the router's order, each leased like a session's
/// stream; a back end that fails retryably hands over to the next.
pub(super) fn decode(
    router: Arc<Router>,
    route: String,
    mut params: RecognitionParams,
    pcm: Vec<u8>,
    from_rate: u32,
) -> JoinHandle<Result<TranscriptEvent, String>> {
    let pcm = Bytes::from(pcm);
    tokio::spawn(async move {
        let mut last = format!("no back end of route `{route}` is usable");
        for handle in router.candidates(&route, &[]) {
            let Some(mut lease) = handle.lease() else {
                continue;
            };
            let rate = handle.backend.sample_rate_hz();
            let audio = if rate == from_rate {
                pcm.clone()
            } else {
                pcm_bytes(&resample::convert(from_rate, rate, &pcm_samples(&pcm)))
            };
            params.sample_rate_hz = rate;
            match handle.backend.recognize(params.clone(), audio).await {
                Ok(ev) => {
                    lease.succeeded();
                    return Ok(ev);
                }
                Err(e) => {
                    if e.class != ErrorClass::Client {
                        lease.failed();
                    }
                    last = e.to_string();
                    if !e.is_retryable() {
                        break;
                    }
                }
            }
        }
        Err(last)
    })
}
