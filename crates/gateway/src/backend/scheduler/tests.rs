//! The scheduler on paused time: finals first, coalescing, pause and resume, bounds.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::backend::utterances::Decoding;

/// Records which request started, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<&'static str>>>);

impl Log {
    fn started(&self) -> Vec<&'static str> {
        self.0.lock().unwrap().clone()
    }
}

/// A decode that logs its start and answers when `release` fires.
fn held(log: &Log, name: &'static str) -> (Decoding, oneshot::Sender<()>) {
    let (release, wait) = oneshot::channel();
    let log = log.clone();
    let d: Decoding = Box::pin(async move {
        log.0.lock().unwrap().push(name);
        let _ = wait.await;
        let mut ev = TranscriptEvent::progress(std::time::Instant::now());
        ev.text = name.into();
        Ok(Some(ev))
    });
    (d, release)
}

/// A decode that logs its start and answers at once.
fn quick(log: &Log, name: &'static str) -> Decoding {
    held_quick(log.clone(), name)
}

fn held_quick(log: Log, name: &'static str) -> Decoding {
    Box::pin(async move {
        log.0.lock().unwrap().push(name);
        let mut ev = TranscriptEvent::progress(std::time::Instant::now());
        ev.text = name.into();
        Ok(Some(ev))
    })
}

type Answer = JoinHandle<Result<Option<TranscriptEvent>, BackendError>>;

fn spawn(d: Decoding) -> Answer {
    tokio::spawn(d)
}

/// Lets every spawned task run until it waits.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn text(r: Result<Option<TranscriptEvent>, BackendError>) -> Option<String> {
    r.expect("no error").map(|e| e.text)
}

