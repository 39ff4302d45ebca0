//! The Deepgram-compatible live dialect (`/v1/listen`) driven by Deepgram's official
//! Python SDK (`deepgram-sdk`, through `tests/conformance/deepgram_client.py`) against the
//! real gateway on port 0, in front of the scripted Riva double. The SDK parses every
//! message into its typed models: a field the gateway got wrong fails here.

use std::time::Duration;

use serde_json::Value;
use sgw_testkit::Gateway;
use sgw_testkit::riva_double::{Mode, RivaDouble};

struct Setup {
    gw: Gateway,
    token: String,
    /// An API key listed in the key file as `sdk` (no cap).
    api_key: String,
    /// An API key listed as `capped`, `max_sessions = 1`.
    capped_key: String,
    keys_file: std::path::PathBuf,
    _riva: RivaDouble,
    _dir: tempfile::TempDir,
}

/// A gateway with JWT and API-key authentication in front of a Riva double that finals
/// every `final_every_ms` of audio (and at the half-close).
async fn setup(final_every_ms: u64) -> Setup {
    setup_with(final_every_ms, &[]).await
}

/// [`setup`] with more `SGW_*` settings.
async fn setup_with(final_every_ms: u64, extra: &[(&str, String)]) -> Setup {
    let riva = RivaDouble::start(Mode::Auto { final_every_ms }).await;
    let s = sgw_testkit::Secured::start(&riva.url(), &[("sdk", 0), ("capped", 1)], extra).await;
    let [api_key, capped_key]: [String; 2] = s.api_keys.try_into().unwrap();
    Setup {
        gw: s.gw,
        token: s.token,
        api_key,
        capped_key,
        keys_file: s.keys_file,
        _riva: riva,
        _dir: s.dir,
    }
}

/// Runs the SDK client on `samples/hello.wav`; its JSON report.
async fn sdk(gw: &Gateway, key: &str, extra: &[&str]) -> Value {
    let wav = sgw_testkit::repo().join("samples/hello.wav");
    sgw_testkit::deepgram_sdk(&format!("ws://{}", gw.addr), key, &wav, extra).await
}

fn of_class<'a>(report: &'a Value, class: &str) -> Vec<&'a Value> {
    report["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["class"] == class)
        .collect()
}

/// `samples/hello.wav`: 65,502 samples at 16 kHz.
const CLIP_SECONDS: f64 = 65_502.0 / 16_000.0;

