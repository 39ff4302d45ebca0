//! The zero-compute back end (`sim-backend`) through the gateway's own Riva
//! and Triton adapters: marker audio comes back word for word with its stream times, the
//! half-close finalises, transcript mode speaks on sound and not on silence, and each
//! misbehaviour looks to the adapters as it should.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use sgw_testkit::sim::local::{self as sim, backend, chunks, collect, fed, final_words, params};
use sgw_testkit::sim::marker::{marker_audio, marker_words};
use sgw_testkit::sim::{Behaviour, SimOptions};
use sgw_testkit::tone;
use speech_gateway::backend::{BackendErrorKind, Health, SpeechBackend};
use speech_gateway::config::BackendProtocol;
use speech_gateway::error::ErrorClass;

fn behaving(behaviour: Behaviour) -> SimOptions {
    SimOptions {
        behaviour,
        ..Default::default()
    }
}

fn text_of(words: &[speech_gateway::backend::StreamWord]) -> String {
    words
        .iter()
        .map(|w| w.word.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Blocks 1..=20 of 8000 samples (500 ms) in 100 ms chunks, then the half-close.
async fn twenty_blocks_come_back_exactly(protocol: BackendProtocol) {
    let server = sim::start(protocol, SimOptions::default()).await;
    let b = backend(protocol, server.addr);
    let events = b
        .open(params(), chunks(&marker_audio(1, 20, 8_000)))
        .await
        .unwrap();
    let (events, error) = collect(events).await;
    assert!(error.is_none(), "{error:?}");
    let words = final_words(&events);
    assert_eq!(
        marker_words(&text_of(&words)),
        Some((1..=20).collect()),
        "every block once, in order"
    );
    for (i, w) in words.iter().enumerate() {
        let k = i as u64;
        assert_eq!((w.start_ms, w.end_ms), (k * 500, k * 500 + 500), "{w:?}");
        assert_eq!(w.confidence, 1.0);
    }
    let finals: Vec<usize> = events
        .iter()
        .filter(|e| e.is_final)
        .map(|e| e.words.len())
        .collect();
    assert_eq!(
        finals,
        vec![6, 6, 6, 2],
        "a final per 6 words; w20 only at the half-close"
    );
    assert!(events.iter().any(|e| !e.is_final && !e.text.is_empty()));
}

#[tokio::test]
async fn riva_marker_blocks_come_back_word_for_word_with_stream_times() {
    twenty_blocks_come_back_exactly(BackendProtocol::Riva).await;
}

#[tokio::test]
async fn triton_marker_blocks_come_back_word_for_word_with_stream_times() {
    twenty_blocks_come_back_exactly(BackendProtocol::Triton).await;
}

#[tokio::test]
async fn riva_results_say_how_much_audio_they_account_for() {
    let server = sim::start(BackendProtocol::Riva, SimOptions::default()).await;
    let b = sim::riva_backend(server.addr);
    let events = b
        .open(params(), chunks(&marker_audio(1, 4, 8_000)))
        .await
        .unwrap();
    let (events, _) = collect(events).await;
    let last = events.last().unwrap();
    assert!(last.is_final);
    assert_eq!(last.audio_processed_ms, Some(2_000));
    let partial = events
        .iter()
        .find(|e| !e.is_final && !e.is_progress())
        .unwrap();
    assert_eq!(partial.stability, 0.5);
    assert_eq!(partial.text, "w1");
    assert_eq!(
        partial.audio_processed_ms,
        Some(600),
        "w1 ends when w2 begins"
    );
}

#[tokio::test]
async fn the_half_close_finalises_the_pending_utterance_then_ends_the_stream() {
    for protocol in [BackendProtocol::Riva, BackendProtocol::Triton] {
        let server = sim::start(protocol, SimOptions::default()).await;
        let b = backend(protocol, server.addr);
        let (tx, audio) = fed();
        let mut events = b.open(params(), audio).await.unwrap();
        for chunk in marker_audio(1, 3, 1_600).chunks(3_200) {
            tx.send(bytes::Bytes::copy_from_slice(chunk)).unwrap();
        }
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(!ev.is_final);
            if ev.text == "w1 w2" {
                break; // block 3 may still go on
            }
        }
        drop(tx);
        let (rest, error) = collect(events).await;
        assert!(error.is_none());
        let last = rest.last().expect("a final at the half-close");
        assert!(last.is_final);
        assert_eq!(last.text, "w1 w2 w3");
    }
}

#[tokio::test]
async fn transcript_mode_speaks_on_a_tone_and_not_on_silence() {
    let options = SimOptions {
        vocabulary: vec!["alpha".into(), "beta".into(), "gamma".into()],
        ..Default::default()
    };
    let server = sim::start(BackendProtocol::Riva, options).await;
    let b = sim::riva_backend(server.addr);
    let events = b
        .open(params(), chunks(&tone(2_000, 16_000)))
        .await
        .unwrap();
    let (events, _) = collect(events).await;
    let words = final_words(&events);
    assert_eq!(text_of(&words), "alpha beta gamma alpha beta");
    let times: Vec<(u64, u64)> = words.iter().map(|w| (w.start_ms, w.end_ms)).collect();
    assert_eq!(
        times,
        vec![
            (0, 400),
            (400, 800),
            (800, 1200),
            (1200, 1600),
            (1600, 2000)
        ]
    );

    let events = b.open(params(), chunks(&vec![0u8; 64_000])).await.unwrap();
    let (events, error) = collect(events).await;
    assert!(error.is_none());
    assert!(
        events.iter().all(|e| e.is_progress()),
        "silence says nothing (only the heartbeat): {events:?}"
    );
}

/// The error a stream ends with, whether opening or the first event reports it.
async fn stream_error(b: &dyn SpeechBackend) -> speech_gateway::backend::BackendError {
    match b.open(params(), chunks(&marker_audio(1, 4, 1_600))).await {
        Err(e) => e,
        Ok(events) => collect(events).await.1.expect("the stream failed"),
    }
}

#[tokio::test]
async fn unavailable_fails_every_stream_and_health_says_down() {
    for protocol in [BackendProtocol::Riva, BackendProtocol::Triton] {
        let server = sim::start(protocol, behaving(Behaviour::Unavailable)).await;
        let b = backend(protocol, server.addr);
        assert!(matches!(b.health().await, Health::Down(_)));
        let e = stream_error(b.as_ref()).await;
        assert_eq!(e.kind, BackendErrorKind::Unavailable, "{e}");
        assert_eq!(e.class, ErrorClass::UpstreamRetryable);
    }
}

#[tokio::test]
async fn fail_after_fails_mid_stream_after_some_results() {
    for protocol in [BackendProtocol::Riva, BackendProtocol::Triton] {
        let server = sim::start(
            protocol,
            behaving(Behaviour::FailAfter(Duration::from_secs(1))),
        )
        .await;
        let b = backend(protocol, server.addr);
        assert_eq!(b.health().await, Health::Up);
        let events = b
            .open(params(), chunks(&marker_audio(1, 20, 1_600)))
            .await
            .unwrap();
        let (events, error) = collect(events).await;
        let e = error.expect("the stream failed");
        assert_eq!(e.kind, BackendErrorKind::Unavailable, "{e}");
        let heard = events.iter().map(|e| e.text.clone()).collect::<Vec<_>>();
        assert!(
            heard.iter().any(|t| t.starts_with("w1 w2")),
            "results came before the failure: {heard:?}"
        );
        assert!(final_words(&events).len() < 20);
    }
}

#[tokio::test]
async fn hang_reads_the_audio_but_never_answers_while_health_says_up() {
    for protocol in [BackendProtocol::Riva, BackendProtocol::Triton] {
        let server = sim::start(protocol, behaving(Behaviour::Hang)).await;
        let b = backend(protocol, server.addr);
        assert_eq!(b.health().await, Health::Up);
        let (tx, audio) = fed();
        let mut events = b.open(params(), audio).await.unwrap();
        tx.send(marker_audio(1, 10, 1_600).into()).unwrap();
        // A negative check: nothing may arrive in this window.
        let waited = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
        assert!(waited.is_err(), "a hanging back end said {waited:?}");
    }
}

#[tokio::test]
async fn slow_delays_answers_but_keeps_every_word_in_order() {
    let server = sim::start(
        BackendProtocol::Riva,
        behaving(Behaviour::Slow(Duration::from_millis(50))),
    )
    .await;
    let b = sim::riva_backend(server.addr);
    let events = b
        .open(params(), chunks(&marker_audio(1, 10, 1_600)))
        .await
        .unwrap();
    let (events, error) = collect(events).await;
    assert!(error.is_none());
    assert_eq!(
        marker_words(&text_of(&final_words(&events))),
        Some((1..=10).collect())
    );
}

#[tokio::test]
async fn the_binary_serves_riva_on_port_0_and_exits_0_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sim-backend"))
        .args(["--riva", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("riva listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    let b = sim::riva_backend(addr);
    let events = b
        .open(params(), chunks(&marker_audio(1, 3, 8_000)))
        .await
        .unwrap();
    let (events, error) = collect(events).await;
    assert!(error.is_none());
    assert_eq!(text_of(&final_words(&events)), "w1 w2 w3");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
