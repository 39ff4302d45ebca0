//! Checks shared by the back-end response targets.

use axum::extract::ws::Message;
use speech_gateway::backend::TranscriptEvent;
use speech_gateway::ingress::v1::encode;
use speech_gateway::session::{Event, Transcript, Word};

/// What every mapped result must satisfy, whatever the server sent: word times ordered
/// (end never before start), text trimmed; and it renders as a contract message.
pub fn check_event(ev: &TranscriptEvent) {
    assert_eq!(ev.text, ev.text.trim(), "text is trimmed");
    for w in &ev.words {
        assert!(w.end_ms >= w.start_ms, "word ends before it starts: {w:?}");
    }
    if ev.is_progress() {
        assert!(ev.words.is_empty() || ev.text.is_empty());
    }
    // The session places the result on its timeline and the codec renders it; odd
    // floats (NaN confidence, huge times) must still serialise.
    let t = Transcript {
        from_finalize: false,
        text: ev.text.clone(),
        confidence: ev.confidence,
        timestamp_ms: ev.audio_processed_ms.unwrap_or(0),
        duration_ms: ev.words.last().map_or(0, |w| w.end_ms),
        words: Some(
            ev.words
                .iter()
                .map(|w| Word {
                    word: w.word.clone(),
                    start: w.start_ms as f64 / 1000.0,
                    end: w.end_ms as f64 / 1000.0,
                    confidence: w.confidence,
                    speaker: w.speaker,
                })
                .collect(),
        ),
    };
    let ev = if ev.is_final {
        Event::Final(t)
    } else {
        Event::Partial(std::sync::Arc::new(t))
    };
    match encode(&ev).expect("v1 renders transcripts") {
        Message::Text(text) => {
            serde_json::from_str::<serde_json::Value>(text.as_str()).expect("valid JSON");
        }
        other => panic!("transcripts render as text, got {other:?}"),
    }
}
