//! Finals-first scheduling of one request/response back end's decodes (an offline Triton
//! model, an OpenAI-compatible HTTP server): every session's requests to that back end
//! pass through one [`Scheduler`], so a final never queues at the server behind other
//! sessions' partial re-decodes.
//!
//! - At most `max_inflight` requests run at once (`triton.max_inflight`,
//!   `openai_backend.max_inflight`); the rest wait here, where the gateway can order them.
//! - Finals (utterance ends, and two-pass quality passes: [`Scheduler::run_final`]) wait
//!   in one FIFO and always go first: a partial starts only while no final waits.
//! - Partials ([`Scheduler::run_partial`]) wait in one slot per session: a session's newer
//!   partial replaces its older one still waiting (coalescing; the older one resolves as
//!   skipped, `Ok(None)`, without a request).
//! - Pressure: while finals back up — [`PAUSE_DEPTH`] of them waiting per `max_inflight`,
//!   or the oldest waiting longer than [`PAUSE_AFTER`] (checked at every submission and
//!   completion) — partials pause: waiting ones are skipped, new ones are refused without a
//!   request, and [`Scheduler::paused`] says so (the utterance loop tells its session:
//!   `interim_paused`). They resume when no final waits (`interim_resumed`).
//! - Bounded: the partial slots by the sessions open (one each); the finals FIFO by
//!   [`MAX_QUEUED_FINALS`] per `max_inflight` — a session holds at most one final waiting
//!   (plus its two-pass passes), so the bound is only reached by a runaway; a final that
//!   cannot be queued is not dropped: it fails its session with a retryable error, and the
//!   session fails over with its replay buffer.
//! - `queue = "fifo"` ([`QueueOrder::Fifo`]) keeps the bound and drops the order: every
//!   request waits in arrival order, none is coalesced or paused. It is the baseline that
//!   tells the bound's effect from the order's (`scripts/bench-finals-first.sh`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::utterances::Decoding;
use super::{BackendError, BackendErrorKind, TranscriptEvent};
use crate::config::QueueOrder;
use crate::error::ErrorClass;
use crate::telemetry::metrics::DecodeQueueMetrics;

/// Finals waiting, per `max_inflight`, at which partials pause.
pub const PAUSE_DEPTH: usize = 1;
/// A final waiting this long pauses partials.
pub const PAUSE_AFTER: Duration = Duration::from_millis(300);
/// Finals waiting, per `max_inflight`, beyond which a final is refused.
pub const MAX_QUEUED_FINALS: usize = 256;

/// What `/status` shows of one back end's queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueStatus {
    pub max_inflight: usize,
    pub inflight: usize,
    pub finals_waiting: usize,
    pub partials_waiting: usize,
    pub partials_paused: bool,
}

/// One back end's decode queue; cheap to clone (shared).
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

struct Shared {
    max_inflight: usize,
    order: QueueOrder,
    state: Mutex<State>,
    paused: watch::Sender<bool>,
    next_session: AtomicU64,
    metrics: DecodeQueueMetrics,
}

struct Waiter {
    tx: oneshot::Sender<Turn>,
    since: Instant,
}

#[derive(Default)]
struct State {
    inflight: usize,
    finals: VecDeque<Waiter>,
    /// One waiting partial per session, oldest first.
    partials: VecDeque<(u64, Waiter)>,
}

/// The right to run one request; the next waiter goes when it drops.
struct Turn {
    shared: Option<Arc<Shared>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let mut st = shared.state.lock().expect("not poisoned");
            st.inflight -= 1;
            shared.dispatch(&mut st);
        }
    }
}

impl Scheduler {
    pub fn new(max_inflight: usize, order: QueueOrder, metrics: DecodeQueueMetrics) -> Self {
        Scheduler {
            shared: Arc::new(Shared {
                max_inflight: max_inflight.max(1),
                order,
                state: Mutex::new(State::default()),
                paused: watch::Sender::new(false),
                next_session: AtomicU64::new(0),
                metrics,
            }),
        }
    }

