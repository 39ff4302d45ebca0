//! The harness commands against the real gateway (in-process, port 0) in front of the
//! zero-compute back end: `eval` judges ceilings and words on silence, `load` runs
//! sessions on both paths and counts what the gateway told them.

use std::time::Duration;

use sgw_testkit::Gateway;
use sgw_testkit::sim::SimOptions;
use sgw_testkit::sim::local::{self as sim};
use sgw_tools::client::wav::write_wav;
use sgw_tools::golden::{self, EvalOptions, EvalReport, Manifest};
use sgw_tools::load::{self, LoadOptions};
use speech_gateway::config::BackendProtocol;

fn hello() -> std::path::PathBuf {
    sgw_testkit::repo().join("samples/hello.wav")
}

fn sim_options() -> SimOptions {
    SimOptions {
        vocabulary: vec!["hello".into()],
        ..SimOptions::default()
    }
}

#[tokio::test]
async fn eval_fails_exactly_the_clips_that_break_a_ceiling_or_speak_on_silence() {
    let server = sim::start(BackendProtocol::Riva, sim_options()).await;
    let gw = Gateway::with_backends(&[format!("riva://{}", server.addr)]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("clips")).unwrap();
    std::fs::copy(hello(), dir.path().join("clips/speech.wav")).unwrap();
    std::fs::write(
        dir.path().join("clips/silence.wav"),
        write_wav(16_000, &[0; 32_000]),
    )
    .unwrap();
    let noise: Vec<i16> = (0..32_000)
        .map(|i| if i % 2 == 0 { 3000 } else { -2000 })
        .collect();
    std::fs::write(
        dir.path().join("clips/noise.wav"),
        write_wav(16_000, &noise),
    )
    .unwrap();
    let clip = |id: &str, audio: &str, text: &str, ceiling: f64, max_words: Option<usize>| {
        format!(
            "[[clip]]\nid = \"{id}\"\naudio = \"clips/{audio}.wav\"\ntext = \"{text}\"\nlanguage = \"en-US\"\n\
             tags = [\"t\"]\nwer_ceiling = {ceiling}\n{}source = \"test\"\nlicence = \"test\"\n\n",
            max_words.map_or(String::new(), |m| format!("max_words = {m}\n"))
        )
    };
    let manifest_text = [
        clip("wrong-strict", "speech", "goodbye", 0.5, None),
        clip("wrong-loose", "speech", "goodbye", 10.0, None),
        clip("silence", "silence", "", 0.0, Some(0)),
        clip("noise", "noise", "", 0.0, Some(0)),
    ]
    .concat();
    std::fs::write(dir.path().join("manifest.toml"), manifest_text).unwrap();
    let manifest = Manifest::load(&dir.path().join("manifest.toml")).unwrap();
    let routes = vec!["default".to_string()];
    let opts = EvalOptions {
        url: gw.ws_url(),
        speed: 8.0,
        concurrency: 2,
        client_rate: None,
        routes: routes.clone(),
        tags: vec![],
        only: vec![],
        token: None,
        expected_dir: Some(dir.path().join("expected")),
        write_expected: true,
    };
    let results = golden::eval::run(&manifest, &opts).await.unwrap();
    let report = EvalReport::new(&opts.url, 8.0, 2, &routes, results);
    let failed: Vec<&str> = report
        .clips
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(failed, ["wrong-strict", "noise"], "{}", report.markdown());
    let silence = report.clips.iter().find(|c| c.id == "silence").unwrap();
    assert_eq!(silence.words_on_silence, Some(0));
    let noise = report.clips.iter().find(|c| c.id == "noise").unwrap();
    assert!(noise.words_on_silence.unwrap() > 0);
    let speech = report.clips.iter().find(|c| c.id == "wrong-loose").unwrap();
    assert!(speech.hypothesis.contains("hello"), "{}", speech.hypothesis);
    assert!(speech.partial.count > 0 && speech.final_.count > 0);
    let written =
        std::fs::read_to_string(dir.path().join("expected/default/wrong-loose.txt")).unwrap();
    assert_eq!(written.trim(), speech.hypothesis);
    golden::write_reports(&report, &dir.path().join("out")).unwrap();
    for file in ["report.json", "report.md", "latency.svg"] {
        assert!(dir.path().join("out").join(file).is_file(), "{file}");
    }

    // A missing clip is named, with the command that makes it.
    std::fs::remove_file(dir.path().join("clips/noise.wav")).unwrap();
    let err = golden::eval::run(&manifest, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("noise.wav") && err.contains("make-golden.sh"),
        "{err}"
    );
}

