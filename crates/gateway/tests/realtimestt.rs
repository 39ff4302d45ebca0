//! RealtimeSTT's `stt-server` contract (`/realtimestt/control`, `/realtimestt/data`):
//! RealtimeSTT's own client (`AudioToTextRecorderClient` from the `RealtimeSTT` package,
//! through `tests/conformance/realtimestt/stt_client.py`, in `.venv/realtimestt` made by
//! `scripts/py-env-realtimestt.sh`) against the real gateway on port 0 in front of the
//! Riva double; the pairing, the framing's errors and the health view from Rust.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sgw_testkit::riva_double::{Mode, RivaDouble};
use tokio_tungstenite::tungstenite::Message;

/// The python of `.venv/realtimestt` (RealtimeSTT's client, installed without the recorder).
fn realtimestt_python() -> std::path::PathBuf {
    let out = std::process::Command::new("bash")
        .arg(sgw_testkit::repo().join("scripts/py-env-realtimestt.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/py-env-realtimestt.sh failed: the venv is needed (pip install from PyPI)"
    );
    String::from_utf8(out.stdout).unwrap().trim().into()
}

/// What the double says for `samples/hello.wav` (4.09 s).
fn expected_text() -> String {
    (0..41)
        .map(|k| format!("w{k}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread")]
async fn realtimestts_own_client_transcribes_and_round_trips_control() {
    let (s, _riva) = sgw_testkit::Secured::before_riva(
        &[("phone", 0)],
        &[("SGW_AUTH__QUERY_TOKEN", "true".into())],
    )
    .await;
    let q = format!("?token={}&session=call-1", s.api_keys[0]);
    let control = format!("ws://{}/realtimestt/control{q}", s.gw.addr);
    let data = format!("ws://{}/realtimestt/data{q}", s.gw.addr);
    let wav = sgw_testkit::repo().join("samples/hello.wav");
    let mut cmd = std::process::Command::new(realtimestt_python());
    cmd.arg(sgw_testkit::repo().join("tests/conformance/realtimestt/stt_client.py"))
        // 100 ms chunks: the double's words are 100 ms, its finals fall between words.
        .args(["--control", &control, "--data", &data, "--bad-method"])
        .args(["--chunk-ms", "100"])
        .arg("--wav")
        .arg(&wav);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("python runs"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The client set the language as it connected; the control round trips.
    assert_eq!(report["language"], "en", "{report}");
    assert_eq!(report["sensitivity"], 0.2, "{report}");
    assert_eq!(report["recording_before"], false);
    let printed = report["printed"].as_str().unwrap();
    assert!(
        printed.contains("Server Error: Method format_disk is not allowed"),
        "{printed}"
    );
    assert!(
        printed.contains("Parameter model is not allowed"),
        "{printed}"
    );

    let messages = report["messages"].as_array().unwrap();
    let sentences: Vec<&str> = messages
        .iter()
        .filter(|m| m["type"] == "fullSentence")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(sentences.join(" "), expected_text(), "{messages:?}");
    assert_eq!(sentences.len(), 5, "a sentence a second, and the stop's");
    let types: Vec<&str> = messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(types[0], "recording_start", "{types:?}");
    assert_eq!(types[1], "realtime");
    let stop = types.iter().position(|t| *t == "recording_stop").unwrap();
    assert_eq!(types[stop + 1], "fullSentence");
    assert!(
        report["realtime"].as_array().unwrap().len() > 10,
        "{report}"
    );
    s.gw.wait_metric("sgw_sessions_active", 0.0).await;
}

type Ws = sgw_testkit::Ws;

async fn connect(url: &str) -> Ws {
    sgw_testkit::attempt(url, &[]).await.expect("upgrade")
}

/// The next text message as JSON, or `None` at the close (within 10 s).
async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer within 10 s")
        {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

async fn command(ws: &mut Ws, v: Value) -> Value {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
    next(ws).await.expect("an answer")
}

fn chunk(rate: u32, pcm: &[u8]) -> Message {
    let meta = json!({"sampleRate": rate}).to_string();
    let mut m = (meta.len() as u32).to_le_bytes().to_vec();
    m.extend_from_slice(meta.as_bytes());
    m.extend_from_slice(pcm);
    Message::Binary(m.into())
}

#[tokio::test(flavor = "multi_thread")]
async fn parameters_reach_the_start_and_methods_reach_the_paired_session_only() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = sgw_testkit::Gateway::with_backends(&[riva.url()]).await;
    let base = format!("ws://{}/realtimestt", gw.addr);
    let mut control = connect(&format!("{base}/control")).await;
    // No data connection yet: a method has nothing to act on; parameters wait for it.
    let lonely = command(
        &mut control,
        json!({"command":"call_method","method":"stop"}),
    )
    .await;
    assert_eq!(lonely["status"], "error", "{lonely}");
    for (p, v) in [
        ("language", json!("de-DE")),
        ("post_speech_silence_duration", json!(0.4)),
    ] {
        let ok = command(
            &mut control,
            json!({"command":"set_parameter","parameter":p,"value":v}),
        )
        .await;
        assert_eq!(ok["status"], "success", "{ok}");
    }
    let mut data = connect(&format!("{base}/data")).await;
    // Another client's call (another pair: its own label) is not touched by this control.
    let mut other = connect(&format!("{base}/data?session=other")).await;

    // Framing errors in the server's shape; the session goes on.
    data.send(Message::Binary(vec![1u8, 2].into()))
        .await
        .unwrap();
    let e = next(&mut data).await.unwrap();
    assert_eq!(
        (e["status"].as_str(), e["code"].as_str()),
        (Some("error"), Some("INVALID_REQUEST")),
        "{e}"
    );
    data.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(next(&mut data).await.unwrap()["status"], "error");

    data.send(chunk(16_000, &sgw_testkit::tone(100, 16_000)))
        .await
        .unwrap();
    let stream = riva.next_stream().await;
    let config = stream.config.config.clone().unwrap();
    assert_eq!(config.language_code, "de-DE");
    assert_eq!(
        config.endpointing_config.unwrap().stop_history,
        Some(400),
        "post_speech_silence_duration → endpointing"
    );
    data.send(chunk(8_000, &sgw_testkit::tone(100, 8_000)))
        .await
        .unwrap();
    let e = next(&mut data).await.unwrap();
    assert_eq!(e["code"], "AUDIO_FORMAT_ERROR", "a change of rate: {e}");

    other
        .send(chunk(16_000, &sgw_testkit::tone(100, 16_000)))
        .await
        .unwrap();
    let mut other_stream = riva.next_stream().await;

    stream
        .send(sgw_testkit::riva_double::partial("guten", 0.1))
        .await;
    assert_eq!(next(&mut data).await.unwrap()["type"], "recording_start");
    let realtime = next(&mut data).await.unwrap();
    assert_eq!(realtime, json!({"type":"realtime","text":"guten"}));
    let recording = command(
        &mut control,
        json!({"command":"get_parameter","parameter":"is_recording","request_id":"r1"}),
    )
    .await;
    assert_eq!(
        recording,
        json!({"status":"success","parameter":"is_recording","value":true,"request_id":"r1"})
    );
    // shutdown: the data session flushes (half-close: the double finals) and closes.
    let ok = command(
        &mut control,
        json!({"command":"call_method","method":"shutdown"}),
    )
    .await;
    assert_eq!(ok["message"], "Method shutdown called");
    let mut stream = stream;
    stream.until_half_close().await;
    stream
        .send(sgw_testkit::riva_double::final_result(
            "guten tag",
            &[("guten", 0, 50), ("tag", 50, 100)],
            0.1,
        ))
        .await;
    drop(stream);
    assert_eq!(next(&mut data).await.unwrap()["type"], "recording_stop");
    assert_eq!(
        next(&mut data).await.unwrap(),
        json!({"type":"fullSentence","text":"guten tag"})
    );
    assert!(next(&mut data).await.is_none(), "closed after the flush");

    // The other pair's session is still streaming.
    other
        .send(chunk(16_000, &sgw_testkit::tone(100, 16_000)))
        .await
        .unwrap();
    assert!(!other_stream.audio_at_least(3_200).await.is_empty());
    let _ = other.close(None).await;

    let (status, body) = gw.get("/realtimestt/health").await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["recorder_state"], "ready");
    assert!(
        health["total_connections"].as_u64().unwrap() >= 2,
        "{health}"
    );
    assert!(
        health["transcription_errors"].as_u64().unwrap() >= 3,
        "{health}"
    );
    for key in [
        "uptime_seconds",
        "active_connections",
        "connections_per_minute",
        "audio_chunks_processed",
        "recorder_errors",
        "last_activity_seconds",
        "consecutive_errors",
        "recovery_attempts",
    ] {
        assert!(health.get(key).is_some(), "{key}: {health}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_in_the_servers_shape() {
    let (s, _riva) = sgw_testkit::Secured::before_riva(&[("phone", 0)], &[]).await;
    for path in ["control", "data"] {
        let refused = sgw_testkit::attempt(&format!("ws://{}/realtimestt/{path}", s.gw.addr), &[])
            .await
            .expect_err("no credential");
        assert_eq!(refused.0, 401, "{path}");
        assert_eq!(refused.2["status"], "error", "{path}: {:?}", refused.2);
        assert_eq!(refused.2["code"], "AUTHENTICATION_FAILED");
    }
}
