//! The engine's invariants, in memory: an in-memory [`SpeechBackend`] whose streams the
//! test drives (it reads what the engine sent and answers or fails on cue), channels for
//! the client's side, and paused tokio time for every timer (stall, retry backoff, flush,
//! write deadline). No socket, no gRPC, no real sleep.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::channel::mpsc as fmpsc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::super::{
    CloseCause, Command, ErrorKind, Event, Outcome, SessionContext, Shutdown, StartConfig,
    StatusState, Transcript,
};
use crate::backend::{
    AudioStream, BackendError, BackendErrorKind, EventStream, Health, RecognitionParams,
    SpeechBackend, StreamWord, TranscriptEvent,
};
use crate::config::{HealthSettings, SessionLimits, TwoPassSettings};
use crate::error::ErrorClass;
use crate::resilience::admission::{Admission, AdmissionSettings};
use crate::resilience::breaker::BreakerSettings;
use crate::resilience::retry::{RetryBudget, RetrySettings};
use crate::router::{Member, Router};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::throttle::SessionLogs;

const RATE: u32 = 16_000;

/// One stream the engine opened on a [`FakeBackend`]: the audio it sends, and the sender
/// of what the back end answers. Dropping `answers` ends the event stream cleanly.
struct Opened {
    backend: String,
    audio: AudioStream,
    answers: mpsc::UnboundedSender<Result<TranscriptEvent, BackendError>>,
}

impl Opened {
    /// Reads exactly `n` bytes of audio (PCM16LE at [`RATE`]).
    async fn read(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            let chunk = self.audio.next().await.expect("audio stream open");
            out.extend_from_slice(&chunk);
        }
        assert_eq!(out.len(), n, "read across a chunk boundary");
        out
    }

    /// Everything left on the audio stream until the engine half-closes it.
    async fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = self.audio.next().await {
            out.extend_from_slice(&chunk);
        }
        out
    }

    fn answer(&self, ev: TranscriptEvent) {
        self.answers
            .send(Ok(ev))
            .expect("the engine holds the stream");
    }

    fn fail(&self) {
        let e = BackendError::new(
            BackendErrorKind::Unavailable,
            ErrorClass::UpstreamRetryable,
            "connection reset",
        );
        self.answers
            .send(Err(e))
            .expect("the engine holds the stream");
    }
}

/// An in-memory back end. Each `open` takes the next scripted outcome (default: success)
/// and, on success, hands the stream to the test through `opened`.
struct FakeBackend {
    name: String,
    open_failures: Mutex<VecDeque<BackendError>>,
    opened: mpsc::UnboundedSender<Opened>,
}

#[async_trait]
impl SpeechBackend for FakeBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample_rate_hz(&self) -> u32 {
        RATE
    }

    async fn open(
        &self,
        _params: RecognitionParams,
        audio: AudioStream,
    ) -> Result<EventStream, BackendError> {
        if let Some(e) = self.open_failures.lock().unwrap().pop_front() {
            return Err(e);
        }
        let (answers, rx) = mpsc::unbounded_channel();
        let _ = self.opened.send(Opened {
            backend: self.name.clone(),
            audio,
            answers,
        });
        Ok(UnboundedReceiverStream::new(rx).boxed())
    }

    async fn health(&self) -> Health {
        Health::Up
    }
}

fn limits() -> SessionLimits {
    SessionLimits {
        max_frame: Duration::from_secs(1),
        queue: Duration::from_secs(10),
        replay: Duration::from_secs(60),
        flush_timeout: Duration::from_secs(5),
        stall_timeout: None,
        drain_timeout: Duration::from_secs(30),
        idle_timeout: None,
        max_duration: None,
        lag_warning: None,
        write_timeout: Duration::from_secs(10),
    }
}

fn retry() -> RetrySettings {
    RetrySettings {
        attempts: 2,
        initial_backoff: Duration::from_millis(200),
        multiplier: 2.0,
        max_backoff: Duration::from_secs(2),
        budget_percent: 100.0,
        budget_min_per_second: 10,
        budget_window: Duration::from_secs(10),
    }
}

/// A session under test: the engine's task, the client's two channels and the streams it
/// opens.
struct Session {
    commands: mpsc::UnboundedSender<Command>,
    events: fmpsc::Receiver<Event>,
    opened: mpsc::UnboundedReceiver<Opened>,
    shutdown: Shutdown,
    task: JoinHandle<Outcome>,
}

struct Setup {
    limits: SessionLimits,
    /// Back ends of the `default` route, in route order, with the opens that fail first.
    backends: Vec<(&'static str, Vec<BackendError>)>,
    /// Events the client side buffers before a write has to wait.
    client_buffer: usize,
    /// Two-pass: `default`'s finals go to route `finals`, served by this back end.
    two_pass: TwoPassSettings,
    finals: Option<Arc<dyn SpeechBackend>>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            limits: limits(),
            backends: vec![("a", Vec::new()), ("b", Vec::new())],
            client_buffer: 256,
            two_pass: TwoPassSettings::default(),
            finals: None,
        }
    }
}

