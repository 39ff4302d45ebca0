//! Resilience against real gRPC servers (the scripted Riva double): breakers, retries
//! and their budget, stall detection, load balancing, admission control and drain.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use sgw_testkit::riva_double::{Mode, RivaDouble, final_result};
use sgw_testkit::{
    Client, Gateway, GatewayProcess, assert_failed_over_without_loss, assert_tiles, attempt,
    send_paced, tone,
};
use speech_gateway::config::BackendProtocol;
use tonic::Status;

const AUTO: Mode = Mode::Auto {
    final_every_ms: 1_000,
};

fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

#[tokio::test]
async fn a_stalled_back_end_is_left_for_the_next_without_losing_audio() {
    let stuck = RivaDouble::start(Mode::Scripted).await; // accepts, reads, never answers
    let good = RivaDouble::start(AUTO).await;
    let gw = Gateway::start(&env(&[
        (
            "SGW_ROUTES__DEFAULT",
            &format!("{},{}", stuck.url(), good.url()),
        ),
        ("SGW_SESSION__STALL_TIMEOUT", "300ms"),
    ]))
    .await;
    gw.wait_ready().await;
    let mut c = gw.connect().await;
    c.start(json!({"interim_results": false})).await;
    let _held = stuck.next_stream().await;
    send_paced(&mut c, 2_000).await;
    c.end().await;
    let (msgs, close) = c.drain().await;
    assert_failed_over_without_loss(&msgs, close, 2_000);
    let series = format!(
        "sgw_stream_reopens_total{{backend=\"{}\",reason=\"stall\"}}",
        stuck.url()
    );
    assert_eq!(gw.metric(&series).await, Some(1.0));
    let series = format!(
        "sgw_failovers_total{{from=\"{}\",to=\"{}\"}}",
        stuck.url(),
        good.url()
    );
    assert_eq!(gw.metric(&series).await, Some(1.0));
    assert_eq!(gw.metric("sgw_failover_seconds_count").await, Some(1.0));
}

#[tokio::test]
async fn a_failing_back_end_is_retried_with_backoff_then_given_up_cleanly() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &riva.url()),
        ("SGW_RETRY__ATTEMPTS", "2"),
        ("SGW_RETRY__INITIAL_BACKOFF", "50ms"),
    ]))
    .await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let audio = tone(300, 16_000);
    c.audio(&audio).await;
    // The first stream and two retries each get the whole utterance, then fail.
    for _ in 0..3 {
        let mut s = riva.next_stream().await;
        assert_eq!(s.audio_at_least(audio.len()).await, audio);
        s.fail(Status::unavailable("gpu node rebooting")).await;
    }
    let err = c.until("error").await;
    assert_eq!(err["code"], "MODEL_UNAVAILABLE");
    assert_eq!(err["recoverable"], false);
    assert!(
        err["message"].as_str().unwrap().contains("after 2 retries"),
        "{err}"
    );
    let (_, close) = c.drain().await;
    assert_eq!(close, Some(1013));
    assert_eq!(riva.stats.streams_opened.load(Ordering::Relaxed), 3);
    assert_eq!(
        gw.metric("sgw_retries_total{reason=\"scheduled\"}").await,
        Some(2.0)
    );
    assert_eq!(
        gw.metric("sgw_retries_total{reason=\"attempts_exhausted\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn retries_stop_when_the_budget_is_spent() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &riva.url()),
        ("SGW_RETRY__BUDGET_PERCENT", "0"),
        ("SGW_RETRY__BUDGET_MIN_PER_SECOND", "0"),
    ]))
    .await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    c.audio(&tone(100, 16_000)).await;
    riva.next_stream()
        .await
        .fail(Status::unavailable("down"))
        .await;
    let err = c.until("error").await;
    assert_eq!(err["code"], "MODEL_UNAVAILABLE");
    assert!(
        err["message"].as_str().unwrap().contains("retry budget"),
        "{err}"
    );
    assert_eq!(riva.stats.streams_opened.load(Ordering::Relaxed), 1);
    assert_eq!(
        gw.metric("sgw_retries_total{reason=\"budget_exhausted\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_and_a_probe_closes_it() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &riva.url()),
        ("SGW_RETRY__ATTEMPTS", "0"),
        ("SGW_BREAKER__FAILURES", "2"),
        ("SGW_BREAKER__OPEN_FOR", "1s"),
    ]))
    .await;
    gw.wait_ready().await;
    let breaker = format!("sgw_breaker_state{{backend=\"{}\"}}", riva.url());
    for _ in 0..2 {
        let mut c = gw.connect().await;
        c.start(json!({})).await;
        c.audio(&tone(100, 16_000)).await;
        riva.next_stream()
            .await
            .fail(Status::internal("cuda error"))
            .await;
        assert_eq!(c.until("error").await["code"], "MODEL_UNAVAILABLE");
    }
    assert_eq!(gw.metric(&breaker).await, Some(1.0), "open");
    let (code, body) = gw.get("/ready").await;
    assert_eq!(code, 503, "no usable back end: {body}");
    let status: Value = serde_json::from_str(&gw.get("/status").await.1).unwrap();
    assert_eq!(status["routes"][0]["backends"][0]["breaker"], "open");

    // While open, sessions are refused at once, without touching the back end.
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let err = c.until("error").await;
    assert!(
        err["message"].as_str().unwrap().contains("circuit open"),
        "{err}"
    );
    assert_eq!(riva.stats.streams_opened.load(Ordering::Relaxed), 2);

    // After the cool-down one probe session goes through; its success closes the breaker.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    c.audio(&tone(200, 16_000)).await;
    let s = riva.next_stream().await;
    s.send(final_result("back", &[("back", 0, 200)], 0.2)).await;
    assert_eq!(c.until("final").await["text"], "back");
    assert_eq!(gw.metric(&breaker).await, Some(0.0), "closed");
    let opened = format!(
        "sgw_breaker_transitions_total{{backend=\"{}\",to=\"opened\"}}",
        riva.url()
    );
    let closed = format!(
        "sgw_breaker_transitions_total{{backend=\"{}\",to=\"closed\"}}",
        riva.url()
    );
    assert_eq!(gw.metric(&opened).await, Some(1.0));
    assert_eq!(gw.metric(&closed).await, Some(1.0));
}

