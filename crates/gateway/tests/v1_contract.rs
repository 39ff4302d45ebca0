//! The v1 WebSocket contract end to end: the real gateway on port 0, driven as a client,
//! in front of a scripted Riva double (a real tonic server on our protos).

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use sgw_proto::grpc::health::v1::health_check_response::ServingStatus;
use sgw_testkit::riva_double::{Mode, RivaDouble, final_result, partial};
use sgw_testkit::{Gateway, Received, bytes_for, tone};
use tonic::Status;

fn approx(a: &serde_json::Value, b: f64) -> bool {
    (a.as_f64().unwrap() - b).abs() < 1e-3
}

#[tokio::test]
async fn partials_then_an_append_only_final_with_words() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::with_backends(&[riva.url()]).await;
    let mut c = gw.connect().await;
    c.start(json!({"language":"en-US","interim_results":true,"punctuate":true}))
        .await;
    let mut s = riva.next_stream().await;
    let cfg = s.config.config.clone().unwrap();
    assert_eq!(cfg.language_code, "en-US");
    assert_eq!(cfg.sample_rate_hertz, 16_000);
    assert!(s.config.interim_results);

    let audio = tone(1_000, 16_000);
    for chunk in audio.chunks(3_200) {
        c.audio(chunk).await;
    }
    let got = s.audio_at_least(audio.len()).await;
    assert_eq!(got, audio, "audio reaches Riva byte for byte");
    // No final yet: every byte is held for replay.
    gw.wait_metric("sgw_replay_buffer_bytes", audio.len() as f64)
        .await;

    s.send(partial("hello", 0.5)).await;
    let p = c.json().await;
    assert_eq!(p["type"], "partial");
    assert_eq!(p["text"], "hello");
    assert_eq!(p["timestamp_ms"], 500);

    c.end().await;
    assert!(s.until_half_close().await.is_empty());
    s.send(final_result(
        "Hello world.",
        &[("Hello", 100, 400), ("world.", 500, 900)],
        1.0,
    ))
    .await;
    drop(s);
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000));
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let f = &msgs[0];
    assert_eq!(f["type"], "final");
    assert_eq!(f["text"], "Hello world.");
    assert!(approx(&f["confidence"], 0.875));
    assert_eq!(f["is_end_of_utterance"], true);
    assert_eq!(f["timestamp_ms"], 1000);
    assert_eq!(
        f["duration_ms"], 900,
        "from session start to the end of the last word"
    );
    assert_eq!(f["words"][0]["word"], "Hello");
    assert!(approx(&f["words"][0]["start"], 0.1));
    assert!(approx(&f["words"][1]["end"], 0.9));
    assert!(approx(&f["words"][1]["confidence"], 0.75));
    gw.wait_metric("sgw_sessions_active", 0.0).await;
    // The final covered 0.9 s; the last 0.1 s left with the session.
    gw.wait_metric("sgw_replay_buffer_bytes", 0.0).await;
}

#[tokio::test]
async fn audio_before_start_uses_the_defaults_and_settings_pass_through() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::with_backends(&[riva.url()]).await;

    let mut c = gw.connect().await;
    c.audio(&tone(100, 16_000)).await;
    let s = riva.next_stream().await;
    let cfg = s.config.config.clone().unwrap();
    assert_eq!(
        cfg.language_code, "en-US",
        "auto becomes riva.auto_language"
    );
    assert!(
        cfg.enable_automatic_punctuation,
        "punctuate defaults to true"
    );
    assert!(!cfg.profanity_filter);
    assert!(s.config.interim_results);
    assert!(cfg.endpointing_config.is_none());
    c.close().await;

    let mut c = gw.connect().await;
    c.start(
        json!({"language":"de-DE","punctuate":false,"profanity_filter":true,"endpointing_ms":800,
                   "interim_results":false,"custom_configuration":{"beam":"4"}}),
    )
    .await;
    let s = riva.next_stream().await;
    let cfg = s.config.config.clone().unwrap();
    assert_eq!(cfg.language_code, "de-DE");
    assert!(!cfg.enable_automatic_punctuation);
    assert!(cfg.profanity_filter);
    assert!(
        s.config.interim_results,
        "interim results are always requested from Riva (the stall heartbeat)"
    );
    assert_eq!(cfg.endpointing_config.unwrap().stop_history, Some(800));
    assert_eq!(
        cfg.custom_configuration.get("beam").map(String::as_str),
        Some("4")
    );
    assert!(
        cfg.enable_word_time_offsets,
        "always on: the gateway needs word ends"
    );
}

