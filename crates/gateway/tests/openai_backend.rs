//! The `openai://` back end through the real gateway, against a scripted OpenAI-compatible
//! server (`sgw_testkit::openai_double`: axum, real multipart, real HTTP/1.1): what each
//! upload carries, the fallback to plain `json`, partials, and every failure the adapter
//! classifies — 429 and 500 fail over without losing audio, a request that never
//! answers hits the deadline and fails over, 400 is the client's error, a model missing
//! from `/v1/models` marks the back end down.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sgw_testkit::openai_double::{OpenAiDouble, Reply};
use sgw_testkit::{Client, Gateway, bytes_for, voiced};

fn silence(ms: u64) -> Vec<u8> {
    vec![0u8; bytes_for(ms, 16_000)]
}

/// Voice at 0.5–1.7 s and 2.7–3.5 s: two utterances.
fn two_utterances() -> Vec<u8> {
    let mut audio = silence(500);
    audio.extend(voiced(1_200));
    audio.extend(silence(1_000));
    audio.extend(voiced(800));
    audio.extend(silence(600));
    audio
}

/// Sends `audio` in 100 ms frames, `pace` apart, then `end`; everything until the close.
async fn run(c: &mut Client, audio: &[u8], pace: Duration) -> (Vec<Value>, Option<u16>) {
    for chunk in audio.chunks(bytes_for(100, 16_000)) {
        c.audio(chunk).await;
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    c.end().await;
    c.drain().await
}

fn of_type<'a>(msgs: &'a [Value], ty: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["type"] == ty).collect()
}

/// The (start, end) of a final's words, in session seconds.
fn span(f: &Value) -> (f64, f64) {
    let w = f["words"]
        .as_array()
        .unwrap_or_else(|| panic!("words: {f}"));
    (
        w.first().unwrap()["start"].as_f64().unwrap(),
        w.last().unwrap()["end"].as_f64().unwrap(),
    )
}

/// Both voice bursts of [`two_utterances`] lie inside the finals' word spans: no audio
/// was lost to the failure.
fn assert_both_utterances_final(finals: &[&Value]) {
    assert_eq!(finals.len(), 2, "{finals:?}");
    let (s0, e0) = span(finals[0]);
    let (s1, e1) = span(finals[1]);
    assert!(s0 <= 0.5 && (1.7..2.7).contains(&e0), "first: {s0}..{e0}");
    assert!(s1 <= 2.7 && s1 > 1.7 && e1 >= 3.5, "second: {s1}..{e1}");
}

async fn status_of(gw: &Gateway, name: &str) -> Value {
    let status: Value = serde_json::from_str(&gw.get("/status").await.1).unwrap();
    status["routes"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {status}"))
        .clone()
}

#[tokio::test]
async fn each_utterance_is_one_wav_upload_with_the_model_language_and_key() {
    let server = OpenAiDouble::start(&["whisper-x"]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-double-0123\n").unwrap();
    let url = server.url("whisper-x", &format!("&key_file={}", key.display()));
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", url.clone()),
        // the uploads are at the back end's rate, not the client's
        ("SGW_OPENAI_BACKEND__SAMPLE_RATE", "8000".into()),
    ])
    .await;
    gw.wait_ready().await;
    assert_eq!(
        status_of(&gw, &format!("openai://{}/v1?model=whisper-x", server.addr)).await["state"],
        "up"
    );

    let mut c = gw.connect().await;
    c.start(json!({"language": "en-US", "interim_results": true, "phrases": ["Riva", "Triton"]}))
        .await;
    let (msgs, close) = run(&mut c, &two_utterances(), Duration::ZERO).await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    assert!(
        of_type(&msgs, "partial").is_empty(),
        "partials are off by default: {msgs:?}"
    );
    let finals = of_type(&msgs, "final");
    assert_both_utterances_final(&finals);

    let uploads = server.uploads();
    assert_eq!(
        uploads.len(),
        2,
        "one request per utterance, none for silence"
    );
    for (up, f) in uploads.iter().zip(&finals) {
        assert_eq!(up.model.as_deref(), Some("whisper-x"));
        assert_eq!(up.response_format.as_deref(), Some("verbose_json"));
        assert_eq!(up.timestamp_granularities, ["word"]);
        assert_eq!(up.language.as_deref(), Some("en"), "the primary subtag");
        assert_eq!(up.file_type.as_deref(), Some("audio/wav"));
        assert_eq!(up.authorization.as_deref(), Some("Bearer sk-double-0123"));
        let (rate, channels, bits, ms) = up.wav();
        assert_eq!((rate, channels, bits), (8_000, 1, 16));
        // the double says how much it heard: the client sees exactly that answer
        assert_eq!(f["text"], format!("heard {ms} ms"));
        let (s, e) = span(f);
        assert!(
            ((e - s) * 1000.0 - ms as f64).abs() <= 2.0,
            "{s}..{e} vs {ms} ms"
        );
    }
    let (_, _, _, first_ms) = uploads[0].wav();
    assert!(
        (1_400..=2_200).contains(&first_ms),
        "pre-roll + 1.2 s of voice + the endpointing silence: {first_ms}"
    );
    // phrases become the prompt only when set; none here is a hard rule of the wire
    assert!(
        uploads
            .iter()
            .all(|u| u.prompt.is_none() || u.prompt.as_deref() == Some("Riva, Triton"))
    );
}