#[tokio::test]
async fn client_faults_never_trip_a_breaker() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &riva.url()),
        ("SGW_BREAKER__FAILURES", "1"),
    ]))
    .await;
    for _ in 0..3 {
        let mut c = gw.connect().await;
        c.start(json!({"language": "xx-XX"})).await;
        riva.next_stream()
            .await
            .fail(Status::invalid_argument("language not supported"))
            .await;
        let err = c.until("error").await;
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("refused this session's settings")
        );
    }
    let breaker = format!("sgw_breaker_state{{backend=\"{}\"}}", riva.url());
    assert_eq!(gw.metric(&breaker).await, Some(0.0));
}

#[tokio::test]
async fn sessions_spread_over_a_route_by_least_outstanding_sessions() {
    let a = RivaDouble::start(AUTO).await;
    let b = RivaDouble::start(AUTO).await;
    let gw = Gateway::with_backends(&[a.url(), b.url()]).await;
    gw.wait_ready().await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        let mut c = gw.connect().await;
        c.start(json!({})).await;
        c.audio(&tone(100, 16_000)).await;
        c.until("partial").await; // the stream is open before the next session picks
        clients.push(c);
    }
    assert_eq!(a.stats.streams_opened.load(Ordering::Relaxed), 3);
    assert_eq!(b.stats.streams_opened.load(Ordering::Relaxed), 3);
    let status: Value = serde_json::from_str(&gw.get("/status").await.1).unwrap();
    for be in status["routes"][0]["backends"].as_array().unwrap() {
        assert_eq!(be["active_sessions"], 3, "{be}");
    }
}

/// An upgrade the gateway refuses with HTTP 503 and this `Retry-After`; its JSON body.
async fn refused_with_503(gw: &Gateway, retry_after: &str) -> Value {
    let Err((status, headers, body)) = attempt(&gw.ws_url(), &[]).await else {
        panic!("expected an HTTP refusal, got an upgrade");
    };
    assert_eq!(status, 503, "{body}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "retry-after" && v == retry_after),
        "{headers:?}"
    );
    body
}