    /// A fresh id for one session's partial slot.
    pub fn session(&self) -> u64 {
        self.shared.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// `true` while partials are paused by finals backing up.
    pub fn paused(&self) -> watch::Receiver<bool> {
        self.shared.paused.subscribe()
    }

    pub fn status(&self) -> QueueStatus {
        let st = self.shared.state.lock().expect("not poisoned");
        QueueStatus {
            max_inflight: self.shared.max_inflight,
            inflight: st.inflight,
            finals_waiting: st.finals.len(),
            partials_waiting: st.partials.len(),
            partials_paused: *self.shared.paused.borrow(),
        }
    }

    /// Runs a final's decode when its turn comes (before any partial).
    pub fn run_final<T: Send + 'static>(
        &self,
        decode: futures::future::BoxFuture<'static, Result<T, BackendError>>,
    ) -> futures::future::BoxFuture<'static, Result<T, BackendError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            let since = Instant::now();
            let rx = {
                let mut st = shared.state.lock().expect("not poisoned");
                if st.finals.len() >= MAX_QUEUED_FINALS * shared.max_inflight {
                    return Err(BackendError::new(
                        BackendErrorKind::Unavailable,
                        ErrorClass::UpstreamRetryable,
                        "the back end's decode queue is full",
                    ));
                }
                let (tx, rx) = oneshot::channel();
                st.finals.push_back(Waiter { tx, since });
                shared.dispatch(&mut st);
                rx
            };
            let _turn = rx.await.map_err(|_| {
                BackendError::new(
                    BackendErrorKind::Unavailable,
                    ErrorClass::Internal,
                    "the decode queue went away",
                )
            })?;
            shared
                .metrics
                .final_wait
                .observe(since.elapsed().as_secs_f64());
            decode.await
        })
    }

    /// Runs session `session`'s partial decode when no final waits; `Ok(None)` without a
    /// request when a newer partial of the same session replaced it, or partials paused.
    pub fn run_partial(&self, session: u64, decode: Decoding) -> Decoding {
        let shared = self.shared.clone();
        Box::pin(async move {
            let since = Instant::now();
            let rx = {
                let mut st = shared.state.lock().expect("not poisoned");
                if *shared.paused.borrow() {
                    shared.metrics.partials_skipped.inc();
                    return Ok(None);
                }
                let (tx, rx) = oneshot::channel();
                let coalesce = shared.order == QueueOrder::FinalsFirst;
                if let Some(i) = st
                    .partials
                    .iter()
                    .position(|(s, _)| coalesce && *s == session)
                {
                    st.partials.remove(i);
                    shared.metrics.partials_skipped.inc();
                }
                st.partials.push_back((session, Waiter { tx, since }));
                shared.dispatch(&mut st);
                rx
            };
            let Ok(_turn) = rx.await else {
                return Ok(None); // replaced, or skipped by a pause
            };
            shared
                .metrics
                .partial_wait
                .observe(since.elapsed().as_secs_f64());
            decode.await
        })
    }
}

impl Shared {
    /// Starts what may start (finals first), then settles the pause and the gauges.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        // callers that went away (their session ended) neither wait nor count
        st.finals.retain(|w| !w.tx.is_closed());
        st.partials.retain(|(_, w)| !w.tx.is_closed());
        while st.inflight < self.max_inflight {
            let waiter = if self.order == QueueOrder::Fifo {
                // The older of the two queues' heads: arrival order across both.
                let final_first = match (st.finals.front(), st.partials.front()) {
                    (Some(f), Some((_, p))) => f.since <= p.since,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                if final_first {
                    st.finals.pop_front().expect("checked")
                } else {
                    st.partials.pop_front().expect("checked").1
                }
            } else {
                match st.finals.pop_front() {
                    Some(w) => w,
                    None if *self.paused.borrow() => break,
                    None => match st.partials.pop_front() {
                        Some((_, w)) => w,
                        None => break,
                    },
                }
            };
            let turn = Turn {
                shared: Some(self.clone()),
            };
            match waiter.tx.send(turn) {
                Ok(()) => st.inflight += 1,
                // the caller went away (its session ended): no request, no slot taken
                Err(mut turn) => turn.shared = None,
            }
        }
        let now = Instant::now();
        let backed_up = self.order == QueueOrder::FinalsFirst
            && (st.finals.len() >= PAUSE_DEPTH * self.max_inflight
                || st
                    .finals
                    .front()
                    .is_some_and(|w| now.duration_since(w.since) >= PAUSE_AFTER));
        let paused = *self.paused.borrow();
        if !paused && backed_up {
            self.paused.send_replace(true);
            let skipped = st.partials.len() as u64;
            st.partials.clear();
            self.metrics.partials_skipped.inc_by(skipped);
        } else if paused && st.finals.is_empty() {
            self.paused.send_replace(false);
        }
        self.metrics.finals_depth.set(st.finals.len() as i64);
        self.metrics.partials_depth.set(st.partials.len() as i64);
    }
}

/// What the utterance loop tells its session when partials pause or resume.
pub fn notice(paused: bool) -> TranscriptEvent {
    TranscriptEvent {
        notice: Some(if paused {
            super::Notice::InterimPaused
        } else {
            super::Notice::InterimResumed
        }),
        ..TranscriptEvent::idle(std::time::Instant::now())
    }
}

#[cfg(test)]
mod tests;
