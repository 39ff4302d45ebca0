//! The "drop-in" claim of the Deepgram-compatible dialect, proven with a voice-agent
//! framework: LiveKit Agents' Deepgram STT plugin (`livekit-plugins-deepgram`, through
//! `tests/conformance/agents/deepgram_plugin.py`) pointed at the real gateway by its
//! `base_url`, in front of the scripted Riva double. The plugin speaks the wire itself
//! (aiohttp, not Deepgram's SDK): its query string, `Authorization: Token`, `KeepAlive`,
//! `Finalize` and `CloseStream` all reach the gateway as a LiveKit agent sends them.
//! The venv (`.venv/agents`) is made by `scripts/py-env-agents.sh` on first use.

use std::time::Duration;

use serde_json::Value;
use sgw_testkit::Gateway;
use sgw_testkit::riva_double::RivaDouble;

/// `samples/hello.wav`: 65,502 samples at 16 kHz.
const CLIP_SECONDS: f64 = 65_502.0 / 16_000.0;

struct Setup {
    gw: Gateway,
    token: String,
    _riva: RivaDouble,
    _dir: tempfile::TempDir,
}

/// A gateway with JWT (and API-key) authentication in front of a Riva double that finals every second
/// of audio (and at the half-close).
async fn setup() -> Setup {
    let (s, riva) = sgw_testkit::Secured::before_riva(&[("livekit-agent", 0)], &[]).await;
    Setup {
        gw: s.gw,
        token: s.token,
        _riva: riva,
        _dir: s.dir,
    }
}