impl Setup {
    fn start(self) -> Session {
        let metrics = Arc::new(Metrics::new());
        let (opened_tx, opened) = mpsc::unbounded_channel();
        let backends: Vec<Member> = self
            .backends
            .into_iter()
            .map(|(name, failures)| {
                Member::new(Arc::new(FakeBackend {
                    name: name.to_string(),
                    open_failures: Mutex::new(failures.into()),
                    opened: opened_tx.clone(),
                }))
            })
            .collect();
        let mut routes = vec![("default".to_string(), backends)];
        if let Some(f) = self.finals.clone() {
            routes.push(("finals".to_string(), vec![Member::new(f)]));
        }
        let router = Arc::new(Router::new(
            routes,
            HealthSettings {
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                unhealthy_after: 2,
                healthy_after: 2,
            },
            BreakerSettings {
                failures: 5,
                open_for: Duration::from_secs(10),
            },
            metrics.clone(),
        ));
        let shutdown = Shutdown::new();
        let ctx = Arc::new(SessionContext {
            router,
            metrics,
            limits: self.limits,
            retry: retry(),
            budget: RetryBudget::new(&retry()),
            shutdown: shutdown.clone(),
            logs: SessionLogs::new(0),
            two_pass: self.two_pass.clone(),
        });
        let admission = Arc::new(Admission::new(AdmissionSettings {
            max_sessions: 10,
            route_max_sessions: HashMap::new(),
            route_names: vec!["default".into()],
            shed_lagging_percent: 0,
            max_delay: None,
            retry_after: Duration::from_secs(1),
        }));
        let ticket = admission.admit().expect("a place");
        let (commands, rx) = mpsc::unbounded_channel();
        let (events_tx, events) = fmpsc::channel(self.client_buffer);
        let task = tokio::spawn(super::run(
            ctx,
            "test",
            ticket,
            None,
            UnboundedReceiverStream::new(rx),
            events_tx,
        ));
        Session {
            commands,
            events,
            opened,
            shutdown,
            task,
        }
    }
}

impl Session {
    fn send(&self, cmd: Command) {
        self.commands.send(cmd).expect("the engine reads commands");
    }

    fn start(&self) {
        self.send(Command::Start(StartConfig {
            sample_rate: RATE,
            ..StartConfig::default()
        }));
    }

    async fn opened(&mut self) -> Opened {
        self.opened.recv().await.expect("a stream is opened")
    }

    async fn next(&mut self) -> Event {
        self.events.next().await.expect("an event before the close")
    }

    /// The next event that is not a status.
    async fn next_result(&mut self) -> Event {
        loop {
            match self.next().await {
                Event::Status { .. } => continue,
                other => return other,
            }
        }
    }

    async fn outcome(self) -> Outcome {
        self.task.await.expect("the engine does not panic")
    }
}

/// `ms` of audio whose every sample names its position (sample i of the session = i mod
/// 32768), so any loss, duplication or reordering shows when compared byte for byte.
fn audio(from_ms: u64, ms: u64) -> Vec<u8> {
    let first = from_ms * u64::from(RATE) / 1000;
    let n = ms * u64::from(RATE) / 1000;
    (first..first + n)
        .flat_map(|i| ((i % 32_768) as i16).to_le_bytes())
        .collect()
}

fn bytes(ms: u64) -> usize {
    (ms * u64::from(RATE) / 1000) as usize * 2
}

fn result(is_final: bool, text: &str, words: &[(u64, u64)]) -> TranscriptEvent {
    TranscriptEvent {
        is_final,
        text: text.into(),
        confidence: 0.9,
        stability: 1.0,
        audio_processed_ms: None,
        words: words
            .iter()
            .map(|&(start_ms, end_ms)| StreamWord {
                word: text.into(),
                start_ms,
                end_ms,
                confidence: 0.9,
                speaker: None,
            })
            .collect(),
        received_at: Instant::now(),
        local: false,
        notice: None,
    }
}

