//! The Deepgram back end (`deepgram://`) against real servers of its protocol: the test
//! kit's scripted Deepgram double (query, key, audio, `Finalize` / `CloseStream` /
//! `KeepAlive`, close codes, refusals) and the gateway's own `/v1/listen` (gateway B in
//! front of gateway A in front of a Riva double). The end-to-end run through the real
//! local Triton is in `local_triton.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use sgw_testkit::deepgram_double::{self, DeepgramDouble, Inbound};
use sgw_testkit::riva_double::{Mode as RivaMode, RivaDouble};
use sgw_testkit::{
    Client, Gateway, GatewayProcess, assert_failed_over_without_loss, assert_tiles, send_paced,
    tone,
};

fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// A key file holding `key`, in `dir`.
fn key_file(dir: &tempfile::TempDir, key: &str) -> String {
    let path = dir.path().join("deepgram.key");
    std::fs::write(&path, format!("{key}\n")).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_session_streams_to_deepgram_with_its_key_and_settings_and_gets_its_finals() {
    let dir = tempfile::tempdir().unwrap();
    let dg =
        DeepgramDouble::start_with_key(deepgram_double::Mode::Scripted, Some("dg-key-1")).await;
    let url = format!("{}?model=nova-3", dg.url());
    let gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &url),
        (
            "SGW_DEEPGRAM_BACKEND__KEY_FILE",
            &key_file(&dir, "dg-key-1"),
        ),
    ]))
    .await;
    let mut c = gw.connect().await;
    c.start(
        json!({"language": "en-US", "interim_results": true, "punctuate": true,
                   "word_timestamps": true}),
    )
    .await;
    let audio = tone(1_000, 16_000);
    c.audio(&audio).await;
    let mut s = dg.next_socket().await;
    assert_eq!(s.authorization.as_deref(), Some("Token dg-key-1"));
    assert_eq!(s.param("encoding"), Some("linear16"));
    assert_eq!(s.param("sample_rate"), Some("16000"));
    assert_eq!(s.param("channels"), Some("1"));
    assert_eq!(s.param("language"), Some("en-US"));
    assert_eq!(s.param("punctuate"), Some("true"));
    assert_eq!(s.param("interim_results"), Some("true"));
    assert_eq!(
        s.param("model"),
        Some("nova-3"),
        "the URL's parameters go along"
    );
    assert_eq!(
        s.audio_at_least(audio.len()).await,
        audio,
        "the audio, byte for byte"
    );
    s.send(deepgram_double::results(
        false,
        0.0,
        0.5,
        &[("hel", 0.1, 0.4)],
    ));
    s.send(deepgram_double::results(
        true,
        0.0,
        0.6,
        &[("Hello,", 0.1, 0.4), ("there.", 0.4, 0.6)],
    ));
    let partial = c.until("partial").await;
    assert_eq!(partial["text"], "hel");
    let first = c.until("final").await;
    assert_eq!(first["text"], "Hello, there.");
    assert_eq!(first["words"][1]["word"], "there.");
    assert_eq!(first["words"][1]["end"], 0.6);
    c.end().await;
    // `end`: Finalize, then CloseStream; the last final comes before the close.
    assert!(s.until_control("Finalize").await.is_empty());
    assert_eq!(s.next().await, Inbound::Control("CloseStream".into()));
    s.send(deepgram_double::results(
        true,
        0.6,
        0.4,
        &[("again", 0.7, 0.95)],
    ));
    s.send(json!({"type": "Metadata", "request_id": "double", "duration": 1.0}));
    s.close(1000, "");
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    let finals: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "final").collect();
    assert_eq!(finals.len(), 1, "{msgs:?}");
    assert_eq!(finals[0]["text"], "again");
    assert_eq!(
        dg.stats.audio_bytes.load(Ordering::Relaxed),
        audio.len() as u64
    );
}