#[tokio::test]
async fn words_are_offered_only_when_asked_and_ping_is_answered() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::with_backends(&[riva.url()]).await;
    let mut c = gw.connect().await;
    c.start(json!({"word_timestamps": false})).await;
    c.send_json(json!({"type":"ping","timestamp":1702483200000u64}))
        .await;
    let pong = c.json().await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["timestamp"], 1702483200000u64);
    assert!(pong["server_time"].as_i64().unwrap() > 1_700_000_000_000);
    let mut s = riva.next_stream().await;
    c.audio(&tone(200, 16_000)).await;
    s.audio_at_least(bytes_for(200, 16_000)).await;
    c.end().await;
    s.until_half_close().await;
    s.send(final_result("hi", &[("hi", 0, 150)], 0.2)).await;
    drop(s);
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000));
    assert_eq!(msgs[0]["type"], "final");
    assert!(msgs[0].get("words").is_none());
}

#[tokio::test]
async fn eight_khz_audio_is_resampled_to_the_back_end_rate() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::with_backends(&[riva.url()]).await;
    let mut c = gw.connect().await;
    c.start(json!({"sample_rate": 8000})).await;
    let mut s = riva.next_stream().await;
    assert_eq!(s.config.config.as_ref().unwrap().sample_rate_hertz, 16_000);
    for chunk in tone(1_000, 8_000).chunks(1_600) {
        c.audio(chunk).await;
    }
    c.end().await;
    let got = s.until_half_close().await;
    let expect = bytes_for(1_000, 16_000);
    assert!(
        (got.len() as i64 - expect as i64).abs() <= 4,
        "1 s at 8 kHz becomes 1 s at 16 kHz: {} bytes vs {expect}",
        got.len()
    );
}

/// Every bad input gets its documented answer and the session goes on.
#[tokio::test]
async fn bad_input_is_answered_and_the_session_lives() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::with_backends(&[riva.url()]).await;
    let mut c = gw.connect().await;

    let expect_error = |v: serde_json::Value, code: &str| {
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["recoverable"], true, "{v}");
        v["message"].as_str().unwrap().to_string()
    };

    c.send_text("this is not json").await;
    expect_error(c.json().await, "INVALID_REQUEST");
    c.send_json(json!({"type":"dance"})).await;
    let m = expect_error(c.json().await, "INVALID_REQUEST");
    assert!(m.contains("dance"));
    c.start(json!({"sample_rate": 96000})).await;
    let m = expect_error(c.json().await, "AUDIO_FORMAT_ERROR");
    assert!(m.contains("96000"));
    c.start(json!({"sample_rate": "fast"})).await;
    expect_error(c.json().await, "AUDIO_FORMAT_ERROR");
    // a valid start after refused ones works
    c.start(json!({"sample_rate": 16000})).await;
    let mut s = riva.next_stream().await;
    c.start(json!({})).await;
    let m = expect_error(c.json().await, "INVALID_REQUEST");
    assert!(m.contains("already started"));
    c.audio(&[1, 2, 3]).await;
    let m = expect_error(c.json().await, "AUDIO_FORMAT_ERROR");
    assert!(m.contains("frame 1") && m.contains("odd"), "{m}");
    c.audio(&tone(1_500, 16_000)).await;
    let m = expect_error(c.json().await, "AUDIO_FORMAT_ERROR");
    assert!(m.contains("frame 2") && m.contains("1500 ms"), "{m}");
    // 10 ms frames are fine
    let good = tone(300, 16_000);
    for chunk in good.chunks(320) {
        c.audio(chunk).await;
    }
    assert_eq!(
        s.audio_at_least(good.len()).await,
        good,
        "refused frames never reach Riva"
    );
    c.end().await;
    c.audio(&tone(100, 16_000)).await;
    let m = expect_error(c.json().await, "INVALID_REQUEST");
    assert!(m.contains("after end"), "{m}");
    s.until_half_close().await;
    s.send(final_result("ok", &[("ok", 0, 200)], 0.3)).await;
    drop(s);
    let (msgs, close) = c.drain().await;
    assert_eq!(msgs.last().unwrap()["type"], "final");
    assert_eq!(close, Some(1000));
    let errors = gw
        .metric("sgw_errors_total{code=\"INVALID_REQUEST\"}")
        .await;
    assert_eq!(errors, Some(4.0));
}