#[tokio::test]
async fn partials_re_decode_the_open_utterance_when_turned_on() {
    let server = OpenAiDouble::start(&["m"]).await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", server.url("m", "")),
        ("SGW_OPENAI_BACKEND__PARTIALS", "true".into()),
        ("SGW_OPENAI_BACKEND__PARTIAL_INTERVAL", "300ms".into()),
    ])
    .await;
    gw.wait_ready().await;
    let mut c = gw.connect().await;
    c.start(json!({"interim_results": true})).await;
    let mut audio = silence(300);
    audio.extend(voiced(2_000));
    audio.extend(silence(700));
    let (msgs, close) = run(&mut c, &audio, Duration::from_millis(40)).await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    let partials = of_type(&msgs, "partial");
    let finals = of_type(&msgs, "final");
    assert_eq!(finals.len(), 1, "{msgs:?}");
    assert!(
        !partials.is_empty(),
        "partials while the voice goes on: {msgs:?}"
    );
    let first = msgs.iter().position(|m| m["type"] == "partial").unwrap();
    let fin = msgs.iter().position(|m| m["type"] == "final").unwrap();
    assert!(first < fin);
    let uploads = server.uploads();
    assert!(
        uploads.len() > 1,
        "partials are extra requests: {}",
        uploads.len()
    );
    // each partial re-sends the whole open utterance: the uploads grow
    let lengths: Vec<u64> = uploads.iter().map(|u| u.wav().3).collect();
    assert!(lengths.windows(2).all(|w| w[0] <= w[1]), "{lengths:?}");
}

#[tokio::test]
async fn a_server_without_verbose_json_gets_plain_json_and_finals_carry_no_words() {
    let server = OpenAiDouble::start(&["m"]).await;
    server.log.lock().unwrap().refuse_verbose = true;
    let gw = Gateway::with_backends(&[server.url("m", "")]).await;
    gw.wait_ready().await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let (msgs, close) = run(&mut c, &two_utterances(), Duration::ZERO).await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    let finals = of_type(&msgs, "final");
    assert_eq!(finals.len(), 2, "{msgs:?}");
    assert!(
        finals
            .iter()
            .all(|f| f["text"].as_str().unwrap().starts_with("heard "))
    );
    assert!(
        finals
            .iter()
            .all(|f| f["words"].as_array().is_none_or(|w| w.is_empty())),
        "{finals:?}"
    );
    let formats: Vec<String> = server
        .uploads()
        .iter()
        .map(|u| u.response_format.clone().unwrap())
        .collect();
    assert_eq!(
        formats,
        ["verbose_json", "json", "json"],
        "asked once, then remembered"
    );
}

/// 429 and 500: the first back end fails the first utterance; the session moves to the
/// second, which gets the audio since the last final (all of it) — the client sees both
/// utterances final, no error, and the failed back end's breaker counts one failure.
#[tokio::test]
async fn rate_limits_and_server_errors_fail_over_without_losing_audio() {
    for status in [429, 500] {
        let failing = OpenAiDouble::start(&["m"]).await;
        failing.otherwise(Reply::Status(status));
        let good = OpenAiDouble::start(&["m"]).await;
        let gw = Gateway::with_backends(&[failing.url("m", ""), good.url("m", "")]).await;
        gw.wait_ready().await;
        let mut c = gw.connect().await;
        c.start(json!({})).await;
        let (msgs, close) = run(&mut c, &two_utterances(), Duration::ZERO).await;
        assert_eq!(close, Some(1000), "{status}: {msgs:?}");
        assert!(of_type(&msgs, "error").is_empty(), "{status}: {msgs:?}");
        assert_both_utterances_final(&of_type(&msgs, "final"));
        assert_eq!(
            failing.uploads().len(),
            1,
            "{status}: failed once, then left"
        );
        assert_eq!(
            good.uploads().len(),
            2,
            "{status}: both utterances replayed there"
        );
        let failed = status_of(&gw, &format!("openai://{}/v1?model=m", failing.addr)).await;
        assert_eq!(failed["consecutive_failures"], 1, "{status}: {failed}");
    }
}

