//! Finals-first scheduling through the real gateway (`backend::scheduler`), against the
//! scripted OpenAI-compatible double answering every request after 500 ms: with one
//! request in flight (`openai_backend.max_inflight=1`) and four sessions talking on
//! (each keeping a partial re-decode waiting), a fifth session's final goes next — it
//! waits for the one request running, not for the partials queued before it — and the
//! talkers are told that partials paused and resumed.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sgw_testkit::openai_double::{OpenAiDouble, Reply};
use sgw_testkit::{Client, Gateway, bytes_for, voiced};

fn silence(ms: u64) -> Vec<u8> {
    vec![0u8; bytes_for(ms, 16_000)]
}

/// Sends `audio` in real time (100 ms frames, 100 ms apart).
async fn stream(c: &mut Client, audio: &[u8]) {
    for chunk in audio.chunks(bytes_for(100, 16_000)) {
        c.audio(chunk).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn statuses(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m["type"] == "status")
        .map(|m| m["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_goes_before_other_sessions_waiting_partials() {
    let server = OpenAiDouble::start(&["m"]).await;
    server.otherwise(Reply::Slow(Duration::from_millis(500)));
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", server.url("m", "")),
        ("SGW_OPENAI_BACKEND__PARTIALS", "true".into()),
        ("SGW_OPENAI_BACKEND__PARTIAL_INTERVAL", "200ms".into()),
        ("SGW_OPENAI_BACKEND__MAX_INFLIGHT", "1".into()),
    ])
    .await;
    gw.wait_ready().await;

    let mut talkers = Vec::new();
    for _ in 0..4 {
        let mut c = gw.connect().await;
        talkers.push(tokio::spawn(async move {
            c.start(json!({"interim_results": true})).await;
            let mut audio = silence(200);
            audio.extend(voiced(6_000));
            audio.extend(silence(700));
            stream(&mut c, &audio).await;
            c.end().await;
            c.drain().await
        }));
    }

    // once the talkers' partials queue up, one short utterance ends
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut c = gw.connect().await;
    c.start(json!({"interim_results": true})).await;
    let mut audio = silence(200);
    audio.extend(voiced(800));
    stream(&mut c, &audio).await;
    let spoken = Instant::now();
    // the silence that ends it (500 ms) and a little more
    stream(&mut c, &silence(600)).await;
    let fin = c.until("final").await;
    let waited = spoken.elapsed();
    assert!(
        !fin["text"].as_str().unwrap_or_default().is_empty(),
        "{fin}"
    );
    // 500 ms of silence, at most the one request running (500 ms), its own request
    // (500 ms); behind the four waiting partials it would be 2 s more
    assert!(
        waited < Duration::from_millis(2_300),
        "the final waited behind partials: {waited:?}"
    );
    c.end().await;
    let (_, close) = c.drain().await;
    assert_eq!(close, Some(1000));

    for t in talkers {
        let (msgs, close) = t.await.unwrap();
        assert_eq!(close, Some(1000), "{msgs:?}");
        let finals = msgs.iter().filter(|m| m["type"] == "final").count();
        assert_eq!(finals, 1, "finals are never skipped: {msgs:?}");
        let states = statuses(&msgs);
        let paused = states.iter().position(|s| s == "interim_paused");
        let resumed = states.iter().rposition(|s| s == "interim_resumed");
        assert!(
            paused.is_some() && resumed > paused,
            "partials paused, then resumed: {states:?}"
        );
    }
    let (_, metrics) = gw.get("/metrics").await;
    let skipped: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("sgw_decode_partials_skipped_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(skipped > 0.0, "waiting partials were replaced or paused");
    let (_, status) = gw.get("/status").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    let queue = &status["routes"][0]["backends"][0]["queue"];
    assert_eq!(queue["max_inflight"], 1, "{status}");
    assert_eq!(queue["finals_waiting"], 0, "{status}");
}