#[tokio::test]
async fn a_vanishing_client_cancels_its_stream_and_others_carry_on() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::with_backends(&[riva.url()]).await;

    // connects and closes before sending anything
    let c = gw.connect().await;
    c.close().await;
    // connects and drops the TCP connection without a close frame
    let c = gw.connect().await;
    drop(c);

    // a live session survives those, and one that vanishes mid-stream is cancelled upstream
    let mut live = gw.connect().await;
    live.start(json!({})).await;
    let mut live_stream = riva.next_stream().await;

    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let mut s = riva.next_stream().await;
    c.audio(&tone(200, 16_000)).await;
    s.audio_at_least(bytes_for(200, 16_000)).await;
    drop(c);
    tokio::time::timeout(Duration::from_secs(5), &mut s.cancelled)
        .await
        .expect("the back-end stream was cancelled")
        .unwrap();

    live.audio(&tone(100, 16_000)).await;
    live_stream.audio_at_least(bytes_for(100, 16_000)).await;
    live_stream.send(partial("still here", 0.1)).await;
    assert_eq!(live.json().await["text"], "still here");
    live.close().await;
    gw.wait_metric("sgw_sessions_active", 0.0).await;
    assert!(
        gw.metric("sgw_sessions_total{dialect=\"v1\",outcome=\"client_gone\"}")
            .await
            .unwrap()
            >= 3.0
    );
}

#[tokio::test]
async fn a_client_that_outruns_the_back_end_is_told_which_audio_was_refused() {
    // The double advertises a 64 KiB window and reads nothing, so HTTP/2 flow control
    // stops the gateway's sender and the session queue (1 s) fills.
    let riva = RivaDouble::start_with(Mode::Scripted, true, Some(65_535)).await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_SESSION__QUEUE", "1s".into()),
    ])
    .await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let s = riva.next_stream().await;
    let frame = tone(100, 16_000);
    let mut refused = None;
    for i in 1..=60u64 {
        c.audio(&frame).await;
        if i % 10 == 0 {
            // give the gateway a moment so errors, if any, are waiting
            if let Ok(Received::Json(v)) =
                tokio::time::timeout(Duration::from_millis(200), c.recv()).await
            {
                refused = Some(v);
                break;
            }
        }
    }
    let v = refused.expect("the gateway refused audio once its queue was full");
    assert_eq!(v["code"], "BUFFER_OVERFLOW");
    assert_eq!(v["recoverable"], true);
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("audio frame") && m.contains("not transcribed"),
        "{m}"
    );
    // the back end catches up: the session goes on
    s.reading.send(true).unwrap();
    drop(s);
    c.send_json(json!({"type":"ping","timestamp":1})).await;
    assert_eq!(c.until("pong").await["timestamp"], 1);
}

