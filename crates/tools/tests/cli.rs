//! The binaries as operators and users run them: `speech-gateway serve` in front of a Riva
//! double, stopped with SIGTERM, and `sgw transcribe` streaming a WAV through it.

use std::process::Command;

use sgw_testkit::GatewayProcess;
use sgw_testkit::riva_double::{Mode, RivaDouble};
use sgw_tools::client::wav::write_wav;

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
