//! The binaries as operators and users run them: `speech-gateway serve` in front of a Riva
//! double, stopped with SIGTERM, and `sgw transcribe` streaming a WAV through it; `sgw
//! eval` and `sgw load` over the Deepgram dialect (`--dialect deepgram`) and OpenAI's
//! realtime one (`--dialect openai-realtime`) through a gateway in front of the
//! zero-compute back end (their v1 paths: crates/gateway/tests/harness.rs).

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sgw_testkit::riva_double::{Mode, RivaDouble};
use sgw_testkit::sim::SimOptions;
use sgw_testkit::sim::local::{self as sim};
use sgw_testkit::{Gateway, GatewayProcess};
use sgw_tools::client::wav::write_wav;
use speech_gateway::config::BackendProtocol;

const SGW: &str = env!("CARGO_BIN_EXE_sgw");

#[tokio::test]
async fn serve_and_transcribe_end_to_end_then_sigterm() {
    let riva = RivaDouble::start(Mode::Auto {
        final_every_ms: 1_000,
    })
    .await;
    let backend = riva.url();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = GatewayProcess::spawn(
        &["--backend", &backend],
        &[
            ("SGW_LOG_FORMAT", "json".into()),
            ("SGW_AUTH__ENABLED", "false".into()),
        ],
        &dir.path().join("gateway.log"),
    )
    .await;
    let addr = gw.addr.clone();

    // 2.5 s of a tone at 44.1 kHz: the gateway resamples to 16 kHz
    let wav = dir.path().join("clip.wav");
    let samples: Vec<i16> = (0..110_250)
        .map(|i| ((i as f64 / 44_100.0 * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16)
        .collect();
    std::fs::write(&wav, write_wav(44_100, &samples)).unwrap();

    let url = format!("ws://{addr}/v1/audio/stream");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(SGW)
            .arg("transcribe")
            .arg(&wav)
            .args(["--url", &url, "--speed", "0", "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["close_code"], 1000, "{report}");
    let finals = report["finals"].as_array().unwrap();
    assert!(finals.len() >= 2, "a final per second of audio: {report}");
    let covered: f64 = finals
        .iter()
        .map(|f| f["duration_ms"].as_f64().unwrap())
        .sum();
    assert!(
        (2_490.0..=2_500.0).contains(&covered),
        "finals cover the clip: {covered} ms"
    );
    assert_eq!(report["errors"].as_array().unwrap().len(), 0);

    // SIGTERM: the process drains and exits 0
    let (status, _) = gw.stop().await;
    assert!(status.success(), "serve exits cleanly on SIGTERM: {status}");
}

#[test]
fn serve_refuses_a_bad_configuration_with_a_message() {
    let out = Command::new(sgw_testkit::binary("speech-gateway"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "grpc://nowhere",
        ])
        .env_remove("SGW_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes.default") && err.contains("grpc://nowhere"),
        "{err}"
    );

    let out = Command::new(sgw_testkit::binary("speech-gateway"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("SGW_CONFIG")
        .env_remove("SGW_ROUTES__DEFAULT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--backend"));
}

#[test]
fn transcribe_reports_an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("stereo.wav");
    let mut bytes = write_wav(16_000, &[0; 100]);
    bytes[22] = 2; // channel count
    std::fs::write(&bad, bytes).unwrap();
    let out = Command::new(SGW)
        .arg("transcribe")
        .arg(&bad)
        .args(["--url", "ws://127.0.0.1:9/v1/audio/stream"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mono") || err.contains("channels"), "{err}");
}

/// A gateway in front of the zero-compute Riva back end, whose transcript is "hello …".
async fn gateway_on_the_sim() -> (sim::SimServer, Gateway) {
    let server = sim::start(
        BackendProtocol::Riva,
        SimOptions {
            vocabulary: vec!["hello".into()],
            ..SimOptions::default()
        },
    )
    .await;
    let gw = Gateway::with_backends(&[format!("riva://{}", server.addr)]).await;
    gw.wait_ready().await;
    (server, gw)
}

/// Runs `sgw ARGS…` off the async runtime; panics with its stderr unless it succeeds.
async fn sgw(args: Vec<String>) -> std::process::Output {
    let out = tokio::task::spawn_blocking(move || Command::new(SGW).args(&args).output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "sgw {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `sgw eval` of `samples/hello.wav` over each of `dialects` through one gateway on the
/// sim; each dialect's clip result (and its report's URL).
async fn eval_hello(dialects: &[&str]) -> Vec<(Value, String)> {
    let (_sim, gw) = gateway_on_the_sim().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("clips")).unwrap();
    std::fs::copy(
        sgw_testkit::repo().join("samples/hello.wav"),
        dir.path().join("clips/hello.wav"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("manifest.toml"),
        "[[clip]]\nid = \"hello\"\naudio = \"clips/hello.wav\"\ntext = \"hello hello\"\n\
         language = \"en-US\"\ntags = [\"t\"]\nwer_ceiling = 10.0\nsource = \"test\"\n\
         licence = \"test\"\n",
    )
    .unwrap();
    let mut clips = Vec::new();
    for dialect in dialects {
        let out = dir.path().join(dialect);
        let args = [
            "eval",
            "--dialect",
            dialect,
            "--url",
            &gw.ws_url(),
            "--speed",
            "8",
            "--manifest",
            &dir.path().join("manifest.toml").display().to_string(),
            "--expected",
            &dir.path().join("none").display().to_string(),
            "--out",
            &out.display().to_string(),
        ];
        sgw(args.iter().map(|a| a.to_string()).collect()).await;
        let report = json(&out.join("report.json"));
        let url = report["url"].as_str().unwrap().to_string();
        clips.push((report["clips"][0].clone(), url));
    }
    clips
}

#[tokio::test]
async fn eval_over_deepgram_judges_the_clip_as_v1_does() {
    let clips = eval_hello(&["v1", "deepgram"]).await;
    let ((v1, _), (dg, url)) = (&clips[0], &clips[1]);
    assert!(url.ends_with("/v1/listen"), "{url}");
    assert!(dg["passed"].as_bool().unwrap(), "{dg}");
    assert_eq!(dg["close_code"], 1000);
    assert!(dg["hypothesis"].as_str().unwrap().contains("hello"), "{dg}");
    for key in ["hypothesis", "wer", "word_errors", "finals"] {
        assert_eq!(v1[key], dg[key], "{key}: v1 {v1}\ndeepgram {dg}");
    }
    // Latencies measured on the Deepgram wire too (interims at start + duration, finals
    // from their last word's end).
    assert!(dg["partial"]["count"].as_u64().unwrap() > 0, "{dg}");
    assert!(dg["final"]["count"].as_u64().unwrap() > 0, "{dg}");
}

#[tokio::test]
async fn eval_over_openai_realtime_judges_the_clip_as_v1_does() {
    let clips = eval_hello(&["v1", "openai-realtime"]).await;
    let ((v1, _), (rt, url)) = (&clips[0], &clips[1]);
    assert!(url.ends_with("/v1/realtime"), "{url}");
    // Done at the commit's `completed`: the client closed, normally.
    assert!(rt["passed"].as_bool().unwrap(), "{rt}");
    assert_eq!(rt["close_code"], 1000);
    // 16 → 24 kHz on the client, 24 → 16 kHz in the gateway: the sim (a word per voiced
    // 400 ms window) hears the same words.
    for key in ["hypothesis", "wer", "word_errors"] {
        assert_eq!(v1[key], rt[key], "{key}: v1 {v1}\nrealtime {rt}");
    }
    // Deltas: no audio position, so no partial latency, but a first partial; the final
    // (the commit's item) from the commit.
    assert!(rt["partials"].as_u64().unwrap() > 0, "{rt}");
    assert_eq!(rt["partial"]["count"], 0, "{rt}");
    assert!(rt["first_partial_ms"].as_f64().is_some(), "{rt}");
    assert!(rt["final"]["count"].as_u64().unwrap() > 0, "{rt}");
}

/// `sgw load` of 3 short sessions over `dialect` through a gateway on the sim: its
/// report's gateway path.
async fn load_hello(dialect: &str) -> Value {
    let (_sim, gw) = gateway_on_the_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "load",
        "--dialect",
        dialect,
        "--url",
        &gw.ws_url(),
        "--sessions",
        "3",
        "--duration",
        "2s",
        "--ramp",
        "300ms",
        "--gap",
        "300ms",
        "--clips",
        &sgw_testkit::repo()
            .join("samples/hello.wav")
            .display()
            .to_string(),
        "--out",
        &dir.path().display().to_string(),
    ];
    sgw(args.iter().map(|a| a.to_string()).collect()).await;
    let report = json(&dir.path().join("load.json"));
    assert_eq!(report["dialect"], dialect);
    report["gateway"].clone()
}

#[tokio::test]
async fn load_over_deepgram_completes_every_session_and_measures_latency() {
    let g = load_hello("deepgram").await;
    assert_eq!(
        (g["completed"].as_u64(), g["failed"].as_u64()),
        (Some(3), Some(0)),
        "{g}"
    );
    assert!(g["partial"]["count"].as_u64().unwrap() > 0, "{g}");
    assert!(g["final"]["count"].as_u64().unwrap() > 0, "{g}");
    assert_eq!(g["errors"], serde_json::json!({}), "{g}");
}

#[tokio::test]
async fn load_over_openai_realtime_completes_every_session_and_measures_latency() {
    let g = load_hello("openai-realtime").await;
    // Completed: the commit's `completed` came and the client closed.
    assert_eq!(
        (g["completed"].as_u64(), g["failed"].as_u64()),
        (Some(3), Some(0)),
        "{g}"
    );
    // Deltas are counted but have no audio position (no partial latency).
    assert!(g["partials"].as_u64().unwrap() > 0, "{g}");
    assert_eq!(g["partial"]["count"], 0, "{g}");
    assert!(g["final"]["count"].as_u64().unwrap() > 0, "{g}");
    assert_eq!(g["errors"], serde_json::json!({}), "{g}");
}