/// The python of `.venv/agents` (LiveKit Agents and its Deepgram plugin).
fn agents_python() -> std::path::PathBuf {
    let out = std::process::Command::new("bash")
        .arg(sgw_testkit::repo().join("scripts/py-env-agents.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/py-env-agents.sh failed: the agents venv is needed (pip install from PyPI)"
    );
    String::from_utf8(out.stdout).expect("a path").trim().into()
}

/// Runs the plugin on `samples/hello.wav` against the gateway with `key`, at twice real
/// time; whether it exited 0, and its JSON report. `extra`: more flags of the script.
async fn plugin(gw: &Gateway, key: &str, extra: &[&str]) -> (bool, Value) {
    let mut args: Vec<String> = vec![
        "--url".into(),
        format!("ws://{}", gw.addr),
        "--key".into(),
        key.into(),
        "--speed".into(),
        "2".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    // Off the runtime's threads: the first run installs the venv (tens of seconds).
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(agents_python())
            .arg(sgw_testkit::repo().join("tests/conformance/agents/deepgram_plugin.py"))
            .args(args)
            .arg("--wav")
            .arg(sgw_testkit::repo().join("samples/hello.wav"))
            .output()
            .expect("python runs")
    })
    .await
    .expect("the plugin task");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// Every `sgw_sessions_total` sample of the Deepgram dialect, once one is there (the
/// session is counted as it ends, just after the client saw the close).
async fn deepgram_sessions(gw: &Gateway) -> Vec<String> {
    for _ in 0..200 {
        let (_, metrics) = gw.get("/metrics").await;
        let lines: Vec<String> = metrics
            .lines()
            .filter(|l| l.starts_with("sgw_sessions_total{dialect=\"deepgram\""))
            .map(str::to_string)
            .collect();
        if !lines.is_empty() {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no Deepgram session was counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn livekits_deepgram_plugin_transcribes_through_the_gateway() {
    let s = setup().await;
    let (ok, report) = plugin(&s.gw, &s.token, &[]).await;
    assert!(ok, "the plugin reported an error: {report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");

    // It reached the Deepgram path with its own query string and credential scheme.
    let url = report["request"]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("ws://{}/v1/listen?model=default&", s.gw.addr)),
        "{url}"
    );
    assert!(url.contains("interim_results=true"), "{url}");
    assert_eq!(report["request"]["headers"]["Authorization"], "Token …");

    // Interim results, then finals; the finals' text is the double's, word for word:
    // `w<k>` for each 100 ms of the clip, in order, nothing lost or repeated.
    let interim = report["interim"].as_array().unwrap();
    let finals = report["finals"].as_array().unwrap();
    assert!(!interim.is_empty(), "interim results: {report}");
    assert!(finals.len() >= 4, "a final per second of audio: {report}");
    let kinds: Vec<&str> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    let first = |k: &str| kinds.iter().position(|t| *t == k).unwrap();
    assert!(
        first("interim_transcript") < first("final_transcript"),
        "an interim result came before the first final: {kinds:?}"
    );
    let text: Vec<&str> = finals.iter().map(|f| f["text"].as_str().unwrap()).collect();
    let words = (CLIP_SECONDS * 10.0).ceil() as usize;
    let expected: Vec<String> = (0..words).map(|k| format!("w{k}")).collect();
    assert_eq!(text.join(" "), expected.join(" "), "{report}");
    // The plugin's timing fields (seconds of session audio): finals tile the clip.
    let mut end = 0.0;
    for f in finals {
        let start = f["start_time"].as_f64().unwrap();
        assert!(start >= end - 0.01, "finals are append-only: {report}");
        end = f["end_time"].as_f64().unwrap();
        assert_eq!(
            f["words"].as_array().unwrap().len(),
            f["text"].as_str().unwrap().split(' ').count()
        );
    }
    assert!(
        (end - CLIP_SECONDS).abs() < 0.02,
        "finals cover the clip: {end}"
    );
    let ids: std::collections::HashSet<_> = finals.iter().map(|f| &f["request_id"]).collect();
    assert_eq!(ids.len(), 1, "one request id: {report}");

    // The socket: all the audio, LiveKit's control messages, a clean close.
    let sent = &report["sent"];
    assert_eq!(sent["binary_bytes"], 65_502 * 2, "{report}");
    let text_sent: Vec<&str> = sent["text"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    // A KeepAlive at the connect and every 5 s (at twice real time the clip takes 2 s),
    // then `end_input()`: Finalize, CloseStream.
    let (keepalives, end) = text_sent.split_at(text_sent.len().saturating_sub(2));
    assert!(!keepalives.is_empty(), "{report}");
    assert!(keepalives.iter().all(|t| *t == "KeepAlive"), "{report}");
    assert_eq!(end, ["Finalize", "CloseStream"], "{report}");
    let received: Vec<&str> = report["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let (results, last) = received.split_at(received.len().saturating_sub(2));
    // The plugin asks for vad_events: one SpeechStarted (the clip is one stretch of
    // speech), the rest Results.
    assert_eq!(
        results.iter().filter(|t| **t == "SpeechStarted").count(),
        1,
        "{report}"
    );
    assert!(
        results
            .iter()
            .all(|t| *t == "Results" || *t == "SpeechStarted"),
        "{report}"
    );
    assert_eq!(last, ["Metadata", "close 1000"], "{report}");

    // The gateway counted one completed Deepgram session.
    assert_eq!(
        deepgram_sessions(&s.gw).await,
        vec!["sgw_sessions_total{dialect=\"deepgram\",outcome=\"completed\"} 1".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_reports_a_refused_key_as_a_non_retryable_error() {
    let s = setup().await;
    // With the plugin's default retries: a 401 is not retried.
    let (ok, report) = plugin(&s.gw, "not-a-key", &["--retries", "3"]).await;
    assert!(!ok, "a wrong key was accepted: {report}");
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "one attempt, no retry: {report}");
    assert_eq!(errors[0]["recoverable"], false, "{report}");
    let error = errors[0]["error"].as_str().unwrap();
    assert!(error.contains("status_code=401"), "{report}");
    assert!(report["finals"].as_array().unwrap().is_empty(), "{report}");
    // Not a JWT, so looked up (and not found) among the API keys.
    assert_eq!(
        s.gw.metric("sgw_auth_failures_total{reason=\"api_key\"}")
            .await,
        Some(1.0)
    );
}
