//! End to end against the real local back end: the `tritonserver` binary serving Whisper
//! tiny.en on CPU (`scripts/local-triton.sh`), the real gateway in-process, and real
//! speech synthesised by espeak-ng (resampled/mixed by sox). Both routes: `default` →
//! `asr_stream` (streaming model), `offline` → `asr_offline` (gateway-side VAD).
//!
//! The tests start the local Triton themselves (idempotent: quick when it already runs)
//! and run one at a time (`.config/nextest.toml`, group `heavy`): they share one
//! CPU-bound server. Audio is streamed faster than real time (`SPEED`) to keep CI short.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use speech_gateway::client::transcribe::{
    ClientEvent, TranscribeOptions, TranscribeReport, transcribe,
};
use speech_gateway::client::wav::{Wav, read_wav_file};
use speech_gateway::client::wer::wer;
use support::Gateway;

/// Streaming pace for these tests (1 = real time).
const SPEED: f64 = 2.0;
/// Per-clip WER ceiling for clean synthetic speech with Whisper tiny.en.
const WER_CEILING: f64 = 0.35;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Starts the local Triton once per test process; returns its gRPC port.
fn triton_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo().join("scripts/local-triton.sh"))
            .arg("start")
            .status()
            .expect("bash runs");
        assert!(
            status.success(),
            "scripts/local-triton.sh start failed (see its log in .venv/)"
        );
        std::env::var("TRITON_GRPC_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(8001)
    })
}

async fn gateway() -> Gateway {
    let port = triton_port();
    Gateway::start(&[
        (
            "SGW_ROUTES__DEFAULT",
            format!("triton://127.0.0.1:{port}/asr_stream"),
        ),
        (
            "SGW_ROUTES__OFFLINE",
            format!("triton://127.0.0.1:{port}/asr_offline"),
        ),
    ])
    .await
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (espeak-ng and sox are needed)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// espeak-ng speech of `text` as a 16-bit mono WAV at `rate`.
fn speech(dir: &Path, name: &str, text: &str, rate: u32) -> PathBuf {
    let raw = dir.join(format!("{name}.raw.wav"));
    let out = dir.join(format!("{name}.wav"));
    run(Command::new("espeak-ng")
        .args(["-s", "150", "-w"])
        .arg(&raw)
        .arg(text));
    run(Command::new("sox")
        .arg(&raw)
        .args(["-r", &rate.to_string(), "-c", "1", "-b", "16"])
        .arg(&out));
    out
}

struct Run {
    report: TranscribeReport,
    /// Event kinds in arrival order ('p' partial, 'f' final).
    order: String,
}

impl Run {
    fn text(&self) -> String {
        self.report
            .finals
            .iter()
            .map(|f| f.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

async fn stream(gw: &Gateway, wav: &Wav, route: Option<&str>) -> Run {
    let mut opts = TranscribeOptions::new(gw.ws_url());
    opts.speed = SPEED;
    opts.model = route.map(String::from);
    let mut order = String::new();
    let report = transcribe(wav, &opts, |ev| match ev {
        ClientEvent::Partial(_) => order.push('p'),
        ClientEvent::Final(_) => order.push('f'),
        _ => {}
    })
    .await
    .expect("the session ran");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.close_code, Some(1000));
    Run { report, order }
}

const SENTENCES: [&str; 3] = [
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to bring your notebook to the meeting tomorrow morning.",
    "Our train leaves the station at seven and arrives before noon.",
];

#[tokio::test]
async fn both_routes_transcribe_speech_and_the_streaming_route_sends_partials_first() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{} {}", SENTENCES[0], SENTENCES[1]);
    let clip = read_wav_file(&speech(dir.path(), "two", &text, 16_000)).unwrap();
    assert!(clip.duration_seconds() >= 5.0);
    let gw = gateway().await;

    let streaming = stream(&gw, &clip, None).await;
    let w = wer(&text, &streaming.text());
    println!(
        "streaming: WER {w:.3} `{}` order {}",
        streaming.text(),
        streaming.order
    );
    assert!(
        w <= WER_CEILING,
        "streaming WER {w:.3}: `{}`",
        streaming.text()
    );
    assert!(
        streaming.order.starts_with('p'),
        "a partial before the first final: {}",
        streaming.order
    );

    let offline = stream(&gw, &clip, Some("offline")).await;
    let w = wer(&text, &offline.text());
    println!(
        "offline: WER {w:.3} `{}` order {}",
        offline.text(),
        offline.order
    );
    assert!(w <= WER_CEILING, "offline WER {w:.3}: `{}`", offline.text());
    assert!(offline.order.contains('f'));
}

#[tokio::test]
async fn faint_noise_yields_no_text_on_either_route() {
    let dir = tempfile::tempdir().unwrap();
    let noise = dir.path().join("noise.wav");
    run(Command::new("sox")
        .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
        .arg(&noise)
        .args(["synth", "5", "whitenoise", "vol", "0.01"]));
    let clip = read_wav_file(&noise).unwrap();
    let gw = gateway().await;
    for route in [None, Some("offline")] {
        let r = stream(&gw, &clip, route).await;
        assert_eq!(r.text().trim(), "", "{route:?} invented words on noise");
    }
}

/// Telephony audio: the client sends 8 kHz, the gateway resamples to the model's 16 kHz.
/// The offline route is used because its result does not depend on chunk timing (one
/// decode of the whole utterance), so the figure is repeatable.
#[tokio::test]
async fn an_8khz_clip_is_resampled_by_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let clip = read_wav_file(&speech(dir.path(), "tel", SENTENCES[1], 8_000)).unwrap();
    assert_eq!(clip.sample_rate, 8_000);
    let gw = gateway().await;
    let r = stream(&gw, &clip, Some("offline")).await;
    let w = wer(SENTENCES[1], &r.text());
    println!("8 kHz: WER {w:.3} `{}`", r.text());
    assert!(w <= WER_CEILING, "8 kHz WER {w:.3}: `{}`", r.text());
}

#[tokio::test]
async fn a_clip_longer_than_a_minute_streams_through() {
    let dir = tempfile::tempdir().unwrap();
    let mut reference = Vec::new();
    let mut parts = Vec::new();
    for i in 0..9 {
        let s = SENTENCES[i % SENTENCES.len()];
        reference.push(s);
        parts.push(speech(dir.path(), &format!("s{i}"), s, 16_000));
        let gap = dir.path().join(format!("gap{i}.wav"));
        run(Command::new("sox")
            .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
            .arg(&gap)
            .args(["trim", "0", "3"]));
        parts.push(gap);
    }
    let long = dir.path().join("long.wav");
    run(Command::new("sox").args(&parts).arg(&long));
    let clip = read_wav_file(&long).unwrap();
    assert!(
        clip.duration_seconds() > 60.0,
        "{} s",
        clip.duration_seconds()
    );
    let gw = gateway().await;
    let r = stream(&gw, &clip, None).await;
    let text = reference.join(" ");
    let w = wer(&text, &r.text());
    println!(
        "long ({:.0} s): {} finals, WER {w:.3}",
        clip.duration_seconds(),
        r.report.finals.len()
    );
    assert!(
        r.report.finals.len() >= 5,
        "the model endpoints a long stream into many finals"
    );
    assert!(w <= WER_CEILING, "long-clip WER {w:.3}");
}
