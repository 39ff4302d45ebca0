//! The OpenAI-compatible transcription API (`POST /v1/audio/transcriptions`,
//! `GET /v1/models`) driven by OpenAI's official Python SDK (`openai`, through
//! `tests/conformance/openai_client.py`) against the real gateway on port 0, in front of
//! the scripted Riva double. The SDK parses every answer into its typed models (or its
//! stream events): a field the gateway got wrong fails here.

use serde_json::Value;
use sgw_testkit::Gateway;
use sgw_testkit::riva_double::RivaDouble;

struct Setup {
    gw: Gateway,
    token: String,
    api_key: String,
    _riva: RivaDouble,
    _dir: tempfile::TempDir,
}

/// A gateway with JWT and API-key authentication in front of a Riva double that finals
/// every second of audio (words `w<k>`, one per 100 ms).
async fn setup(extra: &[(&str, String)]) -> Setup {
    let (s, riva) = sgw_testkit::Secured::before_riva(&[("openai-sdk", 0)], extra).await;
    Setup {
        gw: s.gw,
        token: s.token,
        api_key: s.api_keys[0].clone(),
        _riva: riva,
        _dir: s.dir,
    }
}

fn sample(name: &str) -> String {
    sgw_testkit::repo()
        .join("samples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

async fn sdk(s: &Setup, key: &str, args: &[&str]) -> Value {
    sgw_testkit::openai_sdk(&format!("http://{}", s.gw.addr), key, args).await
}

/// What the double says for `samples/hello.wav` (4.09 s): 41 words of 100 ms.
fn expected_text() -> String {
    (0..41)
        .map(|k| format!("w{k}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_response_format_through_the_official_sdk() {
    let s = setup(&[]).await;
    let file = sample("formats/hello.mp3");
    let json = sdk(&s, &s.api_key, &["--file", &file]).await;
    assert_eq!(json["type"], "Transcription", "{json}");
    assert_eq!(json["result"]["text"], expected_text(), "{json}");
    assert_eq!(json["result"]["usage"]["type"], "duration");

    let text = sdk(&s, &s.token, &["--file", &file, "--format", "text"]).await;
    assert_eq!(text["result"].as_str().unwrap().trim(), expected_text());

    let srt = sdk(&s, &s.token, &["--file", &file, "--format", "srt"]).await;
    let srt = srt["result"].as_str().unwrap();
    assert!(
        srt.starts_with("1\n00:00:00,000 --> 00:00:01,000\nw0 w1"),
        "{srt}"
    );
    assert_eq!(srt.matches(" --> ").count(), 5, "a cue per final: {srt}");

    let vtt = sdk(&s, &s.token, &["--file", &file, "--format", "vtt"]).await;
    let vtt = vtt["result"].as_str().unwrap();
    assert!(
        vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n"),
        "{vtt}"
    );

    let verbose = sdk(
        &s,
        &s.token,
        &[
            "--file",
            &file,
            "--format",
            "verbose_json",
            "--granularity",
            "word",
            "--granularity",
            "segment",
        ],
    )
    .await;
    assert_eq!(verbose["type"], "TranscriptionVerbose", "{verbose}");
    let r = &verbose["result"];
    assert!((r["duration"].as_f64().unwrap() - 4.09).abs() < 0.1, "{r}");
    assert_eq!(r["segments"].as_array().unwrap().len(), 5, "{r}");
    let words = r["words"].as_array().unwrap();
    assert_eq!(words.len(), 41, "{r}");
    assert_eq!(words[3]["word"], "w3");
    assert!((words[3]["start"].as_f64().unwrap() - 0.3).abs() < 1e-6);
    // Words only: no segments.
    let only_words = sdk(
        &s,
        &s.token,
        &[
            "--file",
            &file,
            "--format",
            "verbose_json",
            "--granularity",
            "word",
        ],
    )
    .await;
    assert!(only_words["result"]["segments"].is_null(), "{only_words}");
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_sends_a_delta_per_final_then_done() {
    let s = setup(&[]).await;
    let report = sdk(&s, &s.token, &["--file", &sample("hello.wav"), "--stream"]).await;
    let events = report["result"].as_array().expect("events");
    let (done, deltas) = events.split_last().unwrap();
    assert_eq!(done["type"], "transcript.text.done", "{report}");
    assert_eq!(done["text"], expected_text());
    assert_eq!(deltas.len(), 5, "a delta per final: {report}");
    let joined: String = deltas
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "transcript.text.delta");
            d["delta"].as_str().unwrap()
        })
        .collect();
    assert_eq!(joined, expected_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn models_lists_the_routes_and_bad_requests_get_openais_errors() {
    let s = setup(&[("SGW_FILES__MAX_BYTES", (64 * 1024).to_string())]).await;
    let models = sdk(&s, &s.token, &["--models"]).await;
    assert_eq!(models["result"], serde_json::json!(["default"]));

    let dir = tempfile::tempdir().unwrap();
    let text_file = dir.path().join("notes.txt");
    std::fs::write(&text_file, "not audio at all, just some text").unwrap();
    let text_file = text_file.to_string_lossy().into_owned();
    let wav = sample("hello.wav");
    let ogg = sample("formats/hello.ogg");
    let cases: [(&str, Vec<&str>, u16, &str); 5] = [
        ("not audio", vec!["--file", &text_file], 400, "not audio"),
        (
            "unknown model",
            vec!["--file", &ogg, "--model", "whisper-1"],
            404,
            "model_not_found",
        ),
        (
            "unsupported format",
            vec!["--file", &ogg, "--format", "diarized_json"],
            400,
            "response_format",
        ),
        (
            "over the limit",
            vec!["--file", &wav],
            413,
            "file_too_large",
        ),
        ("wrong key", vec!["--file", &ogg], 401, "invalid_api_key"),
    ];
    for (what, args, status, needle) in cases {
        let key = if what == "wrong key" {
            "sgw_wrong"
        } else {
            s.token.as_str()
        };
        let report = sdk(&s, key, &args).await;
        let error = &report["error"];
        assert_eq!(error["status"], status, "{what}: {report}");
        let body = &error["body"]["error"];
        assert!(
            body["message"].is_string() && body["type"].is_string(),
            "{what}: {report}"
        );
        assert!(report.to_string().contains(needle), "{what}: {report}");
    }
    // A form without `file` (the SDK always sends one): a raw multipart request.
    let (status, body) = post_form(s.gw.addr, &s.token, "model", "default").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`file` is required"), "{body}");
    // Still serving (Opus decodes a few ms longer than the WAV: 42 words of the double).
    let ok = sdk(&s, &s.api_key, &["--file", &ogg]).await;
    let text = ok["result"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{ok}"));
    assert!(text.starts_with(&expected_text()), "{ok}");
}

/// A multipart POST with one text field: (status, body).
async fn post_form(
    addr: std::net::SocketAddr,
    token: &str,
    name: &str,
    value: &str,
) -> (u16, String) {
    let body = format!(
        "--XBOUNDARY\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n--XBOUNDARY--\r\n"
    );
    let headers = [
        ("Authorization", format!("Bearer {token}")),
        (
            "Content-Type",
            "multipart/form-data; boundary=XBOUNDARY".to_string(),
        ),
    ];
    let a = sgw_testkit::http_request(
        addr,
        "POST",
        "/v1/audio/transcriptions",
        &headers,
        body.as_bytes(),
    )
    .await;
    (a.status, a.body)
}

async fn realtime(s: &Setup, args: &[&str]) -> Vec<Value> {
    let wav = sgw_testkit::repo().join("samples/hello.wav");
    let report =
        sgw_testkit::openai_realtime(&format!("http://{}", s.gw.addr), &s.api_key, &wav, args)
            .await;
    report["events"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{report}"))
}

/// Transcripts joined, a word repeated across a boundary said once: the double's finals
/// tile its stream in 100 ms words, and a final that ends inside a word (resampled 24 kHz
/// audio does not fall on its 100 ms grid) names that word again in the next final.
fn joined(texts: &[&str]) -> String {
    let mut words: Vec<&str> = Vec::new();
    for w in texts.iter().flat_map(|t| t.split_whitespace()) {
        if words.last() != Some(&w) {
            words.push(w);
        }
    }
    words.join(" ")
}

fn of_type<'a>(events: &'a [Value], ty: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == ty).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn realtime_transcription_with_server_vad_through_the_official_sdk() {
    let s = setup(&[]).await;
    let events = realtime(&s, &[]).await;
    assert_eq!(events[0]["type"], "session.created", "{events:?}");
    assert_eq!(events[0]["session_type"], "transcription");
    assert_eq!(of_type(&events, "session.updated").len(), 1, "{events:?}");
    assert!(
        !of_type(&events, "input_audio_buffer.speech_started").is_empty(),
        "{events:?}"
    );
    assert!(!of_type(&events, "conversation.item.input_audio_transcription.delta").is_empty());
    let completed = of_type(
        &events,
        "conversation.item.input_audio_transcription.completed",
    );
    let text: Vec<&str> = completed
        .iter()
        .map(|c| c["transcript"].as_str().unwrap())
        .collect();
    assert_eq!(joined(&text), expected_text(), "{events:?}");
    // Every completed item was committed first, with distinct item ids chained in order.
    let committed = of_type(&events, "input_audio_buffer.committed");
    assert_eq!(committed.len(), completed.len(), "{events:?}");
    for (i, (c, d)) in committed.iter().zip(&completed).enumerate() {
        assert_eq!(c["item_id"], d["item_id"]);
        if i > 0 {
            assert_eq!(c["previous_item_id"], committed[i - 1]["item_id"]);
        }
    }
    assert!(of_type(&events, "error").is_empty(), "{events:?}");
    // The protocol has no end message: a client that leaves once answered completed.
    s.gw.wait_metric(
        "sgw_sessions_total{dialect=\"openai_realtime\",outcome=\"completed\"}",
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn realtime_manual_commit_makes_one_item_and_bad_events_get_errors() {
    let s = setup(&[]).await;
    let events = realtime(&s, &["--manual", "--bad"]).await;
    let errors: Vec<String> = of_type(&events, "error")
        .iter()
        .map(|e| e["error"]["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(errors.len(), 4, "{events:?}");
    for (message, needle) in errors.iter().zip([
        "before session.update",
        "unknown event type",
        "not valid base64",
        "empty buffer",
    ]) {
        assert!(message.contains(needle), "{message} / {needle}");
    }
    assert!(
        of_type(&events, "error")
            .iter()
            .all(|e| e["error"]["type"] == "invalid_request_error"),
        "{events:?}"
    );
    // Manual turns: no speech events of the server's VAD, one item for the one commit.
    assert!(of_type(&events, "input_audio_buffer.speech_started").is_empty());
    let completed = of_type(
        &events,
        "conversation.item.input_audio_transcription.completed",
    );
    assert_eq!(completed.len(), 1, "{events:?}");
    assert_eq!(
        joined(&[completed[0]["transcript"].as_str().unwrap()]),
        expected_text()
    );
    // The commit is acknowledged when it comes, before its item's transcription.
    let committed = of_type(&events, "input_audio_buffer.committed");
    assert_eq!(committed.len(), 1, "{events:?}");
    assert_eq!(committed[0]["item_id"], completed[0]["item_id"]);
    let at = |ty: &str| events.iter().position(|e| e["type"] == ty).unwrap();
    assert!(
        at("input_audio_buffer.committed")
            < at("conversation.item.input_audio_transcription.completed"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nvidias_realtime_client_transcribes_a_wav_file() {
    let s = setup(&[]).await;
    let wav = sgw_testkit::repo().join("samples/hello.wav");
    // The API key mints the session; the client offers it back as its subprotocol.
    let report = sgw_testkit::riva_realtime(&s.gw.addr.to_string(), &s.api_key, &wav).await;
    let completed = report["completed"].as_array().expect("completed");
    let (last, items) = completed.split_last().expect("results");
    assert_eq!(last["last"], true, "{report}");
    assert!(items.iter().all(|c| c["last"] == false), "{report}");
    let texts: Vec<&str> = items
        .iter()
        .map(|c| c["transcript"].as_str().unwrap())
        .collect();
    assert_eq!(joined(&texts), expected_text(), "{report}");
    // The last result carries the whole text, and is what the client keeps.
    assert_eq!(
        joined(&[report["final"].as_str().unwrap()]),
        expected_text(),
        "{report}"
    );
    assert_eq!(
        s.gw.metric("sgw_key_sessions_total{key=\"openai-sdk\"}")
            .await,
        Some(1.0)
    );
    // Without the key the mint is refused, as the client expects (401).
    let refused = std::process::Command::new(sgw_testkit::conformance_python())
        .arg(sgw_testkit::repo().join("tests/conformance/riva_realtime.py"))
        .args(["--server", &s.gw.addr.to_string(), "--key", "sgw_wrong"])
        .arg("--wav")
        .arg(&wav)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// The next text event as JSON, or `{"close": code}`.
async fn next(ws: &mut sgw_testkit::Ws) -> Value {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Close(f))) => {
                return serde_json::json!({"close": f.map(|f| u16::from(f.code))});
            }
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn realtime_refuses_an_unsupported_format_and_an_oversized_append_in_openais_shape() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let s = setup(&[]).await;
    let url = format!("ws://{}/v1/realtime?intent=transcription", s.gw.addr);
    let auth = format!("Bearer {}", s.api_key);
    let mut ws = sgw_testkit::attempt(&url, &[("authorization", auth.as_str())])
        .await
        .expect("accepted");
    assert_eq!(next(&mut ws).await["type"], "session.created");
    let update = |format: &str| {
        serde_json::json!({"type": "session.update", "session": {"type": "transcription",
            "audio": {"input": {"format": {"type": format}}}}})
        .to_string()
    };
    ws.send(Message::Text(update("audio/opus").into()))
        .await
        .unwrap();
    let e = next(&mut ws).await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("audio/opus"),
        "{e}"
    );
    // The session goes on: a good update is taken.
    ws.send(Message::Text(update("audio/pcm").into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await["type"], "session.updated");
    // 15 MB of base64: above limits.max_message_bytes; the client is told, then the
    // connection closes with 1009 (the message cannot be read).
    let big = format!(
        r#"{{"type":"input_audio_buffer.append","audio":"{}"}}"#,
        "A".repeat(15 * 1024 * 1024)
    );
    let _ = ws.send(Message::Text(big.into())).await;
    let e = next(&mut ws).await;
    assert_eq!(e["type"], "error", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("above the limit"),
        "{e}"
    );
    assert_eq!(next(&mut ws).await["close"], 1009);
    // Others are not disturbed.
    let wav = sgw_testkit::repo().join("samples/hello.wav");
    let report = sgw_testkit::riva_realtime(&s.gw.addr.to_string(), &s.api_key, &wav).await;
    assert!(
        report["final"].as_str().is_some_and(|t| !t.is_empty()),
        "{report}"
    );
}
