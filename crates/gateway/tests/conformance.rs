//! Wire conformance with the official Python packages `nvidia-riva-client` and
//! `tritonclient`.
//!
//! - Our `.proto` files are compiled with the protoc in `grpcio-tools` and compared field
//!   by field with the descriptors those packages ship (`check_protos.py`).
//! - The gateway streams through servers built on the official generated servicers
//!   (`riva_server.py`, `triton_server.py`): they record what our adapters sent, and
//!   answer with results our adapters must map.
//!
//! Both need the Python venv that `scripts/py-env.sh` builds (pinned with hashes); the
//! tests run it themselves, so `cargo nextest run` after `.ci/run`'s setup is all it takes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};
use sgw_testkit::{Gateway, bytes_for, tone};

fn repo() -> &'static Path {
    sgw_testkit::repo()
}

fn python() -> PathBuf {
    sgw_testkit::conformance_python()
}

#[test]
fn our_protos_match_the_official_riva_and_health_schemas() {
    let out = Command::new(python())
        .arg(repo().join("tests/conformance/check_protos.py"))
        .current_dir(repo())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "proto check failed:\n{text}");
    assert!(text.contains("checked"), "{text}");
}

/// A server built on official stubs (`tests/conformance/SCRIPT`), killed on drop.
pub struct OfficialServer {
    child: Child,
    port: u16,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

impl OfficialServer {
    pub fn start(script: &str) -> OfficialServer {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("record.jsonl");
        let (child, port) = sgw_testkit::python_server(
            script,
            &[
                "--port".as_ref(),
                "0".as_ref(),
                "--record".as_ref(),
                record.as_os_str(),
            ],
        );
        OfficialServer {
            child,
            port,
            record,
            _dir: dir,
        }
    }

    pub fn url(&self, scheme: &str, model: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{model}", self.port)
    }

    /// Waits for `n` record lines.
    pub async fn records(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(&self.record) {
                let lines: Vec<Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                if lines.len() >= n {
                    return lines;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the official server recorded fewer than {n} calls");
    }
}

impl Drop for OfficialServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_gateway_interoperates_with_the_official_riva_stubs() {
    let riva = OfficialServer::start("riva_server.py");
    let gw = Gateway::with_backends(&[riva.url("riva", "")]).await;
    // the official health servicer makes the gateway ready
    gw.wait_ready().await;

    let mut c = gw.connect().await;
    c.start(
        json!({"language":"en-US","punctuate":false,"profanity_filter":true,
                   "endpointing_ms":600,"custom_configuration":{"vad":"on"}}),
    )
    .await;
    let audio = tone(800, 16_000);
    for chunk in audio.chunks(bytes_for(100, 16_000)) {
        c.audio(chunk).await;
    }
    let p = c.until("partial").await;
    assert_eq!(p["text"], "hello");
    assert!(
        p["timestamp_ms"].as_u64().unwrap() > 0,
        "audio_processed (s) becomes ms: {p}"
    );
    c.end().await;
    let f = c.until("final").await;
    assert_eq!(f["text"], "hello world");
    assert!((f["confidence"].as_f64().unwrap() - 0.875).abs() < 1e-6);
    let words = f["words"].as_array().unwrap();
    assert_eq!(words.len(), 2);
    assert_eq!(words[0]["word"], "hello");
    assert!(
        (words[0]["start"].as_f64().unwrap() - 0.1).abs() < 1e-6,
        "int ms become seconds"
    );
    assert!((words[1]["end"].as_f64().unwrap() - 0.9).abs() < 1e-6);
    assert!((words[1]["confidence"].as_f64().unwrap() - 0.85).abs() < 1e-4);
    let (_, close) = c.drain().await;
    assert_eq!(close, Some(1000));

    let rec = &riva.records(1).await[0];
    assert_eq!(rec["rpc"], "StreamingRecognize");
    assert_eq!(
        rec["errors"],
        json!([]),
        "request order as Riva demands: {rec}"
    );
    assert_eq!(rec["audio_bytes"], audio.len(), "every byte arrived");
    assert_eq!(rec["cancelled"], false);
    let cfg = &rec["config"];
    assert_eq!(cfg["interim_results"], true);
    let rc = &cfg["config"];
    assert_eq!(rc["encoding"], "LINEAR_PCM");
    assert_eq!(rc["sample_rate_hertz"], 16000);
    assert_eq!(rc["language_code"], "en-US");
    assert_eq!(rc["max_alternatives"], 1);
    assert_eq!(rc["profanity_filter"], true);
    assert_eq!(rc["enable_word_time_offsets"], true);
    assert!(
        rc.get("enable_automatic_punctuation")
            .is_none_or(|v| v == false)
    );
    assert_eq!(rc["custom_configuration"]["vad"], "on");
    assert_eq!(rc["endpointing_config"]["stop_history"], 600);
}

#[tokio::test]
async fn a_vanished_client_cancels_the_call_on_the_official_server() {
    let riva = OfficialServer::start("riva_server.py");
    let gw = Gateway::with_backends(&[riva.url("riva", "")]).await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    c.audio(&tone(300, 16_000)).await;
    assert_eq!(c.until("partial").await["text"], "hello");
    drop(c);
    let rec = &riva.records(1).await[0];
    assert_eq!(rec["cancelled"], true, "{rec}");
    gw.wait_metric("sgw_sessions_active", 0.0).await;
}

#[tokio::test]
async fn the_gateway_interoperates_with_the_official_triton_stubs() {
    let triton = OfficialServer::start("triton_server.py");
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", triton.url("triton", "/asr_stream")),
        ("SGW_ROUTES__OFFLINE", triton.url("triton", "/asr_offline")),
    ])
    .await;
    gw.wait_ready().await;