#[tokio::test]
async fn a_deepgram_stream_closed_with_1011_fails_over_to_riva_without_losing_audio() {
    let dg = DeepgramDouble::start(deepgram_double::Mode::Scripted).await;
    let riva = RivaDouble::start(RivaMode::Auto {
        final_every_ms: 1_000,
    })
    .await;
    let gw = Gateway::start(&env(&[(
        "SGW_ROUTES__DEFAULT",
        &format!("{},{}", dg.url(), riva.url()),
    )]))
    .await;
    gw.wait_ready().await;
    let mut c = gw.connect().await;
    c.start(json!({"interim_results": false})).await;
    let feeder = tokio::spawn(async move {
        send_paced(&mut c, 2_000).await;
        c.end().await;
        c
    });
    let mut s = dg.next_socket().await;
    s.audio_at_least(32_000).await;
    // A final over the first second in 100 ms words, then the server fails.
    let words: Vec<(String, f64, f64)> = (0..10)
        .map(|k| (format!("w{k}"), k as f64 / 10.0, (k + 1) as f64 / 10.0))
        .collect();
    let refs: Vec<(&str, f64, f64)> = words.iter().map(|(w, a, b)| (w.as_str(), *a, *b)).collect();
    s.send(deepgram_double::results(true, 0.0, 1.0, &refs));
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.close(1011, "NET-0000");
    let mut c = feeder.await.unwrap();
    let (msgs, close) = c.drain().await;
    assert_failed_over_without_loss(&msgs, close, 2_000);
    let series = format!(
        "sgw_stream_reopens_total{{backend=\"{}\",reason=\"error\"}}",
        dg.url()
    );
    assert_eq!(gw.metric(&series).await, Some(1.0));
}

#[tokio::test]
async fn a_refused_key_is_an_upstream_fatal_error_and_the_route_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let dg = DeepgramDouble::start_with_key(deepgram_double::Mode::Scripted, Some("right")).await;
    let key = key_file(&dir, "wrong");
    // Alone on its route: the session is refused as when any back end refuses it for
    // good (retries within the attempts, then MODEL_UNAVAILABLE and 1013).
    let gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &dg.url()),
        ("SGW_DEEPGRAM_BACKEND__KEY_FILE", &key),
        ("SGW_RETRY__ATTEMPTS", "1"),
        ("SGW_RETRY__INITIAL_BACKOFF", "10ms"),
    ]))
    .await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    c.audio(&tone(200, 16_000)).await;
    let err = c.until("error").await;
    assert_eq!(err["code"], "MODEL_UNAVAILABLE", "{err}");
    assert_eq!(err["recoverable"], false);
    let (_, close) = c.drain().await;
    assert_eq!(close, Some(1013));
    assert_eq!(
        dg.stats.refused.load(Ordering::Relaxed),
        2,
        "the first try and one retry"
    );
    assert_eq!(dg.stats.sockets_opened.load(Ordering::Relaxed), 0);
    let series = format!(
        "sgw_backend_requests_total{{backend=\"{}\",outcome=\"upstream_fatal\"}}",
        dg.url()
    );
    assert_eq!(gw.metric(&series).await, Some(2.0));

    // As a cloud fallback behind Riva the other way round: a refused Deepgram leaves
    // the session to the next back end, and the client hears nothing of it.
    let riva = RivaDouble::start(RivaMode::Auto {
        final_every_ms: 1_000,
    })
    .await;
    let gw = Gateway::start(&env(&[
        (
            "SGW_ROUTES__DEFAULT",
            &format!("{},{}", dg.url(), riva.url()),
        ),
        ("SGW_DEEPGRAM_BACKEND__KEY_FILE", &key),
    ]))
    .await;
    gw.wait_ready().await;
    let mut c = gw.connect().await;
    c.start(json!({"interim_results": false})).await;
    send_paced(&mut c, 1_000).await;
    c.end().await;
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    assert!(!msgs.iter().any(|m| m["type"] == "error"), "{msgs:?}");
    assert_tiles(&msgs, 1_000);
}

#[tokio::test]
async fn keepalives_go_up_while_the_client_pauses() {
    let dg = DeepgramDouble::start(deepgram_double::Mode::Scripted).await;
    let gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &dg.url()),
        ("SGW_DEEPGRAM_BACKEND__KEEPALIVE", "1s"),
    ]))
    .await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    c.audio(&tone(200, 16_000)).await;
    let mut s = dg.next_socket().await;
    s.audio_at_least(6_400).await;
    s.send(deepgram_double::results(false, 0.0, 0.2, &[]));
    // The client says nothing for 2.6 s: two keep-alives, no audio.
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    assert_eq!(s.next().await, Inbound::Control("KeepAlive".into()));
    assert_eq!(s.next().await, Inbound::Control("KeepAlive".into()));
    assert_eq!(dg.stats.keepalives.load(Ordering::Relaxed), 2);
    // Audio again, then the end: the stream goes on as before.
    c.audio(&tone(200, 16_000)).await;
    assert_eq!(s.audio_at_least(6_400).await.len(), 6_400);
    c.end().await;
    s.until_control("CloseStream").await;
    s.send(deepgram_double::results(
        true,
        0.0,
        0.4,
        &[("tone", 0.0, 0.4)],
    ));
    s.close(1000, "");
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    assert_eq!(msgs.iter().filter(|m| m["type"] == "final").count(), 1);
    assert_eq!(dg.stats.finalizes.load(Ordering::Relaxed), 1);
}