#[tokio::test]
async fn the_global_limit_answers_503_with_retry_after_before_the_upgrade() {
    let riva = RivaDouble::start(AUTO).await;
    let gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &riva.url()),
        ("SGW_ADMISSION__MAX_SESSIONS", "1"),
        ("SGW_ADMISSION__RETRY_AFTER", "7s"),
    ]))
    .await;
    let first = gw.connect().await;
    let body = refused_with_503(&gw, "7").await;
    assert_eq!(body["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(
        gw.metric("sgw_rejections_total{reason=\"global_limit\"}")
            .await,
        Some(1.0)
    );
    first.close().await;
    // The place comes back when the session ends.
    for _ in 0..100 {
        if tokio_tungstenite::connect_async(gw.ws_url()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the freed place was never given back");
}

#[tokio::test]
async fn a_route_at_its_limit_refuses_start_recoverably() {
    let riva = RivaDouble::start(AUTO).await;
    let gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &riva.url()),
        ("SGW_ADMISSION__ROUTES__DEFAULT", "1"),
    ]))
    .await;
    let mut first = gw.connect().await;
    first.start(json!({})).await;
    first.audio(&tone(100, 16_000)).await;
    first.until("partial").await;
    let mut second = gw.connect().await;
    second.start(json!({})).await;
    let err = second.until("error").await;
    assert_eq!(err["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(err["recoverable"], true);
    // Audio before a successful start is refused and said so, never dropped silently.
    second.audio(&tone(100, 16_000)).await;
    assert_eq!(second.until("error").await["code"], "RATE_LIMIT_EXCEEDED");
    first.end().await;
    first.drain().await;
    second.start(json!({})).await;
    second.audio(&tone(100, 16_000)).await;
    second.until("partial").await;
}

#[tokio::test]
async fn shutdown_drains_sessions_before_finalising_them() {
    let riva = RivaDouble::start(AUTO).await;
    let mut gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &riva.url()),
        ("SGW_SESSION__DRAIN_TIMEOUT", "30s"),
    ]))
    .await;
    gw.wait_ready().await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    c.audio(&tone(200, 16_000)).await;
    c.until("partial").await;
    let addr = gw.addr;
    let ws_url = gw.ws_url();
    let stopping = tokio::spawn(async move { gw.shutdown().await });
    // Draining: still answering HTTP, not ready, refusing new sessions.
    let mut ready = 0;
    for _ in 0..100 {
        ready = sgw_testkit::http_get(addr, "/ready").await.0;
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready, 503);
    let refused = tokio_tungstenite::connect_async(&ws_url).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503),
        "{refused:?}"
    );
    // The live session carries on and ends normally, then the gateway stops.
    c.audio(&tone(300, 16_000)).await;
    c.end().await;
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1000), "{msgs:?}");
    assert_tiles(&msgs, 500);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("serve returned once the last session ended")
        .unwrap();
}

#[tokio::test]
async fn sessions_left_at_the_drain_timeout_get_their_finals_and_1001() {
    let riva = RivaDouble::start(Mode::Auto {
        final_every_ms: 60_000,
    })
    .await;
    let mut gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &riva.url()),
        ("SGW_SESSION__DRAIN_TIMEOUT", "300ms"),
    ]))
    .await;
    let mut c = gw.connect().await;
    c.start(json!({"interim_results": false})).await;
    c.audio(&tone(400, 16_000)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(async move { gw.shutdown().await });
    let (msgs, close) = c.drain().await;
    assert_eq!(close, Some(1001));
    assert_tiles(&msgs, 400);
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_reopen_that_cannot_replay_everything_says_how_much_was_lost() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &riva.url()),
        ("SGW_SESSION__REPLAY", "1s"),
    ]))
    .await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let mut s1 = riva.next_stream().await;
    let audio = tone(1_500, 16_000); // no final: 500 ms more than the replay buffer holds
    for frame in audio.chunks(sgw_testkit::bytes_for(100, 16_000)) {
        c.audio(frame).await;
    }
    s1.audio_at_least(audio.len()).await;
    s1.fail(Status::unavailable("restarting")).await;
    let mut s2 = riva.next_stream().await;
    let replayed = s2
        .audio_at_least(sgw_testkit::bytes_for(1_000, 16_000))
        .await;
    assert_eq!(
        replayed,
        audio[sgw_testkit::bytes_for(500, 16_000)..],
        "the last second"
    );
    let gap = c.until("status").await;
    assert_eq!(gap["state"], "audio_gap", "{gap}");
    let message = gap["message"].as_str().unwrap();
    assert!(message.contains("500 ms"), "{message}");
}