fn load_options(url: String, sessions: usize) -> LoadOptions {
    LoadOptions {
        url,
        sessions,
        duration: Duration::from_secs(3),
        ramp: Duration::from_millis(500),
        clips: hello(),
        frame_ms: 100,
        gap: Duration::from_millis(500),
        route: None,
        pid: None,
        direct_riva: None,
        direct_sessions: None,
        progress: false,
    }
}

#[tokio::test]
async fn load_measures_both_paths_and_reads_the_gateways_process_metrics() {
    let server = sim::start(BackendProtocol::Riva, sim_options()).await;
    let gw = Gateway::with_backends(&[format!("riva://{}", server.addr)]).await;
    gw.wait_ready().await;
    let mut opts = load_options(gw.ws_url(), 4);
    opts.direct_riva = Some(server.addr);
    opts.direct_sessions = Some(2);
    let report = load::run(&opts).await.unwrap();
    println!("{}", report.markdown());
    let g = &report.gateway;
    assert_eq!((g.completed, g.failed), (4, 0), "{:?}", g.errors);
    assert!(g.partial.count > 0 && g.final_.count > 0);
    assert!(g.frames_sent >= 4 * 20, "{} frames", g.frames_sent);
    let d = report.direct.as_ref().unwrap();
    assert_eq!((d.completed, d.failed), (2, 0), "{:?}", d.errors);
    assert!(d.partial.count > 0 && d.final_.count > 0);
    assert!(report.added().unwrap().partial_p99_ms.is_some());
    assert_eq!(report.resources.source, "metrics");
    assert!(report.resources.peak_rss_bytes.unwrap() > 0);
    // Measured even with overload refusal off (as the test gateway runs).
    assert!(report.resources.peak_runtime_delay_ms.unwrap() >= 0.0);
    assert!(report.markdown().contains("runtime delay peak"));
}

#[tokio::test]
async fn load_counts_sessions_the_gateway_refused_by_their_code() {
    let server = sim::start(BackendProtocol::Riva, sim_options()).await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", format!("riva://{}", server.addr)),
        ("SGW_ADMISSION__MAX_SESSIONS", "2".into()),
    ])
    .await;
    gw.wait_ready().await;
    let report = load::run(&load_options(gw.ws_url(), 5)).await.unwrap();
    let g = &report.gateway;
    assert_eq!((g.completed, g.failed), (2, 3));
    assert_eq!(g.errors.get("HTTP 503"), Some(&3), "{:?}", g.errors);
    assert!(report.markdown().contains("| gateway | HTTP 503 | 3 |"));
}

#[tokio::test]
async fn load_counts_starts_a_route_refused_as_refused_sessions() {
    let server = sim::start(BackendProtocol::Riva, sim_options()).await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", format!("riva://{}", server.addr)),
        ("SGW_ADMISSION__ROUTES__DEFAULT", "2".into()),
    ])
    .await;
    gw.wait_ready().await;
    let report = load::run(&load_options(gw.ws_url(), 5)).await.unwrap();
    let g = &report.gateway;
    // A refused start ends that session at once: no audio is streamed into refusals.
    assert_eq!((g.completed, g.failed), (2, 3), "{:?}", g.errors);
    assert_eq!(
        g.errors.get("refused: RATE_LIMIT_EXCEEDED"),
        Some(&3),
        "{:?}",
        g.errors
    );
    assert_eq!(g.errors.len(), 1, "{:?}", g.errors);
}