/// The real server of the protocol: gateway A serves `/v1/listen` (API keys required) in
/// front of a Riva double; gateway B's back end is `deepgram://A` with A's key.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_in_front_of_another_gateways_deepgram_dialect_relays_its_transcript() {
    let (a, riva) = sgw_testkit::Secured::before_riva(&[("gateway-b", 0)], &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let b = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &format!("deepgram://{}", a.gw.addr)),
        (
            "SGW_DEEPGRAM_BACKEND__KEY_FILE",
            &key_file(&dir, &a.api_keys[0]),
        ),
    ]))
    .await;
    b.wait_ready().await;
    let mut c = b.connect().await;
    c.start(json!({"interim_results": true, "word_timestamps": true}))
        .await;
    send_paced(&mut c, 3_000).await;
    c.end().await;
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    assert!(!msgs.iter().any(|m| m["type"] == "error"), "{msgs:?}");
    assert!(msgs.iter().any(|m| m["type"] == "partial"), "{msgs:?}");
    assert_tiles(&msgs, 3_000);
    let text: Vec<&str> = msgs
        .iter()
        .filter(|m| m["type"] == "final")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(text.join(" ").split(' ').count(), 30, "w0 … w29: {text:?}");
    assert_eq!(riva.stats.audio_bytes.load(Ordering::Relaxed), 96_000);
    // A counted B's session by the key's name, on its Deepgram dialect.
    let (_, metrics) = a.gw.get("/metrics").await;
    assert!(
        metrics.contains("dialect=\"deepgram\""),
        "A served B over /v1/listen"
    );
}

/// The gateway binary at the most verbose level, its Deepgram back end failing once
/// (1011 with a reason) and then answering with distinctive words: the log says what
/// failed and never holds the key or the words.
#[tokio::test]
async fn logs_hold_neither_the_deepgram_key_nor_the_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let key = "dgkey-7f3a9c1e55b04d2e";
    let words = ["zanzibarquux", "plumbobtrellis"];
    let dg = DeepgramDouble::start_with_key(deepgram_double::Mode::Scripted, Some(key)).await;
    let mut gw = GatewayProcess::spawn(
        &[],
        &[
            ("SGW_ROUTES__DEFAULT", dg.url()),
            ("SGW_DEEPGRAM_BACKEND__KEY_FILE", key_file(&dir, key)),
            ("SGW_LOG_LEVEL", "trace".into()),
            ("SGW_LOG_FORMAT", "json".into()),
            ("SGW_AUTH__ENABLED", "false".into()),
            ("SGW_RETRY__INITIAL_BACKOFF", "10ms".into()),
        ],
        &dir.path().join("gateway.log"),
    )
    .await;
    let (ws, _) = tokio_tungstenite::connect_async(gw.ws_url()).await.unwrap();
    let mut c = Client { ws };
    c.start(json!({"interim_results": false})).await;
    let audio = tone(500, 16_000);
    c.audio(&audio).await;
    let mut s = dg.next_socket().await;
    s.audio_at_least(audio.len()).await;
    s.close(1011, "NET-0000 injected fault");
    // The retry replays the audio; the second socket answers and ends normally.
    let mut s = dg.next_socket().await;
    s.audio_at_least(audio.len()).await;
    c.end().await;
    s.until_control("CloseStream").await;
    s.send(deepgram_double::results(
        true,
        0.0,
        0.5,
        &[(words[0], 0.0, 0.25), (words[1], 0.25, 0.5)],
    ));
    s.close(1000, "");
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    let heard: Vec<&str> = msgs.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(heard, vec![words.join(" ")], "{msgs:?}");
    let (_, logged) = gw.stop().await;
    assert!(
        logged.contains("upstream closed the stream: 1011 NET-0000 injected fault"),
        "the failure is logged: {logged}"
    );
    assert!(
        !logged.contains(key) && !logged.contains("dgkey"),
        "the key leaked"
    );
    for w in words {
        assert!(!logged.contains(w), "transcript text `{w}` leaked");
    }
}