#[tokio::test]
async fn a_back_end_that_never_finishes_is_cut_off_at_the_flush_timeout_and_the_client_told() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &riva.url()),
        ("SGW_SESSION__FLUSH_TIMEOUT", "300ms"),
        ("SGW_SESSION__STALL_TIMEOUT", "0s"),
    ]))
    .await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    let _s = riva.next_stream().await; // reads, never answers
    for frame in tone(500, 16_000).chunks(sgw_testkit::bytes_for(100, 16_000)) {
        c.audio(frame).await;
    }
    c.end().await;
    let (msgs, close) = c.drain().await;
    let gap = msgs
        .iter()
        .find(|m| m["type"] == "status" && m["state"] == "audio_gap")
        .unwrap_or_else(|| panic!("the client is told: {msgs:?}"));
    assert!(
        gap["message"]
            .as_str()
            .unwrap()
            .contains("0.000 s to 0.500 s"),
        "{gap}"
    );
    assert_eq!(close, Some(1000));
    gw.wait_metric(
        "sgw_sessions_total{dialect=\"v1\",outcome=\"flush_timeout\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn an_overloaded_gateway_refuses_new_sessions_and_keeps_the_ones_it_has() {
    let riva = RivaDouble::start(AUTO).await;
    let gw = Gateway::start(&env(&[
        ("SGW_ROUTES__DEFAULT", &riva.url()),
        ("SGW_ADMISSION__MAX_DELAY", "20ms"),
        ("SGW_ADMISSION__RETRY_AFTER", "3s"),
    ]))
    .await;
    let mut live = gw.connect().await;
    live.start(json!({})).await;
    live.audio(&tone(100, 16_000)).await;
    live.until("partial").await;
    assert!(
        tokio_tungstenite::connect_async(gw.ws_url()).await.is_ok(),
        "not overloaded while healthy"
    );
    // The gateway runs on this test's single-threaded runtime: blocking the thread makes
    // every gateway task late, as a saturated CPU would. Between blocks the runtime turns
    // over, so the overload probe wakes (late) and measures.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(250));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let body = refused_with_503(&gw, "3").await;
    assert_eq!(body["code"], "RATE_LIMIT_EXCEEDED");
    assert!(
        body["message"].as_str().unwrap().contains("overloaded"),
        "{body}"
    );
    assert_eq!(
        gw.metric("sgw_rejections_total{reason=\"overloaded\"}")
            .await,
        Some(1.0)
    );
    assert!(gw.metric("sgw_runtime_delay_seconds").await.unwrap() > 0.01);
    // The session it has goes on untouched.
    live.audio(&tone(100, 16_000)).await;
    live.until("partial").await;
    // With the runtime healthy again the mean falls under half the limit within about
    // half a second, and new sessions are taken again.
    for _ in 0..100 {
        if tokio_tungstenite::connect_async(gw.ws_url()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("still refusing after the runtime recovered");
}

/// When every session lags at once, every client is told, but the log gets at most
/// `log_burst` lines of the warning per 10 s; the rest are counted (`suppressed`).
#[tokio::test]
async fn a_storm_of_lagging_sessions_reaches_every_client_and_only_a_burst_of_log_lines() {
    use sgw_testkit::sim::local::{self as sim};
    use sgw_testkit::sim::{Behaviour, SimOptions};
    const SESSIONS: usize = 6;
    let slow = sim::start(
        BackendProtocol::Riva,
        SimOptions {
            behaviour: Behaviour::Slow(Duration::from_millis(1_500)),
            ..SimOptions::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut gw = GatewayProcess::spawn(
        &[],
        &[
            ("SGW_ROUTES__DEFAULT", format!("riva://{}", slow.addr)),
            ("SGW_SESSION__LAG_WARNING", "300ms".into()),
            ("SGW_LOG_BURST", "2".into()),
            ("SGW_LOG_LEVEL", "info".into()),
            ("SGW_AUTH__ENABLED", "false".into()),
            ("SGW_LIMITS__CONNECT_RATE", "0".into()),
        ],
        &dir.path().join("gateway.log"),
    )
    .await;
    let sessions = (0..SESSIONS).map(|_| {
        let url = gw.ws_url();
        async move {
            let mut c = Client {
                ws: attempt(&url, &[]).await.expect("admitted"),
            };
            c.start(json!({})).await;
            for chunk in tone(1_000, 16_000).chunks(3_200) {
                c.audio(chunk).await;
            }
            let status = c.until("status").await;
            c.end().await;
            let _ = c.drain().await;
            status
        }
    });
    let told = futures::future::join_all(sessions).await;
    let (_, log) = gw.stop().await;
    for st in &told {
        assert_eq!(st["state"], "backend_lagging", "{st}");
    }
    let warned: Vec<Value> = log
        .lines()
        .filter(|l| l.contains("back-end results trail the audio"))
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    assert!(
        (1..=2).contains(&warned.len()),
        "{SESSIONS} sessions lagged within one window: a burst of 2 lines, got {}",
        warned.len()
    );
    for w in &warned {
        assert!(w["suppressed"].is_u64(), "{w}");
        assert!(w["lag_ms"].as_u64().unwrap() > 300, "{w}");
    }
    let ended = log.lines().filter(|l| l.contains("session ended")).count();
    assert_eq!(ended, SESSIONS, "every session's own line is kept");
}

/// `riva.connections`: a back end's streams are spread over that many HTTP/2 connections
/// (so a per-connection stream cap at the server or a proxy does not cap the back end),
/// taken in turn.
#[tokio::test]
async fn streams_take_a_back_ends_connections_in_turn() {
    let riva = RivaDouble::start(Mode::Scripted).await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_RIVA__CONNECTIONS", "3".into()),
    ])
    .await;
    let mut open = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..6 {
        let mut c = gw.connect().await;
        c.start(json!({})).await;
        c.audio(&tone(100, 16_000)).await;
        let s = riva.next_stream().await;
        peers.push(s.peer.expect("the double knows the peer"));
        open.push((c, s));
    }
    let (_, status) = gw.get("/status").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["config"]["riva"]["connections"], 3, "{status}");
    let distinct: std::collections::HashSet<_> = peers.iter().collect();
    assert_eq!(distinct.len(), 3, "three connections: {peers:?}");
    assert_eq!(peers[..3], peers[3..], "taken in turn: {peers:?}");
}

/// A back end that takes at most 2 concurrent streams per connection (HTTP/2
/// `MAX_CONCURRENT_STREAMS`, as proxies set it): over one connection a third session's
/// stream cannot open while two are live; with `riva.connections = 2`, four sessions are
/// all transcribed.
#[tokio::test]
async fn more_connections_lift_a_per_connection_stream_cap() {
    let riva = RivaDouble::start_capped(AUTO, 2).await;
    let opened = || riva.stats.streams_opened.load(Ordering::Relaxed);
    {
        let gw = Gateway::start(&[("SGW_ROUTES__DEFAULT", riva.url())]).await;
        let mut live = Vec::new();
        for _ in 0..3 {
            let mut c = gw.connect().await;
            c.start(json!({})).await;
            c.audio(&tone(100, 16_000)).await;
            live.push(c);
        }
        for _ in 0..100 {
            if opened() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(opened(), 2, "one connection carries two streams");
    }
    let before = opened();
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_RIVA__CONNECTIONS", "2".into()),
    ])
    .await;
    let mut live = Vec::new();
    for _ in 0..4 {
        let mut c = gw.connect().await;
        c.start(json!({})).await;
        for chunk in tone(1_000, 16_000).chunks(3_200) {
            c.audio(chunk).await;
        }
        live.push(c);
    }
    for mut c in live {
        c.end().await;
        let (msgs, _) = c.drain().await;
        assert!(
            msgs.iter().any(|m| m["type"] == "final"),
            "every session transcribed: {msgs:?}"
        );
    }
    assert_eq!(opened() - before, 4);
}