#[tokio::test]
async fn a_failed_stream_is_reopened_with_the_audio_since_the_last_final() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::with_backends(&[riva.url()]).await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let mut s1 = riva.next_stream().await;
    let first = tone(1_000, 16_000);
    c.audio(&first).await;
    s1.audio_at_least(first.len()).await;
    // a final covering the first 600 ms, then the stream dies
    s1.send(final_result("one", &[("one", 100, 600)], 1.0))
        .await;
    assert_eq!(c.json().await["text"], "one");
    s1.fail(Status::unavailable("node restarting")).await;
    let mut s2 = riva.next_stream().await;
    let replayed = s2.audio_at_least(bytes_for(400, 16_000)).await;
    assert_eq!(
        replayed,
        first[bytes_for(600, 16_000)..],
        "exactly the audio after the final"
    );
    s2.send(final_result("two", &[("two", 100, 300)], 0.4))
        .await;
    let f = c.json().await;
    assert_eq!(f["text"], "two");
    assert!(
        approx(&f["words"][0]["start"], 0.7),
        "times are session times: {f}"
    );
    assert_eq!(f["timestamp_ms"], 1000);
    assert_eq!(
        f["duration_ms"], 300,
        "from the end of `one` (0.6 s) to the end of `two` (0.9 s)"
    );
    c.end().await;
    s2.until_half_close().await;
    drop(s2);
    let (_, close) = c.drain().await;
    assert_eq!(close, Some(1000));
    let series = format!(
        "sgw_stream_reopens_total{{backend=\"{}\",reason=\"error\"}}",
        riva.url()
    );
    assert_eq!(gw.metric(&series).await, Some(1.0));
}

#[tokio::test]
async fn failover_moves_a_live_session_to_the_next_back_end() {
    let a = RivaDouble::start(Mode::Scripted).await;
    let b = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::with_backends(&[a.url(), b.url()]).await;
    gw.wait_ready().await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let mut sa = a.next_stream().await;
    let audio = tone(500, 16_000);
    c.audio(&audio).await;
    sa.audio_at_least(audio.len()).await;
    sa.fail(Status::internal("gpu fell over")).await;
    let mut sb = b.next_stream().await;
    assert_eq!(
        sb.audio_at_least(audio.len()).await,
        audio,
        "nothing was final: all audio replays"
    );
    let status = c.json().await;
    assert_eq!(status["type"], "status");
    assert_eq!(status["state"], "failover");
    sb.send(final_result("moved", &[("moved", 0, 400)], 0.5))
        .await;
    assert_eq!(c.json().await["text"], "moved");
    let series = format!(
        "sgw_failovers_total{{from=\"{}\",to=\"{}\"}}",
        a.url(),
        b.url()
    );
    assert_eq!(gw.metric(&series).await, Some(1.0));
}

#[tokio::test]
async fn an_invalid_config_from_riva_or_no_back_end_ends_the_session_cleanly() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::with_backends(&[riva.url()]).await;
    let mut c = gw.connect().await;
    c.start(json!({"language":"xx-XX"})).await;
    let s = riva.next_stream().await;
    s.fail(Status::invalid_argument("language xx-XX is not served"))
        .await;
    let (msgs, close) = c.drain().await;
    assert_eq!(msgs[0]["code"], "MODEL_UNAVAILABLE");
    assert_eq!(msgs[0]["recoverable"], false);
    assert!(msgs[0]["message"].as_str().unwrap().contains("settings"));
    assert_eq!(close, Some(1013));

    // unknown route
    let mut c = gw.connect().await;
    c.start(json!({"model":"nope"})).await;
    let (msgs, close) = c.drain().await;
    assert_eq!(msgs[0]["code"], "MODEL_UNAVAILABLE");
    assert!(msgs[0]["message"].as_str().unwrap().contains("default"));
    assert_eq!(close, Some(1013));

    // nothing listening
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("riva://{}", dead.local_addr().unwrap());
    drop(dead);
    let gw2 = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", url),
        ("SGW_RIVA__CONNECT_TIMEOUT", "500ms".into()),
    ])
    .await;
    let mut c = gw2.connect().await;
    c.start(json!({})).await;
    let (msgs, close) = c.drain().await;
    assert_eq!(msgs[0]["code"], "MODEL_UNAVAILABLE");
    assert_eq!(close, Some(1013));
    assert_eq!(gw2.get("/ready").await.0, 503);
}

