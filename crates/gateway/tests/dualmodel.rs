//! The dual-model STT server's `/ws` contract, driven by a client written from that
//! server's README (`tests/conformance/dualmodel_client.py`, the `websockets` library)
//! against the real gateway on port 0 in front of the Riva double, which finals every
//! second of audio (words `w<k>`, one per 100 ms) and sends a partial per frame.

use serde_json::Value;
use sgw_testkit::riva_double::RivaDouble;

struct Setup {
    gw: sgw_testkit::Gateway,
    token: String,
    _riva: RivaDouble,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let (s, riva) = sgw_testkit::Secured::before_riva(&[("caller", 0)], &[]).await;
    Setup {
        gw: s.gw,
        token: s.token,
        _riva: riva,
        _dir: s.dir,
    }
}

fn hello() -> std::path::PathBuf {
    sgw_testkit::repo().join("samples/hello.wav")
}

/// What the double says for `samples/hello.wav` (4.09 s).
fn expected_text() -> String {
    (0..41)
        .map(|k| format!("w{k}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(s: &Setup, wav: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--token", &s.token];
    all.extend_from_slice(args);
    let report = sgw_testkit::dualmodel_client(&format!("ws://{}/ws", s.gw.addr), wav, &all).await;
    report["messages"].as_array().expect("messages").clone()
}

fn of_type<'a>(messages: &'a [Value], ty: &str) -> Vec<&'a Value> {
    messages.iter().filter(|m| m["type"] == ty).collect()
}

fn final_text(messages: &[Value]) -> String {
    of_type(messages, "final")
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A 16 kHz mono WAV of `ms` of tone.
fn tone_wav(dir: &std::path::Path, ms: u64) -> std::path::PathBuf {
    let pcm = sgw_testkit::tone(ms, 16_000);
    let mut wav = Vec::with_capacity(44 + pcm.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    for v in [16u32, 0x0001_0001, 16_000, 32_000, 0x0010_0002] {
        wav.extend_from_slice(&v.to_le_bytes());
    }
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(&pcm);
    let path = dir.join(format!("tone-{ms}.wav"));
    std::fs::write(&path, wav).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_of_the_readme_gets_interims_finals_and_status() {
    let s = setup().await;
    let messages = run(&s, &hello(), &["--language", "en-US", "--pace", "0.3"]).await;
    assert_eq!(final_text(&messages), expected_text(), "{messages:?}");
    let conn = messages[0]["conn"].as_str().unwrap();
    assert!(conn.starts_with("conn_"), "{messages:?}");
    assert!(messages.iter().all(|m| m["conn"] == conn), "one conn id");

    let status = &of_type(&messages, "status")[0];
    assert_eq!(status["backpressure"], "normal");
    assert_eq!(status["interim_paused"], false);
    assert_eq!(status["cooldown_ms"], 0);
    assert!(status["tail_s"].as_f64().unwrap() > 0.0, "{status}");

    let finals = of_type(&messages, "final");
    assert_eq!(
        finals.len(),
        5,
        "a final a second and the stop's: {finals:?}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (i, f) in finals.iter().enumerate() {
        assert_eq!(f["language"], "en-US");
        let (t0, t1) = (f["t0"].as_f64().unwrap(), f["t1"].as_f64().unwrap());
        assert!(t0 < t1 && (now - t0).abs() < 60.0, "Unix times: {f}");
        // Finals tile the audio: each begins where the one before ended.
        if i > 0 {
            assert!(
                (t0 - finals[i - 1]["t1"].as_f64().unwrap()).abs() < 1e-6,
                "{f}"
            );
        }
        let segments = f["segments"].as_array().unwrap();
        assert_eq!(segments.len(), 1, "{f}");
        assert_eq!(segments[0]["text"], f["text"]);
        let (start, end) = (
            segments[0]["start"].as_f64().unwrap(),
            segments[0]["end"].as_f64().unwrap(),
        );
        assert!(start >= 0.0 && start < end && end <= t1 - t0 + 1e-3, "{f}");
    }
    let last = finals.last().unwrap();
    let spoken = last["t1"].as_f64().unwrap() - finals[0]["t0"].as_f64().unwrap();
    assert!((spoken - 4.09).abs() < 0.05, "the audio's length: {spoken}");

    let interims = of_type(&messages, "interim");
    assert!(interims.len() > 20, "every partial: {}", interims.len());
    for i in &interims {
        let text = i["text"].as_str().unwrap();
        let stable = i["stable_chars"].as_u64().unwrap() as usize;
        assert!(stable <= text.chars().count(), "{i}");
        assert!(
            i["t0"].as_f64().unwrap() <= i["t1"].as_f64().unwrap(),
            "{i}"
        );
    }
    // The double's partials grow word by word: after two of an utterance, the prefix of
    // the older ones is stable.
    assert!(
        interims
            .iter()
            .any(|i| i["stable_chars"].as_u64().unwrap() >= 6),
        "{interims:?}"
    );
    s.gw.wait_metric(
        "sgw_sessions_total{dialect=\"dualmodel_ws\",outcome=\"completed\"}",
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn interim_rate_throttles_and_zero_pauses() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let wav = tone_wav(dir.path(), 2_000);
    // Real time: 50 frames of 40 ms, a partial each, over 2 s.
    let (throttled, paused) = tokio::join!(
        run(&s, &wav, &["--interim-rate", "2", "--pace", "1.0"]),
        run(&s, &wav, &["--interim-rate", "0", "--pace", "1.0"]),
    );
    let statuses = of_type(&throttled, "status");
    assert_eq!(statuses.last().unwrap()["cooldown_ms"], 500, "{statuses:?}");
    let n = of_type(&throttled, "interim").len();
    assert!((2..=6).contains(&n), "2 a second over ~2 s: {n}");
    assert_eq!(final_text(&throttled).split(' ').count(), 20);

    assert!(of_type(&paused, "interim").is_empty(), "{paused:?}");
    assert_eq!(
        of_type(&paused, "status").last().unwrap()["interim_paused"],
        true
    );
    assert_eq!(
        final_text(&paused).split(' ').count(),
        20,
        "finals still come"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_messages_get_errors_and_no_session_is_disturbed() {
    let s = setup().await;
    let wav = hello();
    let (bad, good) = tokio::join!(
        run(&s, &wav, &["--bad", "--pace", "0.3"]),
        run(&s, &wav, &["--pace", "0.3"]),
    );
    let errors = of_type(&bad, "error");
    assert_eq!(errors.len(), 2, "{bad:?}");
    for e in &errors {
        assert_eq!(e["code"], "INVALID_REQUEST");
        assert_eq!(e["recoverable"], true);
        assert!(e["message"].is_string() && e["conn"].is_string());
    }
    assert!(errors[1]["message"].as_str().unwrap().contains("rewind"));
    assert_eq!(final_text(&bad), expected_text(), "the session went on");
    assert_eq!(final_text(&good), expected_text());
    assert!(of_type(&good, "error").is_empty());

    // Refused before the upgrade, in the contract's error shape.
    let refused = sgw_testkit::attempt(&format!("ws://{}/ws", s.gw.addr), &[])
        .await
        .expect_err("no token");
    assert_eq!(refused.0, 401);
    assert_eq!(refused.2["type"], "error");
    assert_eq!(refused.2["code"], "AUTHENTICATION_FAILED");
}