#[tokio::test]
async fn a_request_that_never_answers_meets_the_deadline_and_fails_over() {
    let hanging = OpenAiDouble::start(&["m"]).await;
    hanging.otherwise(Reply::Hang);
    let good = OpenAiDouble::start(&["m"]).await;
    let gw = Gateway::start(&[
        (
            "SGW_ROUTES__DEFAULT",
            format!("{},{}", hanging.url("m", ""), good.url("m", "")),
        ),
        ("SGW_OPENAI_BACKEND__REQUEST_TIMEOUT", "2s".into()),
        // shorter than the deadline: the deadline, not stall detection, ends the request
        ("SGW_SESSION__STALL_TIMEOUT", "1s".into()),
    ])
    .await;
    gw.wait_ready().await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let started = Instant::now();
    let (msgs, close) = run(&mut c, &two_utterances(), Duration::ZERO).await;
    let took = started.elapsed();
    assert_eq!(close, Some(1000), "{msgs:?}");
    assert!(of_type(&msgs, "error").is_empty(), "{msgs:?}");
    assert_both_utterances_final(&of_type(&msgs, "final"));
    assert_eq!(hanging.uploads().len(), 1);
    assert_eq!(good.uploads().len(), 2);
    assert!(
        took >= Duration::from_secs(2),
        "waited for the deadline: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    let failed = status_of(&gw, &format!("openai://{}/v1?model=m", hanging.addr)).await;
    assert_eq!(failed["consecutive_failures"], 1, "{failed}");
}

/// 400 refuses what this session asked for: the client is told, the back end is not
/// blamed, and no other back end is tried.
#[tokio::test]
async fn a_bad_request_is_the_clients_error() {
    let refusing = OpenAiDouble::start(&["m"]).await;
    refusing.otherwise(Reply::Status(400));
    let other = OpenAiDouble::start(&["m"]).await;
    let gw = Gateway::with_backends(&[refusing.url("m", ""), other.url("m", "")]).await;
    gw.wait_ready().await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let (msgs, _) = run(&mut c, &two_utterances(), Duration::ZERO).await;
    let errors = of_type(&msgs, "error");
    assert_eq!(errors.len(), 1, "{msgs:?}");
    assert_eq!(errors[0]["code"], "MODEL_UNAVAILABLE");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("http 400"),
        "{errors:?}"
    );
    assert!(other.uploads().is_empty(), "not failed over");
    let formats: Vec<String> = refusing
        .uploads()
        .iter()
        .map(|u| u.response_format.clone().unwrap())
        .collect();
    assert_eq!(
        formats,
        ["verbose_json", "json"],
        "plain json tried once before giving up"
    );
    let refused = status_of(&gw, &format!("openai://{}/v1?model=m", refusing.addr)).await;
    assert_eq!(refused["consecutive_failures"], 0, "{refused}");
}