#[tokio::test(start_paused = true)]
async fn a_final_goes_before_partials_that_waited_longer() {
    let q = Scheduler::new(
        2,
        crate::config::QueueOrder::FinalsFirst,
        Default::default(),
    );
    let log = Log::default();
    let (a1, release_a1) = held(&log, "final a1");
    let (a2, release_a2) = held(&log, "final a2");
    let a1 = spawn(q.run_final(a1));
    let a2 = spawn(q.run_final(a2));
    settle().await;
    // both slots busy: two sessions' partials wait, then a final arrives
    let p1 = spawn(q.run_partial(1, quick(&log, "partial 1")));
    let p2 = spawn(q.run_partial(2, quick(&log, "partial 2")));
    settle().await;
    let (b, release_b) = held(&log, "final b");
    let b = spawn(q.run_final(b));
    settle().await;
    assert_eq!(q.status().finals_waiting, 1);
    assert_eq!(q.status().partials_waiting, 2);
    assert!(
        !*q.paused().borrow(),
        "one final waiting of two slots: no pause yet"
    );
    release_a1.send(()).unwrap();
    settle().await;
    assert_eq!(log.started(), ["final a1", "final a2", "final b"]);
    release_a2.send(()).unwrap();
    release_b.send(()).unwrap();
    settle().await;
    assert_eq!(
        log.started(),
        ["final a1", "final a2", "final b", "partial 1", "partial 2"]
    );
    for (h, want) in [(a1, "final a1"), (a2, "final a2"), (b, "final b")] {
        assert_eq!(text(h.await.unwrap()).as_deref(), Some(want));
    }
    assert_eq!(text(p1.await.unwrap()).as_deref(), Some("partial 1"));
    assert_eq!(text(p2.await.unwrap()).as_deref(), Some("partial 2"));
    let s = q.status();
    assert_eq!(
        (s.inflight, s.finals_waiting, s.partials_waiting),
        (0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_sessions_newer_partial_replaces_its_waiting_one() {
    let metrics = crate::telemetry::metrics::DecodeQueueMetrics::default();
    let q = Scheduler::new(1, crate::config::QueueOrder::FinalsFirst, metrics.clone());
    let log = Log::default();
    let (a, release_a) = held(&log, "final");
    let a = spawn(q.run_final(a));
    settle().await;
    let p1 = spawn(q.run_partial(7, quick(&log, "partial 1")));
    settle().await;
    let p2 = spawn(q.run_partial(7, quick(&log, "partial 2")));
    settle().await;
    let p3 = spawn(q.run_partial(7, quick(&log, "partial 3")));
    let other = spawn(q.run_partial(8, quick(&log, "other session")));
    settle().await;
    assert_eq!(q.status().partials_waiting, 2, "one slot per session");
    release_a.send(()).unwrap();
    settle().await;
    assert_eq!(text(a.await.unwrap()).as_deref(), Some("final"));
    assert_eq!(text(p1.await.unwrap()), None, "replaced: no request");
    assert_eq!(text(p2.await.unwrap()), None, "replaced: no request");
    assert_eq!(text(p3.await.unwrap()).as_deref(), Some("partial 3"));
    assert_eq!(text(other.await.unwrap()).as_deref(), Some("other session"));
    assert_eq!(log.started(), ["final", "partial 3", "other session"]);
    assert_eq!(metrics.partials_skipped.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn partials_pause_while_finals_back_up_and_resume_when_they_clear() {
    let q = Scheduler::new(
        1,
        crate::config::QueueOrder::FinalsFirst,
        Default::default(),
    );
    let mut paused = q.paused();
    let log = Log::default();
    let (a, release_a) = held(&log, "final a");
    let a = spawn(q.run_final(a));
    settle().await;
    let waiting = spawn(q.run_partial(1, quick(&log, "partial waiting")));
    settle().await;
    assert!(!*paused.borrow_and_update());
    // a final now waits: a whole slot's worth backed up
    let (b, release_b) = held(&log, "final b");
    let b = spawn(q.run_final(b));
    settle().await;
    assert!(paused.has_changed().unwrap() && *paused.borrow_and_update());
    assert_eq!(text(waiting.await.unwrap()), None, "skipped by the pause");
    let refused = q.run_partial(2, quick(&log, "partial refused")).await;
    assert_eq!(
        text(refused),
        None,
        "refused while paused, without a request"
    );
    release_a.send(()).unwrap();
    settle().await;
    // b runs, no final waits: partials resume
    assert!(paused.has_changed().unwrap() && !*paused.borrow_and_update());
    let later = spawn(q.run_partial(3, quick(&log, "partial later")));
    settle().await;
    release_b.send(()).unwrap();
    settle().await;
    assert_eq!(text(later.await.unwrap()).as_deref(), Some("partial later"));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(log.started(), ["final a", "final b", "partial later"]);
}

#[tokio::test(start_paused = true)]
async fn a_final_waiting_too_long_pauses_partials() {
    let q = Scheduler::new(
        4,
        crate::config::QueueOrder::FinalsFirst,
        Default::default(),
    );
    let log = Log::default();
    let mut releases = Vec::new();
    let mut running = Vec::new();
    for name in ["f1", "f2", "f3", "f4"] {
        let (d, r) = held(&log, name);
        running.push(spawn(q.run_final(d)));
        releases.push(r);
    }
    settle().await;
    let late = spawn(q.run_final(quick(&log, "f5")));
    settle().await;
    assert!(!*q.paused().borrow(), "one final waiting of four slots");
    tokio::time::sleep(PAUSE_AFTER).await;
    let p = q.run_partial(1, quick(&log, "partial")).await;
    assert!(
        *q.paused().borrow(),
        "the oldest final waited {PAUSE_AFTER:?}"
    );
    assert_eq!(text(p), None);
    for r in releases {
        r.send(()).unwrap();
    }
    settle().await;
    late.await.unwrap().unwrap();
    assert!(!*q.paused().borrow());
    assert!(!log.started().contains(&"partial"));
}

#[tokio::test(start_paused = true)]
async fn the_finals_queue_is_bounded_and_a_refused_final_is_an_error() {
    let q = Scheduler::new(
        1,
        crate::config::QueueOrder::FinalsFirst,
        Default::default(),
    );
    let log = Log::default();
    let (a, release_a) = held(&log, "running");
    let a = spawn(q.run_final(a));
    settle().await;
    let queued: Vec<Answer> = (0..MAX_QUEUED_FINALS)
        .map(|_| spawn(q.run_final(quick(&log, "queued"))))
        .collect();
    settle().await;
    assert_eq!(q.status().finals_waiting, MAX_QUEUED_FINALS);
    let e = q
        .run_final(quick(&log, "refused"))
        .await
        .expect_err("the queue is full");
    assert!(e.is_retryable(), "the session fails over: {e}");
    release_a.send(()).unwrap();
    for h in queued {
        assert!(h.await.unwrap().is_ok());
    }
    a.await.unwrap().unwrap();
    assert!(!log.started().contains(&"refused"));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_session_went_away_takes_no_slot_and_no_request() {
    let q = Scheduler::new(
        1,
        crate::config::QueueOrder::FinalsFirst,
        Default::default(),
    );
    let log = Log::default();
    let (a, release_a) = held(&log, "running");
    let a = spawn(q.run_final(a));
    settle().await;
    let gone = spawn(q.run_final(quick(&log, "gone")));
    let next = spawn(q.run_final(quick(&log, "next")));
    settle().await;
    gone.abort(); // its session ended while it waited
    settle().await;
    release_a.send(()).unwrap();
    settle().await;
    a.await.unwrap().unwrap();
    assert_eq!(text(next.await.unwrap()).as_deref(), Some("next"));
    assert_eq!(log.started(), ["running", "next"]);
    let s = q.status();
    assert_eq!((s.inflight, s.finals_waiting), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn fifo_keeps_the_bound_and_arrival_order_and_never_pauses() {
    let q = Scheduler::new(1, crate::config::QueueOrder::Fifo, Default::default());
    let log = Log::default();
    let (a, release_a) = held(&log, "final a");
    let a = spawn(q.run_final(a));
    settle().await;
    let step = || tokio::time::advance(std::time::Duration::from_millis(1));
    let p1 = spawn(q.run_partial(1, quick(&log, "partial 1")));
    settle().await;
    step().await;
    // the same session's newer partial does not replace the waiting one
    let p1b = spawn(q.run_partial(1, quick(&log, "partial 1 again")));
    settle().await;
    step().await;
    let b = spawn(q.run_final(quick(&log, "final b")));
    settle().await;
    step().await;
    let p2 = spawn(q.run_partial(2, quick(&log, "partial 2")));
    settle().await;
    // finals wait longer than PAUSE_AFTER behind the held one: still no pause
    tokio::time::advance(PAUSE_AFTER * 2).await;
    let c = spawn(q.run_final(quick(&log, "final c")));
    settle().await;
    assert!(!*q.paused().borrow(), "fifo never pauses partials");
    let s = q.status();
    assert_eq!(
        (s.inflight, s.finals_waiting, s.partials_waiting),
        (1, 2, 3)
    );
    release_a.send(()).unwrap();
    settle().await;
    assert_eq!(
        log.started(),
        [
            "final a",
            "partial 1",
            "partial 1 again",
            "final b",
            "partial 2",
            "final c"
        ]
    );
    for h in [a, p1, p1b, b, p2, c] {
        assert!(text(h.await.unwrap()).is_some(), "every request answered");
    }
}