fn transcript(ev: Event) -> Transcript {
    match ev {
        Event::Final(t) => t,
        Event::Partial(t) => std::sync::Arc::unwrap_or_clone(t),
        other => panic!("expected a result, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_stream_is_replaced_and_fed_exactly_the_audio_since_the_last_final() {
    let mut s = Setup::default().start();
    s.start();
    for i in 0..3 {
        s.send(Command::Audio(audio(i * 1_000, 1_000).into()));
    }
    let mut a = s.opened().await;
    assert_eq!(a.backend, "a");
    assert_eq!(a.read(bytes(3_000)).await, audio(0, 3_000));
    a.answer(result(true, "one", &[(100, 1_000)]));
    let first = transcript(s.next_result().await);
    assert_eq!((first.text.as_str(), first.duration_ms), ("one", 1_000));

    a.fail();
    let mut b = s.opened().await;
    assert_eq!(
        b.backend, "b",
        "fails over to the next back end of the route"
    );
    // The replay: audio from the last final's cut (1 s), nothing before, nothing twice.
    assert_eq!(b.read(bytes(2_000)).await, audio(1_000, 2_000));
    s.send(Command::Audio(audio(3_000, 500).into()));
    assert_eq!(b.read(bytes(500)).await, audio(3_000, 500));

    // Stream time 0 on `b` is session time 1 s.
    b.answer(result(true, "two", &[(200, 1_500)]));
    let second = transcript(s.next_result().await);
    assert_eq!(second.text, "two");
    assert_eq!(
        second.duration_ms, 1_500,
        "from the previous cut to its last word"
    );
    let w = &second.words.unwrap()[0];
    assert_eq!((w.start, w.end), (1.2, 2.5));

    s.send(Command::End);
    assert!(
        b.read_to_end().await.is_empty(),
        "end half-closes the stream"
    );
    drop(b);
    assert_eq!(s.next().await, Event::Close(CloseCause::Normal));
    assert_eq!(s.outcome().await, Outcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn the_client_is_told_when_the_session_moves_to_another_back_end() {
    let mut s = Setup::default().start();
    s.start();
    s.send(Command::Audio(audio(0, 500).into()));
    let a = s.opened().await;
    a.answer(result(false, "hi", &[(0, 300)]));
    assert!(matches!(s.next().await, Event::Partial(_)));
    a.fail();
    let _b = s.opened().await;
    match s.next().await {
        Event::Status { state, .. } => assert_eq!(state, StatusState::Failover),
        other => panic!("expected the failover status, got {other:?}"),
    }
}

// Real time: the frame log keeps arrival instants of the system clock, which paused tokio
// time does not move.
#[tokio::test]
async fn the_replay_after_a_failover_is_not_taken_for_lag() {
    let mut s = Setup {
        limits: SessionLimits {
            lag_warning: Some(Duration::from_millis(200)),
            ..limits()
        },
        ..Setup::default()
    }
    .start();
    s.start();
    for i in 0..3 {
        s.send(Command::Audio(audio(i * 1_000, 1_000).into()));
    }
    let a = s.opened().await;
    // The audio ages: it arrived 400 ms before the failure.
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.fail();
    let b = s.opened().await;
    assert!(matches!(
        s.next().await,
        Event::Status {
            state: StatusState::Failover,
            ..
        }
    ));
    // The new stream works through the 3 s of replay: half-way is not lag.
    let mut half = result(false, "part", &[(0, 400)]);
    half.audio_processed_ms = Some(1_500);
    b.answer(half);
    match s.next().await {
        Event::Partial(_) => {}
        other => panic!("expected the partial and no lag notice, got {other:?}"),
    }
    // Past the replay, a back end that trails fresh audio is lagging.
    s.send(Command::Audio(audio(3_000, 1_000).into()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut behind = result(false, "part", &[(0, 400)]);
    behind.audio_processed_ms = Some(3_100);
    b.answer(behind);
    match s.next().await {
        Event::Status { state, .. } => assert_eq!(state, StatusState::BackendLagging),
        other => panic!("expected the lag notice, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn finals_stay_append_only_when_a_late_result_reaches_back_before_the_cut() {
    let mut s = Setup::default().start();
    s.start();
    for i in 0..3 {
        s.send(Command::Audio(audio(i * 1_000, 1_000).into()));
    }
    let a = s.opened().await;
    a.answer(result(true, "one", &[(0, 2_000)]));
    a.answer(result(true, "late", &[(500, 1_500)]));
    a.answer(result(true, "three", &[(2_100, 2_900)]));
    let durations: Vec<u64> = [
        s.next_result().await,
        s.next_result().await,
        s.next_result().await,
    ]
    .into_iter()
    .map(|e| transcript(e).duration_ms)
    .collect();
    assert_eq!(
        durations,
        vec![2_000, 0, 900],
        "the durations tile the audio"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_hears_nothing_is_taken_for_stalled_and_replaced() {
    let mut s = Setup {
        limits: SessionLimits {
            stall_timeout: Some(Duration::from_secs(2)),
            ..limits()
        },
        ..Setup::default()
    }
    .start();
    s.start();
    s.send(Command::Audio(audio(0, 500).into()));
    let mut a = s.opened().await;
    a.read(bytes(500)).await;
    let started = tokio::time::Instant::now();
    // `a` never answers: the paused clock runs to the stall deadline.
    let mut b = s.opened().await;
    assert_eq!(b.backend, "b");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert!(
        a.answers.is_closed(),
        "the stalled stream was dropped (cancelled)"
    );
    assert_eq!(b.read(bytes(500)).await, audio(0, 500));
}

#[tokio::test(start_paused = true)]
async fn end_flushes_the_last_results_then_closes_and_an_unfinished_partial_becomes_final() {
    let mut s = Setup::default().start();
    s.start();
    s.send(Command::Audio(audio(0, 1_000).into()));
    let mut a = s.opened().await;
    a.read(bytes(1_000)).await;
    a.answer(TranscriptEvent {
        audio_processed_ms: Some(800),
        ..result(false, "partial words", &[(0, 700)])
    });
    assert_eq!(transcript(s.next().await).text, "partial words");
    s.send(Command::End);
    // The resampler's tail (none at the same rate), then the half-close.
    assert!(a.read_to_end().await.is_empty());
    drop(a); // the back end ends its stream without a final
    let last = s.next().await;
    match &last {
        Event::Final(t) => {
            assert_eq!(t.text, "partial words");
            assert_eq!(t.duration_ms, 800, "up to what the partial accounted for");
        }
        other => panic!("expected the promoted final, got {other:?}"),
    }
    assert_eq!(s.next().await, Event::Close(CloseCause::Normal));
    assert_eq!(s.outcome().await, Outcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_back_end_that_never_finishes_after_end_is_cut_at_the_flush_timeout_and_said_so() {
    let mut s = Setup::default().start();
    s.start();
    s.send(Command::Audio(audio(0, 1_000).into()));
    s.send(Command::Audio(audio(1_000, 1_000).into()));
    let mut a = s.opened().await;
    a.read(bytes(2_000)).await;
    s.send(Command::End);
    assert!(a.read_to_end().await.is_empty());
    let before = tokio::time::Instant::now();
    // `a` holds its stream open and says nothing.
    match s.next().await {
        Event::Status { state, message } => {
            assert_eq!(state, StatusState::AudioGap);
            assert!(message.contains("0.000 s to 2.000 s"), "{message}");
        }
        other => panic!("expected the audio-gap status, got {other:?}"),
    }
    assert_eq!(before.elapsed(), Duration::from_secs(5));
    assert_eq!(s.next().await, Event::Close(CloseCause::Normal));
    assert_eq!(s.outcome().await, Outcome::FlushTimeout);
}

#[tokio::test(start_paused = true)]
async fn a_drain_flushes_pending_finals_then_closes_going_away() {
    let mut s = Setup::default().start();
    s.start();
    s.send(Command::Audio(audio(0, 1_000).into()));
    let mut a = s.opened().await;
    a.read(bytes(1_000)).await;
    s.shutdown.cancel();
    assert!(
        a.read_to_end().await.is_empty(),
        "the drain half-closes the stream"
    );
    a.answer(result(true, "last words", &[(0, 900)]));
    drop(a);
    assert_eq!(transcript(s.next().await).text, "last words");
    assert_eq!(s.next().await, Event::Close(CloseCause::GoingAway));
    assert_eq!(s.outcome().await, Outcome::ShutDown);
}

#[tokio::test(start_paused = true)]
async fn audio_beyond_the_queue_is_refused_by_name_not_dropped() {
    let mut s = Setup {
        limits: SessionLimits {
            queue: Duration::from_secs(2),
            ..limits()
        },
        ..Setup::default()
    }
    .start();
    s.start();
    // The back end takes nothing: 2 s of queue hold two frames of 1 s; the third is refused.
    for i in 0..3 {
        s.send(Command::Audio(audio(i * 1_000, 1_000).into()));
    }
    let _a = s.opened().await;
    match s.next().await {
        Event::Error(e) => {
            assert_eq!(e.kind, ErrorKind::BufferOverflow);
            assert!(e.message.contains("audio frame 3"), "{}", e.message);
        }
        other => panic!("expected the overflow error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_paced_source_waits_for_the_back_end_instead_of_overflowing() {
    let mut s = Setup {
        limits: SessionLimits {
            queue: Duration::from_secs(2),
            ..limits()
        },
        ..Setup::default()
    }
    .start();
    // A file: six frames of 1 s at once, four times what the queue holds.
    s.send(Command::Start(StartConfig {
        sample_rate: RATE,
        paced: true,
        ..StartConfig::default()
    }));
    for i in 0..6 {
        s.send(Command::Audio(audio(i * 1_000, 1_000).into()));
    }
    s.send(Command::End);
    let mut a = s.opened().await;
    // The back end reads nothing for a while: the session takes no more than half the
    // queue meanwhile (a second frame would exceed it), and refuses nothing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(s.events.try_recv().is_err(), "no event while waiting");
    // Then it reads slowly; every sample arrives, in order, with nothing refused.
    let mut got = Vec::new();
    for _ in 0..6 {
        got.extend(a.read(bytes(1_000)).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(got, audio(0, 6_000));
    assert!(
        a.read_to_end().await.is_empty(),
        "half-closed after the sixth"
    );
    a.answer(result(true, "done", &[(0, 6_000)]));
    drop(a);
    match s.next_result().await {
        Event::Final(t) => assert_eq!(t.text, "done"),
        other => panic!("expected the final, got {other:?}"),
    }
    assert_eq!(s.outcome().await, Outcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn an_utterance_end_follows_a_gap_in_the_words_once() {
    let mut s = Setup::default().start();
    s.send(Command::Start(StartConfig {
        sample_rate: RATE,
        utterance_end_ms: Some(1_000),
        ..StartConfig::default()
    }));
    s.send(Command::Audio(audio(0, 1_000).into()));
    let mut a = s.opened().await;
    a.read(bytes(1_000)).await;
    // Words up to 0.8 s, final.
    a.answer(result(true, "hello", &[(100, 800)]));
    assert!(matches!(s.next_result().await, Event::Final(_)));
    // Audio runs on without words: at 1.8 s of audio the gap is 1 s.
    for i in 0..4 {
        s.send(Command::Audio(audio(1_000 + i * 250, 250).into()));
    }
    match s.next_result().await {
        Event::UtteranceEnd { last_word_end_ms } => assert_eq!(last_word_end_ms, 800),
        other => panic!("expected the utterance end, got {other:?}"),
    }
    // More silence: no second one; new words, then a gap: another.
    s.send(Command::Audio(audio(2_000, 1_000).into()));
    a.read(bytes(2_000)).await;
    a.answer(result(false, "again", &[(2_100, 2_500)]));
    assert!(matches!(s.next_result().await, Event::Partial(_)));
    // An open partial with words holds the utterance end back, however long the audio.
    s.send(Command::Audio(audio(3_000, 1_000).into()));
    a.read(bytes(1_000)).await;
    a.answer(result(true, "again", &[(2_100, 2_500)]));
    assert!(matches!(s.next_result().await, Event::Final(_)));
    s.send(Command::Audio(audio(4_000, 100).into()));
    match s.next_result().await {
        Event::UtteranceEnd { last_word_end_ms } => assert_eq!(last_word_end_ms, 2_500),
        other => panic!("expected the second utterance end, got {other:?}"),
    }
}

/// An adapter's own idle signal (an endpointing adapter waiting for speech) is not an
/// answer from the server: streams that said only that and then failed are failures of
/// one episode, which ends within the retry policy (before `TranscriptEvent::idle`, each
/// idle signal ended the episode and the session moved between the two back ends forever).
#[tokio::test(start_paused = true)]
async fn idle_signals_do_not_end_a_failure_episode() {
    let mut s = Setup::default().start();
    s.start();
    s.send(Command::Audio(audio(0, 500).into()));
    let mut held = Vec::new();
    loop {
        tokio::select! {
            Some(o) = s.opened.recv() => {
                o.answer(TranscriptEvent::idle(Instant::now()));
                o.fail();
                held.push(o);
                assert!(held.len() <= 20, "the episode never ends: {} opens", held.len());
            }
            ev = s.events.next() => match ev.expect("an event before the close") {
                Event::Error(e) => {
                    assert_eq!(e.kind, ErrorKind::ModelUnavailable);
                    break;
                }
                _ => continue,
            },
        }
    }
    // each back end once, then each of the 2 retries tries the route again
    assert_eq!(held.len(), 2 * (1 + 2));
}

#[tokio::test(start_paused = true)]
async fn when_every_back_end_keeps_failing_the_client_gets_model_unavailable() {
    let down = || {
        BackendError::new(
            BackendErrorKind::Unavailable,
            ErrorClass::UpstreamRetryable,
            "refused",
        )
    };
    // Each back end fails its first three opens: the first round and two retries.
    let mut s = Setup {
        backends: vec![
            ("a", vec![down(), down(), down()]),
            ("b", vec![down(), down(), down()]),
        ],
        ..Setup::default()
    }
    .start();
    s.start();
    let started = tokio::time::Instant::now();
    match s.next().await {
        Event::Error(e) => {
            assert_eq!(e.kind, ErrorKind::ModelUnavailable);
            assert!(e.message.contains("after 2 retries"), "{}", e.message);
        }
        other => panic!("expected MODEL_UNAVAILABLE, got {other:?}"),
    }
    // Two backoffs passed: 200 ms and 400 ms, each jittered to 50-100 %.
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(300)..=Duration::from_millis(600)).contains(&waited),
        "{waited:?}"
    );
    assert!(s.opened.try_recv().is_err(), "no stream was ever opened");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_cut_off_at_the_write_timeout() {
    let s = Setup {
        limits: SessionLimits {
            write_timeout: Duration::from_secs(3),
            ..limits()
        },
        client_buffer: 0,
        ..Setup::default()
    }
    .start();
    // Pongs the client never reads: the channel holds one (and one per sender), the next
    // write waits until the deadline.
    for _ in 0..4 {
        s.send(Command::Ping(serde_json::json!(1)));
    }
    let Session {
        task,
        events,
        commands,
        ..
    } = s;
    let started = tokio::time::Instant::now();
    assert_eq!(task.await.unwrap(), Outcome::SlowClient);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    drop((events, commands));
}

#[tokio::test(start_paused = true)]
async fn finalize_turns_the_open_utterance_into_a_final_and_goes_on_on_a_new_stream() {
    let mut s = Setup::default().start();
    s.start();
    s.send(Command::Audio(audio(0, 1_000).into()));
    let mut a = s.opened().await;
    a.read(bytes(1_000)).await;
    a.answer(result(false, "hello", &[(100, 800)]));
    assert_eq!(transcript(s.next().await).text, "hello");
    s.send(Command::Finalize);
    assert!(
        a.read_to_end().await.is_empty(),
        "finalize half-closes the stream"
    );
    // Audio that comes while the back end finishes is kept for the next stream.
    s.send(Command::Audio(audio(1_000, 500).into()));
    drop(a); // the back end ends the stream without a final of its own
    let fin = s.next().await;
    match &fin {
        Event::Final(t) => {
            assert_eq!((t.text.as_str(), t.duration_ms), ("hello", 1_000));
            assert!(t.from_finalize, "the promoted final says Finalize made it");
        }
        other => panic!("expected the promoted final, got {other:?}"),
    }
    assert_eq!(
        s.next().await,
        Event::Finalized,
        "then the Finalize is done"
    );
    let mut b = s.opened().await;
    assert_eq!(
        b.read(bytes(500)).await,
        audio(1_000, 500),
        "exactly the audio since"
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_finalize_the_next_stream_waits_for_audio() {
    let mut s = Setup::default().start();
    s.start();
    s.send(Command::Audio(audio(0, 1_000).into()));
    let mut a = s.opened().await;
    a.read(bytes(1_000)).await;
    s.send(Command::Finalize);
    assert!(a.read_to_end().await.is_empty());
    a.answer(result(true, "one", &[(0, 1_000)]));
    drop(a);
    assert_eq!(transcript(s.next().await).text, "one");
    assert_eq!(s.next().await, Event::Finalized);
    // No audio: no stream.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s.opened.try_recv().is_err(), "a stream opened for nothing");
    // Audio opens one, fed exactly that audio.
    s.send(Command::Audio(audio(1_000, 500).into()));
    let mut b = s.opened().await;
    assert_eq!(b.read(bytes(500)).await, audio(1_000, 500));
    b.answer(result(true, "two", &[(0, 500)]));
    assert_eq!(transcript(s.next_result().await).text, "two");
    // Another Finalize, then end with nothing after it: the session closes at once.
    s.send(Command::Finalize);
    assert!(b.read_to_end().await.is_empty());
    drop(b);
    assert_eq!(s.next().await, Event::Finalized);
    s.send(Command::End);
    assert_eq!(s.next().await, Event::Close(CloseCause::Normal));
    assert_eq!(s.outcome().await, Outcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_finalize_during_a_finalize_is_answered_on_its_own() {
    let mut s = Setup::default().start();
    s.start();
    s.send(Command::Audio(audio(0, 1_000).into()));
    let mut a = s.opened().await;
    a.read(bytes(1_000)).await;
    s.send(Command::Finalize);
    s.send(Command::Audio(audio(1_000, 500).into()));
    s.send(Command::Finalize);
    assert!(a.read_to_end().await.is_empty());
    a.answer(result(true, "one", &[(0, 1_000)]));
    drop(a);
    assert_eq!(transcript(s.next().await).text, "one");
    assert_eq!(s.next().await, Event::Finalized, "the first");
    // The second runs on the stream that took the audio since: it is half-closed at once.
    let mut b = s.opened().await;
    assert_eq!(b.read_to_end().await, audio(1_000, 500));
    b.answer(result(true, "two", &[(0, 500)]));
    drop(b);
    let two = transcript(s.next().await);
    assert_eq!((two.text.as_str(), two.from_finalize), ("two", true));
    assert_eq!(s.next().await, Event::Finalized, "the second");
}

#[tokio::test(start_paused = true)]
async fn end_right_after_finalize_still_transcribes_the_audio_that_followed() {
    let mut s = Setup::default().start();
    s.start();
    s.send(Command::Audio(audio(0, 1_000).into()));
    let mut a = s.opened().await;
    a.read(bytes(1_000)).await;
    s.send(Command::Finalize);
    s.send(Command::Audio(audio(1_000, 1_000).into()));
    s.send(Command::End);
    assert!(a.read_to_end().await.is_empty());
    a.answer(result(true, "one", &[(0, 1_000)]));
    drop(a);
    let one = transcript(s.next().await);
    assert_eq!((one.text.as_str(), one.from_finalize), ("one", true));
    assert_eq!(s.next().await, Event::Finalized, "the Finalize is done");
    // A stream for the second's audio, half-closed once it is replayed.
    let mut b = s.opened().await;
    assert_eq!(b.read_to_end().await, audio(1_000, 1_000));
    b.answer(result(true, "two", &[(0, 900)]));
    drop(b);
    let two = transcript(s.next().await);
    assert_eq!((two.text.as_str(), two.duration_ms), ("two", 900));
    assert!(!two.from_finalize, "end, not Finalize, brought this one");
    assert_eq!(s.next().await, Event::Close(CloseCause::Normal));
    assert_eq!(s.outcome().await, Outcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_client_without_an_end_message_that_leaves_when_answered_completed() {
    for (answered, ends_by_closing, expected) in [
        (true, true, Outcome::Completed),
        (false, true, Outcome::ClientGone),
        (true, false, Outcome::ClientGone),
    ] {
        let mut s = Setup::default().start();
        s.send(Command::Start(StartConfig {
            sample_rate: RATE,
            ends_by_closing,
            ..StartConfig::default()
        }));
        s.send(Command::Audio(audio(0, 1_000).into()));
        let mut a = s.opened().await;
        a.read(bytes(1_000)).await;
        s.send(Command::Finalize);
        assert!(a.read_to_end().await.is_empty());
        if answered {
            a.answer(result(true, "one", &[(0, 1_000)]));
            drop(a);
            assert_eq!(transcript(s.next().await).text, "one");
            assert_eq!(s.next().await, Event::Finalized);
        }
        // The client closes its socket: the command stream ends.
        let task = s.task;
        drop(s.commands);
        assert_eq!(
            task.await.expect("the engine does not panic"),
            expected,
            "answered {answered}, ends_by_closing {ends_by_closing}"
        );
    }
}

/// A finals route's back end for two-pass tests: each `recognize` takes the next scripted
/// answer after its delay, and records the audio it was given.
struct Finals {
    answers: Mutex<VecDeque<(Duration, Result<TranscriptEvent, BackendError>)>>,
    heard: Mutex<Vec<Vec<u8>>>,
}

#[async_trait]
impl SpeechBackend for Finals {
    fn name(&self) -> &str {
        "finals"
    }

    fn sample_rate_hz(&self) -> u32 {
        RATE
    }

    async fn open(
        &self,
        _: RecognitionParams,
        _: AudioStream,
    ) -> Result<EventStream, BackendError> {
        unreachable!("the quality pass recognizes whole utterances")
    }

    async fn health(&self) -> Health {
        Health::Up
    }

    async fn recognize(
        &self,
        _: RecognitionParams,
        pcm: bytes::Bytes,
    ) -> Result<TranscriptEvent, BackendError> {
        self.heard.lock().unwrap().push(pcm.to_vec());
        let (delay, answer) = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .expect("a scripted answer");
        tokio::time::sleep(delay).await;
        answer
    }
}

fn two_pass_setup(
    answers: Vec<(Duration, Result<TranscriptEvent, BackendError>)>,
) -> (Setup, Arc<Finals>) {
    let finals = Arc::new(Finals {
        answers: Mutex::new(answers.into()),
        heard: Mutex::new(Vec::new()),
    });
    let setup = Setup {
        backends: vec![("a", Vec::new())],
        two_pass: TwoPassSettings {
            routes: [("default".to_string(), "finals".to_string())].into(),
            deadline: Duration::from_secs(3),
            pad: Duration::ZERO,
        },
        finals: Some(finals.clone() as Arc<dyn SpeechBackend>),
        ..Setup::default()
    };
    (setup, finals)
}

#[tokio::test(start_paused = true)]
async fn two_pass_finals_carry_the_quality_text_in_order_and_partials_cover_held_finals() {
    let (setup, finals) = two_pass_setup(vec![
        // The first utterance's quality pass is slower than the second's.
        (
            Duration::from_millis(500),
            Ok(result(true, "ONE", &[(0, 400), (400, 850)])),
        ),
        (
            Duration::from_millis(100),
            Ok(result(true, "TWO", &[(100, 900)])),
        ),
    ]);
    let mut s = setup.start();
    s.start();
    s.send(Command::Audio(audio(0, 1_000).into()));
    let mut a = s.opened().await;
    a.read(bytes(1_000)).await;
    a.answer(result(true, "one", &[(100, 900)]));
    s.send(Command::Audio(audio(1_000, 1_000).into()));
    a.read(bytes(1_000)).await;
    a.answer(result(false, "two", &[(1_100, 1_500)]));
    // The first final is held: the partial carries its fast text before its own.
    assert_eq!(transcript(s.next().await).text, "one two");
    a.answer(result(true, "two", &[(1_100, 1_900)]));
    let one = match s.next().await {
        Event::Final(t) => t,
        other => panic!("expected the first final, got {other:?}"),
    };
    assert_eq!(one.text, "ONE", "the quality text replaces the fast one");
    let words: Vec<(f64, f64)> = one
        .words
        .unwrap()
        .iter()
        .map(|w| (w.start, w.end))
        .collect();
    assert_eq!(
        words,
        [(0.0, 0.4), (0.4, 0.85)],
        "quality words on the session's timeline"
    );
    assert_eq!(one.duration_ms, 900, "the fast pass's span");
    let two = match s.next().await {
        Event::Final(t) => t,
        other => panic!("expected the second final, got {other:?}"),
    };
    assert_eq!(two.text, "TWO", "in order, though its pass came back first");
    assert_eq!(two.duration_ms, 1_000);
    let w = &two.words.unwrap()[0];
    assert_eq!(
        (w.start, w.end),
        (1.0, 1.8),
        "placed from where its audio began (0.9 s)"
    );
    // Each pass got exactly its utterance's audio: from the previous cut to its own.
    let heard = finals.heard.lock().unwrap().clone();
    assert_eq!(heard, [audio(0, 900), audio(900, 1_000)]);
    s.send(Command::End);
    assert!(a.read_to_end().await.is_empty());
    drop(a);
    assert_eq!(s.next().await, Event::Close(CloseCause::Normal));
    assert_eq!(s.outcome().await, Outcome::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_late_or_failed_quality_pass_yields_the_fast_final_and_no_error() {
    let unavailable = BackendError::new(
        BackendErrorKind::Unavailable,
        ErrorClass::UpstreamRetryable,
        "connection refused",
    );
    let (setup, _finals) = two_pass_setup(vec![
        (
            Duration::from_secs(10),
            Ok(result(true, "LATE", &[(0, 900)])),
        ),
        (Duration::ZERO, Err(unavailable)),
    ]);
    let mut s = setup.start();
    s.start();
    s.send(Command::Audio(audio(0, 1_000).into()));
    let mut a = s.opened().await;
    a.read(bytes(1_000)).await;
    let t0 = tokio::time::Instant::now();
    a.answer(result(true, "one", &[(100, 900)]));
    assert_eq!(transcript(s.next().await).text, "one", "the fast final");
    assert_eq!(t0.elapsed(), Duration::from_secs(3), "at the deadline");
    s.send(Command::Audio(audio(1_000, 1_000).into()));
    a.read(bytes(1_000)).await;
    a.answer(result(true, "two", &[(1_100, 1_900)]));
    match s.next().await {
        Event::Final(t) => assert_eq!(t.text, "two", "the pass failed: the fast final"),
        other => panic!("expected the fast final, got {other:?}"),
    }
    s.send(Command::End);
    assert!(a.read_to_end().await.is_empty());
    drop(a);
    assert_eq!(
        s.next().await,
        Event::Close(CloseCause::Normal),
        "and no error"
    );
}

#[tokio::test(start_paused = true)]
async fn end_waits_for_the_held_finals_before_the_close() {
    let (setup, _finals) = two_pass_setup(vec![(
        Duration::from_millis(700),
        Ok(result(true, "LAST", &[(0, 500)])),
    )]);
    let mut s = setup.start();
    s.start();
    s.send(Command::Audio(audio(0, 1_000).into()));
    let mut a = s.opened().await;
    a.read(bytes(1_000)).await;
    a.answer(result(false, "last", &[(100, 500)]));
    assert_eq!(transcript(s.next().await).text, "last");
    s.send(Command::End);
    assert!(a.read_to_end().await.is_empty());
    drop(a); // the stream ends without a final: the partial is promoted, then held
    match s.next().await {
        Event::Final(t) => assert_eq!(t.text, "LAST"),
        other => panic!("expected the quality final, got {other:?}"),
    }
    assert_eq!(s.next().await, Event::Close(CloseCause::Normal));
}

#[tokio::test(start_paused = true)]
async fn a_promoted_partial_after_a_held_final_does_not_repeat_its_text() {
    let (setup, _finals) = two_pass_setup(vec![
        (
            Duration::from_millis(500),
            Ok(result(true, "ONE", &[(0, 900)])),
        ),
        // The promoted final's pass fails: its own fast text is what goes out.
        (
            Duration::ZERO,
            Err(BackendError::new(
                BackendErrorKind::Unavailable,
                ErrorClass::UpstreamRetryable,
                "connection refused",
            )),
        ),
    ]);
    let mut s = setup.start();
    s.start();
    s.send(Command::Audio(audio(0, 1_000).into()));
    s.send(Command::Audio(audio(1_000, 500).into()));
    let mut a = s.opened().await;
    a.read(bytes(1_000)).await;
    a.read(bytes(500)).await;
    a.answer(result(true, "one", &[(100, 900)]));
    a.answer(result(false, "two", &[(1_000, 1_400)]));
    assert_eq!(
        transcript(s.next().await).text,
        "one two",
        "shown with the held final"
    );
    s.send(Command::End);
    assert!(a.read_to_end().await.is_empty());
    drop(a); // no final of its own: the partial is promoted
    let texts: Vec<String> = [s.next().await, s.next().await]
        .into_iter()
        .map(|e| match e {
            Event::Final(t) => t.text,
            other => panic!("expected finals, got {other:?}"),
        })
        .collect();
    assert_eq!(texts, ["ONE", "two"], "each utterance once");
    assert_eq!(s.next().await, Event::Close(CloseCause::Normal));
}

/// An adapter's `interim_paused` / `interim_resumed` notices (the finals-first queue of a
/// request/response back end) reach a client that asked for partials as `status`, and
/// nothing else: they prove nothing about the back end.
#[tokio::test(start_paused = true)]
async fn the_adapters_pause_notices_become_status_messages() {
    use crate::backend::scheduler::notice;
    let mut s = Setup::default().start();
    s.send(Command::Start(StartConfig {
        sample_rate: RATE,
        interim_results: true,
        ..StartConfig::default()
    }));
    s.send(Command::Audio(audio(0, 1_000).into()));
    let a = s.opened().await;
    a.answer(notice(true));
    match s.next().await {
        Event::Status { state, .. } => assert_eq!(state, StatusState::InterimPaused),
        other => panic!("expected interim_paused, got {other:?}"),
    }
    a.answer(notice(false));
    match s.next().await {
        Event::Status { state, .. } => assert_eq!(state, StatusState::InterimResumed),
        other => panic!("expected interim_resumed, got {other:?}"),
    }
    a.answer(result(true, "done", &[(100, 400)]));
    assert!(matches!(s.next().await, Event::Final(_)));
}