    // streaming model
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let audio = tone(600, 16_000);
    for chunk in audio.chunks(bytes_for(100, 16_000)) {
        c.audio(chunk).await;
    }
    assert_eq!(c.until("partial").await["text"], "hello");
    c.end().await;
    let f = c.until("final").await;
    assert_eq!(f["text"], "hello world");
    assert!((f["confidence"].as_f64().unwrap() - 0.75).abs() < 1e-6);
    assert!(
        (f["words"][1]["end"].as_f64().unwrap() - 0.6).abs() < 1e-3,
        "{f}"
    );
    let (_, close) = c.drain().await;
    assert_eq!(close, Some(1000));
    let recs = triton.records(7).await;
    let stream: Vec<&Value> = recs
        .iter()
        .filter(|r| r["rpc"] == "ModelStreamInfer")
        .collect();
    assert_eq!(
        stream.len(),
        7,
        "6 audio requests and the sequence_end: {recs:?}"
    );
    let seq = &stream[0]["parameters"]["sequence_id"];
    assert!(seq.as_i64().unwrap() > 0);
    for (i, r) in stream.iter().enumerate() {
        assert_eq!(r["model"], "asr_stream");
        assert_eq!(&r["parameters"]["sequence_id"], seq);
        assert_eq!(r["parameters"]["triton_enable_empty_final_response"], true);
        assert_eq!(
            r["parameters"].get("sequence_start").is_some(),
            i == 0,
            "{r}"
        );
        assert_eq!(r["parameters"].get("sequence_end").is_some(), i == 6, "{r}");
        assert_eq!(r["inputs"][0]["name"], "AUDIO");
        assert_eq!(r["inputs"][0]["datatype"], "INT16");
        let samples = r["inputs"][0]["shape"][0].as_u64().unwrap();
        assert_eq!(
            r["raw_bytes"][0].as_u64().unwrap(),
            samples * 2,
            "shape matches the bytes"
        );
        assert_eq!(
            r["outputs"],
            json!(["TRANSCRIPT", "IS_FINAL", "WORDS", "CONFIDENCE"])
        );
    }
    let total: u64 = stream
        .iter()
        .map(|r| r["raw_bytes"][0].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, audio.len());

    // offline model: a voiced signal between silences is one ModelInfer
    let mut c = gw.connect().await;
    c.start(json!({"model":"offline","interim_results":false}))
        .await;
    let mut audio = vec![0u8; bytes_for(300, 16_000)];
    audio.extend((0..16 * 1_000u64).flat_map(|i| {
        let t = i as f64 / 16_000.0;
        let buzz: f64 = (1..12)
            .map(|h| (t * 140.0 * h as f64 * std::f64::consts::TAU).sin() / h as f64)
            .sum();
        ((buzz * 6000.0) as i16).to_le_bytes()
    }));
    audio.extend(vec![0u8; bytes_for(700, 16_000)]);
    for chunk in audio.chunks(bytes_for(100, 16_000)) {
        c.audio(chunk).await;
    }
    c.end().await;
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000));
    let finals: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "final").collect();
    assert_eq!(finals.len(), 1, "{msgs:?}");
    assert_eq!(finals[0]["text"], "hello world");
    let recs = triton.records(8).await;
    let unary: Vec<&Value> = recs.iter().filter(|r| r["rpc"] == "ModelInfer").collect();
    assert_eq!(unary.len(), 1);
    assert_eq!(unary[0]["model"], "asr_offline");
    assert_eq!(
        unary[0]["parameters"],
        json!({}),
        "no sequence parameters on unary calls"
    );
}