#[tokio::test]
async fn long_sessions_rotate_the_stream_at_a_final_without_losing_audio() {
    let riva = RivaDouble::start(Mode::Auto {
        final_every_ms: 500,
    })
    .await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_RIVA__MAX_STREAM_AGE", "1s".into()),
    ])
    .await;
    let mut c = gw.connect().await;
    c.start(json!({"interim_results": false})).await;
    let frame = tone(100, 16_000);
    // 4 s of audio over 2 s of wall time: the stream ages past 1 s at least once
    for _ in 0..40 {
        c.audio(&frame).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.end().await;
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000));
    let finals: Vec<_> = msgs.iter().filter(|m| m["type"] == "final").collect();
    assert!(
        riva.stats.streams_opened.load(Ordering::Relaxed) >= 2,
        "the stream rotated"
    );
    // Append-only and lossless: the words of all finals tile the 4 s sent, each starting
    // where the previous ended, and the finals' durations add up to exactly 4 s.
    let mut covered = 0u64;
    let mut cursor = 0.0f64;
    for f in &finals {
        covered += f["duration_ms"].as_u64().unwrap();
        for w in f["words"].as_array().unwrap() {
            let (start, end) = (w["start"].as_f64().unwrap(), w["end"].as_f64().unwrap());
            assert!(
                (start - cursor).abs() < 0.002,
                "word at {start} s, expected {cursor} s: {f}"
            );
            cursor = end;
        }
    }
    assert!(
        (cursor - 4.0).abs() < 0.002,
        "the words reach the end of the audio: {cursor}"
    );
    assert_eq!(covered, 4_000, "finals cover exactly the 4 s sent");
}

#[tokio::test]
async fn operational_endpoints() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    riva.set_health(ServingStatus::NotServing);
    let gw = Gateway::with_backends(&[riva.url()]).await;
    assert_eq!(gw.get("/health").await.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (code, body) = gw.get("/ready").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("NOT_SERVING"), "{body}");
    riva.set_health(ServingStatus::Serving);
    gw.wait_ready().await;
    let (code, body) = gw.get("/status").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["routes"][0]["name"], "default");
    assert_eq!(status["routes"][0]["backends"][0]["state"], "up");
    assert_eq!(status["config"]["session"]["queue_ms"], 10_000);
    let (code, metrics) = gw.get("/metrics").await;
    assert_eq!(code, 200);
    for name in [
        "sgw_sessions_active",
        "sgw_partial_latency_seconds",
        "sgw_final_latency_seconds",
        "sgw_first_partial_seconds",
        "sgw_audio_seconds_total",
        "sgw_relay_overhead_seconds",
        &format!("sgw_backend_up{{backend=\"{}\"}} 1", riva.url()),
    ] {
        assert!(metrics.contains(name), "missing {name}");
    }
}