#[tokio::test(flavor = "multi_thread")]
async fn the_official_sdk_gets_interim_and_final_results_then_metadata() {
    let s = setup(1_000).await;
    let report = sdk(&s.gw, &s.token, &["--keepalive"]).await;
    let results = of_class(&report, "ListenV1Results");
    let interim = results.iter().filter(|r| r["is_final"] == false).count();
    let finals: Vec<_> = results.iter().filter(|r| r["is_final"] == true).collect();
    assert!(interim > 0, "interim results: {report}");
    assert!(finals.len() >= 4, "a final per second of audio: {report}");
    // Finals tile the audio in order, and their words sit inside their window.
    let mut end = 0.0;
    for f in &finals {
        let start = f["start"].as_f64().unwrap();
        let duration = f["duration"].as_f64().unwrap();
        assert!(start >= end - 1e-6, "finals are append-only: {report}");
        end = start + duration;
        for w in f["words"].as_array().unwrap() {
            assert!(w[1].as_f64().unwrap() >= start - 1e-6 && w[2].as_f64().unwrap() <= end + 1e-6);
        }
    }
    assert!(
        (end - CLIP_SECONDS).abs() < 0.01,
        "finals cover the clip: {end}"
    );
    let ids: std::collections::HashSet<_> =
        results.iter().map(|r| r["request_id"].clone()).collect();
    assert_eq!(ids.len(), 1, "one request id per session");
    // CloseStream: the last message is Metadata, with the audio's length.
    let last = report["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(last["class"], "ListenV1Metadata", "{report}");
    assert!((last["duration"].as_f64().unwrap() - CLIP_SECONDS).abs() < 0.001);
    assert_eq!(last["channels"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn finalize_makes_the_open_utterance_final_and_the_stream_goes_on() {
    // The double finals only at a half-close: every final here comes from Finalize or
    // CloseStream.
    let s = setup(600_000).await;
    let report = sdk(&s.gw, &s.token, &["--finalize-after-ms", "1500"]).await;
    let finals: Vec<_> = of_class(&report, "ListenV1Results")
        .into_iter()
        .filter(|r| r["is_final"] == true)
        .collect();
    assert_eq!(
        finals.len(),
        2,
        "one final at Finalize, one at CloseStream: {report}"
    );
    assert_eq!(finals[0]["from_finalize"], true, "{report}");
    assert_eq!(finals[1]["from_finalize"], false, "{report}");
    let first_end = finals[0]["start"].as_f64().unwrap() + finals[0]["duration"].as_f64().unwrap();
    assert!((1.4..=CLIP_SECONDS).contains(&first_end), "{report}");
    let second_start = finals[1]["start"].as_f64().unwrap();
    assert!(
        (second_start - first_end).abs() < 1e-6,
        "no audio lost or repeated: {report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_and_an_unknown_model_are_refused_before_the_upgrade() {
    let s = setup(1_000).await;
    let refused = sdk(&s.gw, "not-a-key", &[]).await;
    assert_eq!(refused["refused"], 401, "{refused}");
    let body: Value = serde_json::from_str(refused["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["err_code"], "AUTHENTICATION_FAILED",
        "Deepgram's error shape: {body}"
    );
    let refused = sdk(&s.gw, &s.token, &["--model", "nova-3"]).await;
    assert_eq!(refused["refused"], 400, "{refused}");
    assert!(
        refused["body"]
            .as_str()
            .unwrap()
            .contains("unknown model `nova-3`"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_are_refused_in_deepgrams_shape_and_bad_messages_answered_in_band() {
    use futures::{SinkExt, StreamExt};
    use sgw_testkit::{attempt, tone};
    use tokio_tungstenite::tungstenite::Message;

    let s = setup(1_000).await;
    let auth = format!("Token {}", s.token);
    let headers = [("authorization", auth.as_str())];
    for (query, needle) in [
        ("encoding=opus", "encoding `opus`"),
        ("sample_rate=0", "sample_rate"),
        ("channels=9", "channels"),
        ("interim_results=maybe", "interim_results"),
        ("endpointing=5", "endpointing"),
        ("keywords=alpha:lots", "keywords"),
    ] {
        let url = format!("ws://{}/v1/listen?model=default&{query}", s.gw.addr);
        let Err((status, _, body)) = attempt(&url, &headers).await else {
            panic!("{query} was accepted");
        };
        assert_eq!(status, 400, "{query}: {body}");
        let msg = body["err_msg"].as_str().unwrap();
        assert!(msg.contains(needle), "{query}: {body}");
    }

    // In band: a text frame that is not a control message is answered with an Error
    // message, and the session goes on to its results and Metadata.
    let url = format!(
        "ws://{}/v1/listen?model=default&encoding=linear16",
        s.gw.addr
    );
    let mut ws = attempt(&url, &headers).await.expect("accepted");
    ws.send(Message::Text("not json".into())).await.unwrap();
    for _ in 0..3 {
        ws.send(Message::Binary(tone(500, 16_000).into()))
            .await
            .unwrap();
    }
    ws.send(Message::Text(r#"{"type":"CloseStream"}"#.into()))
        .await
        .unwrap();
    let mut types = Vec::new();
    let mut close = None;
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                types.push(v["type"].as_str().unwrap().to_string());
            }
            Message::Close(f) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(
        types.first().map(String::as_str),
        Some("Error"),
        "{types:?}"
    );
    assert!(types.iter().any(|t| t == "Results"), "{types:?}");
    assert_eq!(
        types.last().map(String::as_str),
        Some("Metadata"),
        "{types:?}"
    );
    assert_eq!(close, Some(1000));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_is_closed_after_the_deepgram_idle_timeout() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let riva = RivaDouble::start(Mode::Auto {
        final_every_ms: 1_000,
    })
    .await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_DEEPGRAM__IDLE_TIMEOUT", "1s".into()),
    ])
    .await;
    let url = format!("ws://{}/v1/listen?model=default", gw.addr);
    let mut ws = sgw_testkit::attempt(&url, &[]).await.expect("accepted");
    let started = std::time::Instant::now();
    let mut types = Vec::new();
    let mut close = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        match m {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                types.push(format!("{} {}", v["type"], v["code"]));
            }
            Message::Close(f) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    let waited = started.elapsed();
    assert_eq!(close, Some(1008), "{types:?}");
    assert_eq!(
        types,
        vec![
            r#""Error" "SESSION_TIMEOUT""#.to_string(),
            r#""Metadata" null"#.to_string()
        ]
    );
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keywords_and_keyterms_reach_riva_as_speech_contexts() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::start(&[("SGW_ROUTES__DEFAULT", riva.url())]).await;
    let url = format!(
        "ws://{}/v1/listen?model=default&keywords=alpha:2&keywords=beta&keyterm=gamma%20delta",
        gw.addr
    );
    let _ws = sgw_testkit::attempt(&url, &[]).await.expect("accepted");
    // The settings come with the request: the stream opens before any audio.
    let stream = riva.next_stream().await;
    let contexts: Vec<(Vec<String>, f32)> = stream
        .config
        .config
        .as_ref()
        .unwrap()
        .speech_contexts
        .iter()
        .map(|c| (c.phrases.clone(), c.boost))
        .collect();
    assert_eq!(
        contexts,
        vec![
            (vec!["alpha".to_string()], 2.0),
            (vec!["beta".to_string(), "gamma delta".to_string()], 1.0)
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_from_the_key_file_opens_sessions_and_is_counted_by_name() {
    let s = setup(1_000).await;
    let report = sdk(&s.gw, &s.api_key, &[]).await;
    assert!(
        !of_class(&report, "ListenV1Results").is_empty(),
        "results with an API key: {report}"
    );
    assert_eq!(of_class(&report, "ListenV1Metadata").len(), 1, "{report}");
    s.gw.wait_metric("sgw_key_sessions_active{key=\"sdk\"}", 0.0)
        .await;
    assert_eq!(
        s.gw.metric("sgw_key_sessions_total{key=\"sdk\"}").await,
        Some(1.0)
    );
    let seconds =
        s.gw.metric("sgw_audio_seconds_total{key=\"sdk\"}")
            .await
            .expect("the key's audio is counted");
    assert!((seconds - CLIP_SECONDS).abs() < 0.01, "{seconds}");
    // The key's name labels metrics; the key itself appears nowhere.
    let (_, metrics) = s.gw.get("/metrics").await;
    assert!(!metrics.contains(&s.api_key));

    // A key shaped like one but not in the file; a JWT still works beside API keys.
    let unknown = speech_gateway::security::apikeys::generate().unwrap();
    let refused = sdk(&s.gw, &unknown, &[]).await;
    assert_eq!(refused["refused"], 401, "{refused}");
    assert!(
        refused["body"]
            .as_str()
            .unwrap()
            .contains("API key is not known"),
        "{refused}"
    );
    assert_eq!(
        s.gw.metric("sgw_auth_failures_total{reason=\"api_key\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_at_its_max_sessions_is_refused_with_429_until_one_ends() {
    use sgw_testkit::attempt;

    let s = setup(1_000).await;
    let url = format!("ws://{}/v1/listen?model=default", s.gw.addr);
    let auth = format!("Token {}", s.capped_key);
    let headers = [("authorization", auth.as_str())];
    let mut first = attempt(&url, &headers).await.expect("the first session");
    let Err((status, head, body)) = attempt(&url, &headers).await else {
        panic!("a second session past max_sessions = 1 was accepted");
    };
    assert_eq!(status, 429, "{body}");
    assert!(head.iter().any(|(k, _)| k == "retry-after"), "{head:?}");
    assert_eq!(body["err_code"], "RATE_LIMIT_EXCEEDED", "{body}");
    assert!(
        body["err_msg"].as_str().unwrap().contains("this API key"),
        "{body}"
    );
    // Another key is not held back by it.
    let other = format!("Token {}", s.api_key);
    let mut ok = attempt(&url, &[("authorization", other.as_str())])
        .await
        .expect("another key's session");
    assert_eq!(
        s.gw.metric("sgw_rejections_total{reason=\"key_session_limit\"}")
            .await,
        Some(1.0)
    );
    first.close(None).await.unwrap();
    ok.close(None).await.unwrap();
    s.gw.wait_metric("sgw_key_sessions_active{key=\"capped\"}", 0.0)
        .await;
    let mut again = attempt(&url, &headers)
        .await
        .expect("a place once the first session ended");
    again.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_file_reloads_on_sighup_and_a_removed_key_is_refused() {
    use sgw_testkit::attempt;
    use speech_gateway::security::apikeys;

    let s = setup(1_000).await;
    let url = format!("ws://{}/v1/listen?model=default", s.gw.addr);
    let fresh = apikeys::generate().unwrap();
    // The `sdk` key is revoked, a new one issued.
    std::fs::write(
        &s.keys_file,
        apikeys::entry("fresh", &fresh, 0) + &apikeys::entry("capped", &s.capped_key, 1),
    )
    .unwrap();
    // The gateway answers requests only once its SIGHUP handler is installed.
    assert_eq!(s.gw.get("/health").await.0, 200);
    // SAFETY: raising a signal this process handles (the gateway runs in it).
    assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
    s.gw.wait_metric("sgw_reloads_total{what=\"api_keys\",result=\"ok\"}", 1.0)
        .await;
    let auth = format!("Token {fresh}");
    attempt(&url, &[("authorization", auth.as_str())])
        .await
        .expect("the new key is accepted after the reload");
    let revoked = format!("Token {}", s.api_key);
    let Err((status, _, _)) = attempt(&url, &[("authorization", revoked.as_str())]).await else {
        panic!("a revoked key was accepted");
    };
    assert_eq!(status, 401);
}

/// Uploads `file` (under `samples/`) with the SDK's `transcribe_file`; its JSON report.
async fn upload(gw: &Gateway, key: &str, file: &str, extra: &[&str]) -> Value {
    let path = sgw_testkit::repo().join("samples").join(file);
    let mut args = vec!["--prerecorded"];
    args.extend_from_slice(extra);
    sgw_testkit::deepgram_sdk(&format!("ws://{}", gw.addr), key, &path, &args).await
}

/// The words of one channel of a prerecorded report: (word, start, end).
fn file_words(report: &Value, channel: usize) -> Vec<(String, f64, f64)> {
    report["channels"][channel]["words"]
        .as_array()
        .unwrap_or_else(|| panic!("channel {channel}: {report}"))
        .iter()
        .map(|w| {
            (
                w[0].as_str().unwrap().to_string(),
                w[1].as_f64().unwrap(),
                w[2].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn prerecorded_files_in_every_format_are_transcribed_through_the_sdk() {
    let s = setup(1_000).await;
    for file in [
        "hello.wav",
        "formats/hello.flac",
        "formats/hello.mp3",
        "formats/hello.ogg",
        "formats/hello-vorbis.ogg",
        "formats/hello.m4a",
    ] {
        let report = upload(&s.gw, &s.api_key, file, &[]).await;
        let meta = &report["metadata"];
        assert_eq!(meta["channels"], 1, "{file}: {report}");
        let duration = meta["duration"].as_f64().unwrap();
        assert!(
            (duration - CLIP_SECONDS).abs() < 0.1,
            "{file}: the decoded audio lasts {duration} s"
        );
        let bytes = std::fs::read(sgw_testkit::repo().join("samples").join(file)).unwrap();
        assert_eq!(
            meta["sha256"],
            speech_gateway::security::apikeys::sha256_hex_bytes(&bytes),
            "{file}"
        );
        // The double's words tile every 100 ms of what it received: all of the audio,
        // once, in order.
        let words = file_words(&report, 0);
        assert_eq!(
            words.len(),
            (duration * 10.0).ceil() as usize,
            "{file}: {report}"
        );
        let mut end = 0.0;
        for (w, start, stop) in &words {
            assert!(*start >= end - 1e-6, "{file}: words in order: {report}");
            assert!(w.starts_with('w'), "{file}: {w}");
            end = *stop;
        }
        assert!(
            (end - duration).abs() < 0.01,
            "{file}: {end} of {duration} s"
        );
        assert!(
            !report["channels"][0]["transcript"]
                .as_str()
                .unwrap()
                .is_empty()
        );
        assert!(report["utterances"].is_null(), "utterances only when asked");
    }
    s.gw.wait_metric(
        "sgw_sessions_total{dialect=\"deepgram\",outcome=\"completed\"}",
        6.0,
    )
    .await;
    assert!(
        s.gw.metric("sgw_audio_seconds_total{key=\"sdk\"}")
            .await
            .unwrap()
            > 6.0 * 4.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stereo_call_is_transcribed_per_channel_with_utterances() {
    let s = setup(1_000).await;
    let report = upload(
        &s.gw,
        &s.token,
        "formats/call-stereo.flac",
        &["--multichannel", "--utterances"],
    )
    .await;
    assert_eq!(report["metadata"]["channels"], 2, "{report}");
    assert_eq!(report["channels"].as_array().unwrap().len(), 2, "{report}");
    for channel in 0..2 {
        assert_eq!(file_words(&report, channel).len(), 41, "{report}");
    }
    let utterances = report["utterances"].as_array().expect("utterances");
    let of = |c: u64| utterances.iter().filter(|u| u["channel"] == c).count();
    assert!(of(0) >= 4 && of(1) >= 4, "each channel's finals: {report}");
    let starts: Vec<f64> = utterances
        .iter()
        .map(|u| u["start"].as_f64().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "in time order: {starts:?}"
    );

    // Without multichannel the channels are mixed into one transcript.
    let mixed = upload(&s.gw, &s.token, "formats/call-stereo.flac", &[]).await;
    assert_eq!(mixed["metadata"]["channels"], 2);
    assert_eq!(mixed["channels"].as_array().unwrap().len(), 1, "{mixed}");

    // Raw audio described by the query: the WAV's samples with encoding=linear16.
    let raw = upload(&s.gw, &s.token, "hello.wav", &["--raw-linear16"]).await;
    assert!(
        (raw["metadata"]["duration"].as_f64().unwrap() - CLIP_SECONDS).abs() < 1e-3,
        "{raw}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_get_deepgrams_error_shape_and_others_are_still_served() {
    use speech_gateway::security::apikeys;
    let s = setup_with(1_000, &[("SGW_FILES__MAX_BYTES", (64 * 1024).to_string())]).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mp3 = std::fs::read(sgw_testkit::repo().join("samples/formats/hello.mp3")).unwrap();
    let cases = [
        (
            write("text.bin", b"this is a text file, not audio at all"),
            400,
            "not audio",
        ),
        (write("cut.mp3", &mp3[..40]), 400, "audio"),
        (
            sgw_testkit::repo().join("samples/formats/hello.flac"),
            413,
            "larger than 65536 bytes",
        ),
    ];
    for (path, status, needle) in cases {
        let report = sgw_testkit::deepgram_sdk(
            &format!("ws://{}", s.gw.addr),
            &s.api_key,
            &path,
            &["--prerecorded"],
        )
        .await;
        assert_eq!(report["refused"], status, "{}: {report}", path.display());
        let body = &report["body"];
        assert!(
            body["err_code"].is_string(),
            "Deepgram's error shape: {report}"
        );
        assert!(
            body["err_msg"].as_str().unwrap().contains(needle),
            "{}: {report}",
            path.display()
        );
    }
    // A URL body is refused (the gateway fetches nothing), and a wrong key is 401.
    let client = reqwest_free_post(
        s.gw.addr,
        "/v1/listen?model=default",
        &[
            ("Authorization", format!("Token {}", s.api_key)),
            ("Content-Type", "application/json".into()),
        ],
        br#"{"url":"http://169.254.169.254/latest/meta-data"}"#,
    )
    .await;
    assert_eq!(client.0, 400, "{}", client.1);
    assert!(
        client.1.contains("does not fetch audio from URLs"),
        "{}",
        client.1
    );
    let wrong = upload(&s.gw, &apikeys::generate().unwrap(), "hello.wav", &[]).await;
    assert_eq!(wrong["refused"], 401, "{wrong}");
    // The gateway still serves: a good upload goes through.
    let ok = upload(&s.gw, &s.api_key, "formats/hello.ogg", &[]).await;
    assert_eq!(ok["metadata"]["channels"], 1, "{ok}");
}

/// A POST: (status, body).
async fn reqwest_free_post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let a = sgw_testkit::http_request(addr, "POST", path, headers, body).await;
    (a.status, a.body)
}

#[tokio::test(flavor = "multi_thread")]
async fn speech_started_comes_from_the_gateways_vad() {
    let s = setup(1_000).await;
    // 1 s of silence, then the clip: one onset, about a second in.
    let dir = tempfile::tempdir().unwrap();
    let clip = std::fs::read(sgw_testkit::repo().join("samples/hello.wav")).unwrap();
    let mut samples = vec![0u8; 32_000];
    samples.extend_from_slice(&clip[44..]);
    let wav = dir.path().join("late.wav");
    let mut file = Vec::new();
    file.extend_from_slice(b"RIFF");
    file.extend_from_slice(&(36 + samples.len() as u32).to_le_bytes());
    file.extend_from_slice(b"WAVEfmt ");
    file.extend_from_slice(&16u32.to_le_bytes());
    file.extend_from_slice(&1u16.to_le_bytes());
    file.extend_from_slice(&1u16.to_le_bytes());
    file.extend_from_slice(&16_000u32.to_le_bytes());
    file.extend_from_slice(&32_000u32.to_le_bytes());
    file.extend_from_slice(&2u16.to_le_bytes());
    file.extend_from_slice(&16u16.to_le_bytes());
    file.extend_from_slice(b"data");
    file.extend_from_slice(&(samples.len() as u32).to_le_bytes());
    file.extend_from_slice(&samples);
    std::fs::write(&wav, file).unwrap();
    let report = sgw_testkit::deepgram_sdk(
        &format!("ws://{}", s.gw.addr),
        &s.token,
        &wav,
        &["--vad-events", "--utterance-end-ms", "1000"],
    )
    .await;
    let started = of_class(&report, "ListenV1SpeechStarted");
    assert_eq!(started.len(), 1, "{report}");
    let at = started[0]["timestamp"].as_f64().unwrap();
    assert!((1.0..1.4).contains(&at), "speech starts about 1 s in: {at}");
    assert_eq!(started[0]["channel"], serde_json::json!([0, 1]));
    // The double's words tile all the audio, silence included: no gap, no UtteranceEnd.
    assert!(
        of_class(&report, "ListenV1UtteranceEnd").is_empty(),
        "{report}"
    );
    // utterance_end_ms needs interim results, as with Deepgram.
    let url = format!(
        "ws://{}/v1/listen?model=default&utterance_end_ms=1000",
        s.gw.addr
    );
    let auth = format!("Token {}", s.token);
    let Err((status, _, body)) =
        sgw_testkit::attempt(&url, &[("authorization", auth.as_str())]).await
    else {
        panic!("utterance_end_ms without interim_results was accepted");
    };
    assert_eq!(status, 400);
    assert!(
        body["err_msg"]
            .as_str()
            .unwrap()
            .contains("interim_results"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn diarize_labels_words_by_speaker_live_and_in_files() {
    let s = setup(1_000).await;
    // Live: the double (asked for diarization) alternates speakers 1 and 2 every second;
    // Deepgram numbers them from 0.
    let report = sdk(&s.gw, &s.token, &["--diarize"]).await;
    let finals: Vec<&Value> = of_class(&report, "ListenV1Results")
        .into_iter()
        .filter(|r| r["is_final"] == true)
        .collect();
    assert!(!finals.is_empty(), "{report}");
    for f in &finals {
        let words = f["words"].as_array().unwrap();
        let speakers = f["speakers"].as_array().unwrap();
        for (w, sp) in words.iter().zip(speakers) {
            let second = (w[1].as_f64().unwrap() + 1e-6).floor() as u64;
            assert_eq!(sp.as_u64(), Some(second % 2), "{w} {sp}: {report}");
        }
    }
    // Without diarize, no speaker.
    let plain = sdk(&s.gw, &s.token, &[]).await;
    let any_speaker = of_class(&plain, "ListenV1Results")
        .iter()
        .flat_map(|r| r["speakers"].as_array().unwrap().clone())
        .any(|sp| !sp.is_null());
    assert!(!any_speaker, "{plain}");

    // A file with utterances: a new utterance at each change of speaker.
    let file = upload(&s.gw, &s.token, "hello.wav", &["--diarize", "--utterances"]).await;
    let utterances = file["utterances"].as_array().expect("utterances");
    assert_eq!(
        utterances.len(),
        5,
        "one per second of the 4.1 s clip: {file}"
    );
    for (i, u) in utterances.iter().enumerate() {
        assert_eq!(u["speaker"].as_u64(), Some(i as u64 % 2), "{file}");
    }
    let words = file["channels"][0]["words"].as_array().unwrap();
    assert!(
        words.iter().all(|w| w[4].is_u64()),
        "every word has a speaker: {file}"
    );
}

/// A WAV file of `channels` interleaved planes of PCM16 at 16 kHz.
fn wav_file(path: &std::path::Path, planes: &[Vec<i16>]) {
    let channels = planes.len() as u16;
    let frames = planes[0].len();
    let mut data = Vec::with_capacity(frames * planes.len() * 2);
    for i in 0..frames {
        for p in planes {
            data.extend_from_slice(&p[i].to_le_bytes());
        }
    }
    let mut file = Vec::new();
    file.extend_from_slice(b"RIFF");
    file.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    file.extend_from_slice(b"WAVEfmt ");
    file.extend_from_slice(&16u32.to_le_bytes());
    file.extend_from_slice(&1u16.to_le_bytes());
    file.extend_from_slice(&channels.to_le_bytes());
    file.extend_from_slice(&16_000u32.to_le_bytes());
    file.extend_from_slice(&(32_000 * u32::from(channels)).to_le_bytes());
    file.extend_from_slice(&(2 * channels).to_le_bytes());
    file.extend_from_slice(&16u16.to_le_bytes());
    file.extend_from_slice(b"data");
    file.extend_from_slice(&(data.len() as u32).to_le_bytes());
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn live_multichannel_transcribes_each_channel_as_its_own_session() {
    let s = setup(1_000).await;
    let clip = std::fs::read(sgw_testkit::repo().join("samples/hello.wav")).unwrap();
    let left: Vec<i16> = clip[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let right: Vec<i16> = left.iter().rev().copied().collect();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("stereo.wav");
    wav_file(&wav, &[left, right]);

    let report = sgw_testkit::deepgram_sdk(
        &format!("ws://{}", s.gw.addr),
        &s.token,
        &wav,
        &["--multichannel"],
    )
    .await;
    let results = of_class(&report, "ListenV1Results");
    for channel in 0..2u64 {
        let finals: Vec<&&Value> = results
            .iter()
            .filter(|r| r["is_final"] == true && r["channel_index"][0] == channel)
            .collect();
        assert!(finals.len() >= 4, "channel {channel}: {report}");
        assert!(finals.iter().all(|r| r["channel_index"][1] == 2));
        let end = finals
            .iter()
            .map(|r| r["start"].as_f64().unwrap() + r["duration"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert!(
            (end - CLIP_SECONDS).abs() < 0.01,
            "channel {channel}: {end}"
        );
    }
    let metadata = of_class(&report, "ListenV1Metadata");
    assert_eq!(
        metadata.len(),
        1,
        "one Metadata for the connection: {report}"
    );
    assert_eq!(metadata[0]["channels"], 2);
    assert!((metadata[0]["duration"].as_f64().unwrap() - CLIP_SECONDS).abs() < 0.001);
    s.gw.wait_metric(
        "sgw_sessions_total{dialect=\"deepgram\",outcome=\"completed\"}",
        2.0,
    )
    .await;

    // channels=2 without multichannel: the channels are mixed into one session.
    let mixed =
        sgw_testkit::deepgram_sdk(&format!("ws://{}", s.gw.addr), &s.token, &wav, &[]).await;
    let indexes: std::collections::HashSet<String> = of_class(&mixed, "ListenV1Results")
        .iter()
        .map(|r| r["channel_index"].to_string())
        .collect();
    assert_eq!(indexes.len(), 1, "{mixed}");
    assert!(indexes.contains("[0,1]"), "{indexes:?}");
    assert_eq!(of_class(&mixed, "ListenV1Metadata")[0]["channels"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multichannel_message_of_broken_frames_is_answered_in_band() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = setup(1_000).await;
    let url = format!(
        "ws://{}/v1/listen?model=default&channels=2&multichannel=true",
        s.gw.addr
    );
    let auth = format!("Token {}", s.token);
    let mut ws = sgw_testkit::attempt(&url, &[("authorization", auth.as_str())])
        .await
        .expect("accepted");
    // 3 bytes: not a whole stereo frame (4 bytes).
    ws.send(Message::Binary(vec![0u8; 3].into())).await.unwrap();
    ws.send(Message::Binary(vec![0u8; 6_400].into()))
        .await
        .unwrap();
    ws.send(Message::Text(r#"{"type":"CloseStream"}"#.into()))
        .await
        .unwrap();
    let mut errors = 0;
    let mut metadata = 0;
    let mut close = None;
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                match v["type"].as_str() {
                    Some("Error") => {
                        errors += 1;
                        assert!(
                            v["description"]
                                .as_str()
                                .unwrap()
                                .contains("whole sample frames"),
                            "{v}"
                        );
                    }
                    Some("Metadata") => metadata += 1,
                    _ => {}
                }
            }
            Message::Close(f) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    // Each channel's session says so (the message was not transcribed), and the
    // connection goes on to its Metadata and a clean close.
    assert_eq!(errors, 2);
    assert_eq!(metadata, 1);
    assert_eq!(close, Some(1000));
}