#[tokio::test]
async fn a_model_missing_from_the_model_list_marks_the_back_end_down() {
    let server = OpenAiDouble::start(&["some-other-model"]).await;
    let name = format!("openai://{}/v1?model=wanted", server.addr);
    let gw = Gateway::with_backends(&[server.url("wanted", "")]).await;
    let mut last = Value::Null;
    for _ in 0..100 {
        last = status_of(&gw, &name).await;
        if last["state"] == "down" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["state"], "down", "{last}");
    assert!(
        last["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("`wanted` not listed"),
        "{last}"
    );
    assert!(server.log.lock().unwrap().model_list_requests >= 1);
    // listed once the server serves it: up again after `health.healthy_after` probes
    server.log.lock().unwrap().models.push("wanted".into());
    for _ in 0..100 {
        last = status_of(&gw, &name).await;
        if last["state"] == "up" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["state"], "up", "{last}");
}

/// Every back end failing: the session gives up with `MODEL_UNAVAILABLE` after a bounded
/// number of requests (moves and `retry.attempts`), and each failure counts against its
/// back end's breaker — the gateway's own VAD progress is no proof the server works
/// (before `TranscriptEvent::idle`, it ended every failure episode: the session moved
/// between the two back ends hundreds of times until the flush timeout).
#[tokio::test]
async fn when_every_back_end_fails_the_session_gives_up_and_breakers_count_it() {
    let a = OpenAiDouble::start(&["m"]).await;
    a.otherwise(Reply::Status(500));
    let b = OpenAiDouble::start(&["m"]).await;
    b.otherwise(Reply::Status(503));
    let gw = Gateway::start(&[
        (
            "SGW_ROUTES__DEFAULT",
            format!("{},{}", a.url("m", ""), b.url("m", "")),
        ),
        ("SGW_RETRY__INITIAL_BACKOFF", "10ms".into()),
    ])
    .await;
    gw.wait_ready().await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let (msgs, _) = tokio::time::timeout(
        Duration::from_secs(20),
        run(&mut c, &two_utterances(), Duration::ZERO),
    )
    .await
    .expect("the session ends");
    let errors = of_type(&msgs, "error");
    assert_eq!(errors.len(), 1, "{msgs:?}");
    assert_eq!(errors[0]["code"], "MODEL_UNAVAILABLE");
    let requests = a.uploads().len() + b.uploads().len();
    // each back end once, then each retry (retry.attempts = 3) tries the route again
    assert!(
        (2..=2 * (1 + 3)).contains(&requests),
        "bounded by the retry policy: {requests}"
    );
    for d in [&a, &b] {
        let s = status_of(&gw, &format!("openai://{}/v1?model=m", d.addr)).await;
        assert!(s["consecutive_failures"].as_u64().unwrap() >= 1, "{s}");
    }
}

/// NIM's shape: BCP-47 languages (`?language=bcp47`) and a readiness probe instead of a
/// model list (`?health=ready`).
#[tokio::test]
async fn a_nim_style_back_end_gets_bcp47_and_is_probed_for_readiness() {
    let server = OpenAiDouble::start(&[]).await;
    server.log.lock().unwrap().not_ready = true;
    let name = format!("openai://{}/v1?model=parakeet", server.addr);
    let gw =
        Gateway::with_backends(&[server.url("parakeet", "&language=bcp47&health=ready")]).await;
    let mut last = Value::Null;
    for want in ["down", "up"] {
        for _ in 0..100 {
            last = status_of(&gw, &name).await;
            if last["state"] == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(last["state"], want, "{last}");
        server.log.lock().unwrap().not_ready = false;
    }
    assert_eq!(
        server.log.lock().unwrap().model_list_requests,
        0,
        "no model list asked for"
    );
    let mut c = gw.connect().await;
    c.start(json!({"language": "en-US"})).await;
    let (msgs, close) = run(&mut c, &two_utterances(), Duration::ZERO).await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    assert_eq!(of_type(&msgs, "final").len(), 2, "{msgs:?}");
    let uploads = server.uploads();
    assert!(
        uploads
            .iter()
            .all(|u| u.language.as_deref() == Some("en-US"))
    );
}

/// A server slower than `session.stall_timeout` but within the request deadline is not
/// taken for stalled: the adapter says it is alive while it waits, the session stays, and
/// no utterance is sent to a second back end.
#[tokio::test]
async fn a_slow_answer_within_the_deadline_is_not_a_stall() {
    let slow = OpenAiDouble::start(&["m"]).await;
    slow.otherwise(Reply::Slow(Duration::from_millis(1_800)));
    let other = OpenAiDouble::start(&["m"]).await;
    let gw = Gateway::start(&[
        (
            "SGW_ROUTES__DEFAULT",
            format!("{},{}", slow.url("m", ""), other.url("m", "")),
        ),
        ("SGW_OPENAI_BACKEND__REQUEST_TIMEOUT", "5s".into()),
        ("SGW_SESSION__STALL_TIMEOUT", "1s".into()),
    ])
    .await;
    gw.wait_ready().await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    // real-time pace, so audio keeps flowing while each answer is awaited
    let (msgs, close) = run(&mut c, &two_utterances(), Duration::from_millis(100)).await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    assert!(
        !msgs.iter().any(|m| m["state"] == "failover"),
        "no failover: {msgs:?}"
    );
    assert_both_utterances_final(&of_type(&msgs, "final"));
    assert_eq!(slow.uploads().len(), 2);
    assert!(other.uploads().is_empty());
}