#[tokio::test]
async fn shutdown_flushes_live_sessions_and_closes_with_going_away() {
    let riva = RivaDouble::start(Mode::Auto {
        final_every_ms: 60_000,
    })
    .await;
    let mut gw = Gateway::with_backends(&[riva.url()]).await;
    let mut c = gw.connect().await;
    c.start(json!({"interim_results": false})).await;
    c.audio(&tone(300, 16_000)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = gw.addr;
    let shutting = tokio::spawn(async move {
        gw.shutdown().await;
    });
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1001));
    assert_eq!(
        msgs.last().unwrap()["type"],
        "final",
        "pending audio was finalised: {msgs:?}"
    );
    shutting.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_lagging_back_end_is_reported_and_so_is_its_recovery() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_SESSION__LAG_WARNING", "300ms".into()),
    ])
    .await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let mut s = riva.next_stream().await;
    let audio = tone(1_000, 16_000);
    for chunk in audio.chunks(3_200) {
        c.audio(chunk).await;
    }
    s.audio_at_least(audio.len()).await;
    // Up to date: processed everything there is, however long ago it arrived.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.send(partial("one", 1.0)).await;
    assert_eq!(c.json().await["type"], "partial", "no lag signal");

    let more = tone(1_000, 16_000);
    for chunk in more.chunks(3_200) {
        c.audio(chunk).await;
    }
    s.audio_at_least(more.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Behind: the audio after 1.2 s arrived over 300 ms ago and is not processed yet.
    s.send(partial("one two", 1.2)).await;
    let st = c.json().await;
    assert_eq!(st["type"], "status", "{st}");
    assert_eq!(st["state"], "backend_lagging");
    assert!(st["message"].as_str().unwrap().contains("behind"), "{st}");
    assert_eq!(c.json().await["text"], "one two", "the result still comes");
    gw.wait_metric("sgw_sessions_lagging", 1.0).await;
    // Still behind: said once, not again.
    s.send(partial("one two three", 1.4)).await;
    assert_eq!(c.json().await["type"], "partial");
    // Caught up.
    s.send(partial("one two three four", 2.0)).await;
    let st = c.json().await;
    assert_eq!(st["state"], "backend_caught_up", "{st}");
    assert_eq!(c.json().await["type"], "partial");
    gw.wait_metric("sgw_sessions_lagging", 0.0).await;

    // A session that ends while lagging leaves the gauge.
    for chunk in tone(1_000, 16_000).chunks(3_200) {
        c.audio(chunk).await;
    }
    s.audio_at_least(32_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.send(partial("five", 2.1)).await;
    assert_eq!(c.json().await["state"], "backend_lagging");
    gw.wait_metric("sgw_sessions_lagging", 1.0).await;
    drop(c);
    gw.wait_metric("sgw_sessions_active", 0.0).await;
    gw.wait_metric("sgw_sessions_lagging", 0.0).await;
}

#[tokio::test]
async fn a_route_whose_sessions_lag_refuses_new_ones_until_they_catch_up() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_SESSION__LAG_WARNING", "300ms".into()),
        ("SGW_ADMISSION__SHED_LAGGING_PERCENT", "50".into()),
    ])
    .await;
    // Two sessions on the route; one falls behind (1 of 2 = 50 %).
    let mut behind = gw.connect().await;
    behind.start(json!({})).await;
    let mut sb = riva.next_stream().await;
    let mut fine = gw.connect().await;
    fine.start(json!({})).await;
    let _sf = riva.next_stream().await;
    let audio = tone(1_000, 16_000);
    for chunk in audio.chunks(3_200) {
        behind.audio(chunk).await;
    }
    sb.audio_at_least(audio.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sb.send(partial("one", 0.2)).await;
    assert_eq!(behind.json().await["state"], "backend_lagging");
    assert_eq!(behind.json().await["text"], "one");
    gw.wait_metric("sgw_sessions_lagging", 1.0).await;

    // A newcomer is refused, recoverably, and told why; its connection stays open.
    let mut late = gw.connect().await;
    late.start(json!({})).await;
    let err = late.json().await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "RATE_LIMIT_EXCEEDED", "{err}");
    assert_eq!(err["recoverable"], true);
    assert!(
        err["message"].as_str().unwrap().contains("overloaded"),
        "{err}"
    );
    gw.wait_metric("sgw_rejections_total{reason=\"route_lagging\"}", 1.0)
        .await;
    let status: serde_json::Value = serde_json::from_str(&gw.get("/status").await.1).unwrap();
    let route = &status["route_sessions"]["default"];
    assert_eq!(
        (&route["live"], &route["lagging"], &route["shedding"]),
        (&json!(2), &json!(1), &json!(true)),
        "{status}"
    );
    // The sessions already there go on (the lagging one still gets its results).
    sb.send(partial("one two", 0.4)).await;
    assert_eq!(behind.json().await["text"], "one two");

    // Caught up: the route admits again, and the newcomer's second start is served.
    sb.send(partial("one two three", 1.0)).await;
    assert_eq!(behind.json().await["state"], "backend_caught_up");
    assert_eq!(behind.json().await["type"], "partial");
    gw.wait_metric("sgw_sessions_lagging", 0.0).await;
    late.start(json!({})).await;
    let _sl = riva.next_stream().await;
    late.audio(&tone(100, 16_000)).await;
    drop(fine);
}
