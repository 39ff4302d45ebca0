//! The Triton adapter through the real gateway, against a Triton double (a real tonic
//! server on our KServe v2 protos) in both model shapes.

use std::time::Duration;

use serde_json::json;
use sgw_testkit::triton_double::{Shape, TritonDouble};
use sgw_testkit::{Gateway, bytes_for, tone, voiced};

#[tokio::test]
async fn streaming_model_one_sequence_per_session() {
    let triton = TritonDouble::start(
        "asr_stream",
        Shape::Streaming {
            idle_us: 60_000_000,
            final_every_ms: 60_000,
        },
    )
    .await;
    let gw = Gateway::with_backends(&[triton.url("asr_stream")]).await;
    gw.wait_ready().await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let audio = tone(1_000, 16_000);
    for chunk in audio.chunks(bytes_for(100, 16_000)) {
        c.audio(chunk).await;
    }
    let p = c.until("partial").await;
    assert_eq!(p["text"], "so far");
    c.end().await;
    let f = c.until("final").await;
    assert_eq!(f["text"], "done");
    assert!((f["confidence"].as_f64().unwrap() - 0.625).abs() < 1e-6);
    assert!(
        (f["words"][0]["end"].as_f64().unwrap() - 1.0).abs() < 1e-3,
        "{f}"
    );
    let (_, close) = c.drain().await;
    assert_eq!(close, Some(1000));

    let reqs = triton.requests();
    let seq = reqs[0].sequence_id.expect("sequence_id set");
    assert!(seq > 0);
    assert!(
        reqs.iter().all(|r| r.sequence_id == Some(seq)),
        "one sequence"
    );
    assert!(
        reqs[0].start && reqs.iter().skip(1).all(|r| !r.start),
        "start only on the first"
    );
    let last = reqs.last().unwrap();
    assert!(
        last.end && last.audio.is_empty(),
        "an empty sequence_end request closes it"
    );
    assert!(reqs.iter().rev().skip(1).all(|r| !r.end));
    assert!(
        reqs.iter().all(|r| r.empty_final),
        "completion is always visible"
    );
    assert_eq!(
        reqs[0].outputs,
        ["TRANSCRIPT", "IS_FINAL", "WORDS", "CONFIDENCE"]
    );
    let sent: Vec<u8> = reqs.iter().flat_map(|r| r.audio.to_vec()).collect();
    assert_eq!(sent, audio, "every byte, in order");
}

#[tokio::test]
async fn a_quiet_sequence_is_kept_alive() {
    // 400 ms idle limit → an empty request every 200 ms while the client is silent
    let triton = TritonDouble::start(
        "asr_stream",
        Shape::Streaming {
            idle_us: 400_000,
            final_every_ms: 60_000,
        },
    )
    .await;
    let gw = Gateway::with_backends(&[triton.url("asr_stream")]).await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    c.audio(&tone(100, 16_000)).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let keepalives = triton
        .requests()
        .iter()
        .filter(|r| r.audio.is_empty() && !r.end)
        .count();
    assert!(
        (3..=7).contains(&keepalives),
        "{keepalives} keep-alive requests in 1.1 s"
    );
    c.end().await;
    let (_, close) = c.drain().await;
    assert_eq!(close, Some(1000));
}

#[tokio::test]
async fn a_model_error_reopens_the_sequence_with_the_audio_since_the_last_final() {
    let triton = TritonDouble::start(
        "asr_stream",
        Shape::Streaming {
            idle_us: 60_000_000,
            final_every_ms: 500,
        },
    )
    .await;
    let gw = Gateway::with_backends(&[triton.url("asr_stream")]).await;
    let mut c = gw.connect().await;
    c.start(json!({"interim_results": false})).await;
    let frame = tone(100, 16_000);
    for _ in 0..5 {
        c.audio(&frame).await;
    }
    let f = c.until("final").await;
    assert!((f["words"][0]["end"].as_f64().unwrap() - 0.5).abs() < 1e-3);
    triton.fail_next("sequence state lost");
    for _ in 0..3 {
        c.audio(&frame).await;
    }
    c.end().await;
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    let finals: Vec<_> = msgs.iter().filter(|m| m["type"] == "final").collect();
    let covered: u64 = f["duration_ms"].as_u64().unwrap()
        + finals
            .iter()
            .map(|m| m["duration_ms"].as_u64().unwrap())
            .sum::<u64>();
    assert_eq!(covered, 800, "all 0.8 s is final exactly once: {msgs:?}");
    let seqs: std::collections::HashSet<_> = triton
        .requests()
        .iter()
        .filter_map(|r| r.sequence_id)
        .collect();
    assert_eq!(seqs.len(), 2, "a new sequence after the error");
}

#[tokio::test]
async fn offline_model_gets_one_request_per_utterance_and_silence_costs_nothing() {
    let triton = TritonDouble::start("asr_offline", Shape::Offline).await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", triton.url("asr_offline")),
        ("SGW_ROUTES__OFFLINE", triton.url("asr_offline")),
    ])
    .await;
    gw.wait_ready().await;

    // silence only: no request, no text, a clean close
    let mut c = gw.connect().await;
    c.start(json!({"model":"offline"})).await;
    for _ in 0..20 {
        c.audio(&vec![0u8; bytes_for(100, 16_000)]).await;
    }
    c.end().await;
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000));
    assert!(msgs.iter().all(|m| m["type"] != "final"), "{msgs:?}");
    assert!(triton.log.lock().unwrap().unary.is_empty());

    // two utterances separated by silence → two finals, in session time
    let mut c = gw.connect().await;
    c.start(json!({"model":"offline","interim_results":false}))
        .await;
    let mut audio = vec![0u8; bytes_for(500, 16_000)];
    audio.extend(voiced(1_200));
    audio.extend(vec![0u8; bytes_for(1_000, 16_000)]);
    audio.extend(voiced(800));
    audio.extend(vec![0u8; bytes_for(300, 16_000)]);
    for chunk in audio.chunks(bytes_for(100, 16_000)) {
        c.audio(chunk).await;
    }
    c.end().await;
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000));
    let finals: Vec<_> = msgs.iter().filter(|m| m["type"] == "final").collect();
    assert_eq!(finals.len(), 2, "{msgs:?}");
    let first_start = finals[0]["words"][0]["start"].as_f64().unwrap();
    let second_start = finals[1]["words"][0]["start"].as_f64().unwrap();
    assert!(
        (0.2..0.5).contains(&first_start),
        "pre-roll before 0.5 s: {first_start}"
    );
    assert!(
        (2.4..2.75).contains(&second_start),
        "second utterance near 2.7 s: {second_start}"
    );
    assert_eq!(triton.log.lock().unwrap().unary.len(), 2);
}
