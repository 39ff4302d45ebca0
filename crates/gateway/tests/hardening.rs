//! Hardening: clients that try to hurt every other session — by never reading, by
//! flooding control frames, by holding connections open without a request, by tokens
//! minted for someone else — each beside a real-time **canary** session that must finish
//! undisturbed (finals, no error, close 1000). The gateway runs as its own process (the
//! binary operators run), so its memory and descriptors are its own.
//!
//! `abusive_clients_soak` runs a mix of all of them for `SGW_SOAK_SECONDS` (default 30)
//! beside normal sessions and checks that sessions, descriptors and memory come back to
//! their baseline; it writes `target/soak/report.md`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcp};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sgw_testkit::riva_double::{Mode, RivaDouble};
use sgw_testkit::{Client, Gateway, GatewayProcess, attempt, metric_at, tone};
use tokio_tungstenite::tungstenite::Message;

async fn riva() -> RivaDouble {
    RivaDouble::start(Mode::Auto {
        final_every_ms: 1_000,
    })
    .await
}

fn log_path(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("hardening");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.log"))
}

/// What a canary saw.
#[derive(Debug)]
struct CanaryReport {
    finals: usize,
    errors: Vec<Value>,
    close: Option<u16>,
    /// Longest wait between two messages from the gateway (reported, not asserted).
    #[allow(dead_code)]
    longest_gap: Duration,
}

impl CanaryReport {
    fn assert_undisturbed(&self) {
        assert!(
            self.finals > 0 && self.errors.is_empty() && self.close == Some(1000),
            "the canary session was disturbed: {self:?}"
        );
    }
}

/// A well-behaved session: `seconds` of tone in 100 ms frames at real time, then `end`.
fn canary(url: String, seconds: u64) -> tokio::task::JoinHandle<CanaryReport> {
    tokio::spawn(async move {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("canary upgrade");
        let (mut tx, mut rx) = ws.split();
        let reader = tokio::spawn(async move {
            let mut finals = 0;
            let mut errors = Vec::new();
            let mut close = None;
            let mut last = Instant::now();
            let mut longest_gap = Duration::ZERO;
            while let Some(m) = rx.next().await {
                longest_gap = longest_gap.max(last.elapsed());
                last = Instant::now();
                match m {
                    Ok(Message::Text(t)) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap();
                        match v["type"].as_str() {
                            Some("final") => finals += 1,
                            Some("error") => errors.push(v),
                            _ => {}
                        }
                    }
                    Ok(Message::Close(f)) => {
                        close = f.map(|f| u16::from(f.code));
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            CanaryReport {
                finals,
                errors,
                close,
                longest_gap,
            }
        });
        tx.send(Message::Text(json!({"type":"start"}).to_string().into()))
            .await
            .unwrap();
        let frame = tone(100, 16_000);
        let start = tokio::time::Instant::now();
        for i in 0..seconds * 10 {
            tokio::time::sleep_until(start + Duration::from_millis(100 * i)).await;
            tx.send(Message::Binary(frame.clone().into()))
                .await
                .unwrap();
        }
        tx.send(Message::Text(json!({"type":"end"}).to_string().into()))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), reader)
            .await
            .expect("the canary's session ended")
            .unwrap()
    })
}

/// A WebSocket upgrade over a raw socket (nothing read after the 101), for clients that
/// misbehave below what a WebSocket library allows.
fn raw_upgrade(addr: SocketAddr) -> StdTcp {
    raw_upgrade_to(addr, "/v1/audio/stream")
}

fn raw_upgrade_to(addr: SocketAddr, path: &str) -> StdTcp {
    let mut s = StdTcp::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked client frame (`opcode`, payload).
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Writes pings with the largest control payload (125 bytes) on an upgraded socket as
/// fast as it takes them, never reading a pong, for `limit` or until the gateway closes
/// the connection. Returns the bytes written and, if it was cut off, when.
fn flood_pings(s: &mut StdTcp, limit: Duration) -> (usize, Option<Duration>) {
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let batch: Vec<u8> = (0..500).flat_map(|_| frame(0x9, &[7u8; 125])).collect();
    let t0 = Instant::now();
    let mut sent = 0usize;
    while t0.elapsed() < limit {
        match s.write_all(&batch) {
            Ok(()) => sent += batch.len(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (sent, Some(t0.elapsed())),
        }
    }
    (sent, None)
}

/// Waits until `check` holds, polling every 100 ms for at most `limit`; returns how long.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if check().await {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Opens a session and ends it at once: `Ok` when it was admitted, else the HTTP status
/// of the refusal.
async fn admitted(url: &str) -> Result<(), u16> {
    let ws = attempt(url, &[]).await.map_err(|(status, _, _)| status)?;
    let mut c = Client { ws };
    c.end().await;
    let _ = c.drain().await;
    Ok(())
}

/// The gateway binary in front of `riva`, with these settings, logging to `name`.log
/// (`nofile`: its open-file limit).
async fn gateway(
    riva: &RivaDouble,
    name: &str,
    env: &[(&str, String)],
    nofile: Option<u64>,
) -> GatewayProcess {
    GatewayProcess::spawn_with(&["--backend", &riva.url()], env, &log_path(name), nofile).await
}

/// Whether the server closed `s` (read returns EOF or a reset) within `limit`; reads and
/// discards whatever it sent first.
fn closed_within(s: &mut StdTcp, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64 * 1024];
    while t0.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

// ---- 1. control frames a client never reads ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_never_reads_its_pongs_keeps_memory_bounded() {
    let riva = riva().await;
    let gw = gateway(
        &riva,
        "ping_flood",
        &[
            ("SGW_AUTH__ENABLED", "false".into()),
            ("SGW_SESSION__IDLE_TIMEOUT", "3s".into()),
            ("SGW_LIMITS__WRITE_TIMEOUT", "2s".into()),
        ],
        None,
    )
    .await;
    let addr = gw.socket_addr();
    let canary = canary(gw.ws_url(), 10);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = gw.rss_kib();
    // A ping flood for up to 20 s, or until the gateway cuts the client off (about 7 s on
    // a quiet machine; the bound leaves room for a loaded one, where the flooder and the
    // rest of the suite share two cores).
    let flood =
        std::thread::spawn(move || flood_pings(&mut raw_upgrade(addr), Duration::from_secs(20)));
    let mut peak = baseline;
    let t0 = Instant::now();
    while !flood.is_finished() && t0.elapsed() < Duration::from_secs(22) {
        peak = peak.max(gw.rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sent, cut_at) = flood.join().unwrap();
    let report = canary.await.unwrap();
    let after = gw.rss_kib();
    eprintln!(
        "ping flood: {} MB of pings sent; gateway RSS {} KiB before, peak {} KiB, {} KiB after; \
         flooder cut off after {:?}; canary {:?}",
        sent / 1_000_000,
        baseline,
        peak,
        after,
        cut_at,
        report
    );
    assert!(
        sent > 10_000_000,
        "the flood was a flood ({sent} bytes of pings)"
    );
    assert!(
        peak < baseline + 64 * 1024,
        "RSS grew from {baseline} KiB to {peak} KiB under a ping flood"
    );
    assert!(
        cut_at.is_some(),
        "the flooder was never cut off (idle timeout 3 s, write timeout 2 s)"
    );
    report.assert_undisturbed();
    let active = within(Duration::from_secs(5), async || {
        metric_at(addr, "sgw_sessions_active").await == Some(0.0)
    })
    .await;
    assert!(active.is_some(), "sessions left open after the flood");
}

// ---- 2. a client that stops reading ----

/// A client that sends `start`, then pings whose timestamps are 60 KB strings (each echoed
/// in a pong) from a socket with a tiny receive buffer, never reading, until the gateway
/// stops taking its messages; then it goes silent. Returns the socket and how long it
/// flooded.
async fn stop_reading(
    url: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    Duration,
) {
    let addr: SocketAddr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    ws.send(Message::Text(json!({"type":"start"}).to_string().into()))
        .await
        .unwrap();
    let ping = json!({"type":"ping","timestamp":"x".repeat(60_000)}).to_string();
    let t0 = Instant::now();
    for _ in 0..2_000 {
        let send = ws.send(Message::Text(ping.clone().into()));
        match tokio::time::timeout(Duration::from_secs(2), send).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => break,
        }
    }
    (ws, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_its_admission_place_freed() {
    let riva = riva().await;
    let gw = gateway(
        &riva,
        "stops_reading",
        &[
            ("SGW_AUTH__ENABLED", "false".into()),
            ("SGW_ADMISSION__MAX_SESSIONS", "2".into()),
            ("SGW_SESSION__IDLE_TIMEOUT", "30s".into()),
            ("SGW_LIMITS__WRITE_TIMEOUT", "2s".into()),
            ("SGW_LIMITS__MAX_WRITE_BUFFER_BYTES", "262144".into()),
        ],
        None,
    )
    .await;
    let addr = gw.socket_addr();
    let canary = canary(gw.ws_url(), 12);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_stuck, flooded) = stop_reading(&gw.ws_url()).await;
    // The gateway is full (canary + the stuck client) until the stuck one is cut off.
    let freed = within(Duration::from_secs(20), async || {
        match admitted(&gw.ws_url()).await {
            Ok(()) => true,
            Err(status) => {
                assert_eq!(status, 503, "a full gateway answers 503");
                false
            }
        }
    })
    .await;
    let report = canary.await.unwrap();
    eprintln!(
        "stuck reader: the gateway stopped taking its messages after {flooded:?} (the last \
         send waited 2 s); a new session was admitted {freed:?} after that (write timeout \
         2 s); canary {report:?}"
    );
    assert!(
        freed.is_some(),
        "the stuck client kept its admission place for 20 s (write timeout 2 s)"
    );
    let cut = metric_at(
        addr,
        "sgw_sessions_total{dialect=\"v1\",outcome=\"slow_client\"}",
    )
    .await;
    assert_eq!(cut, Some(1.0), "the stuck session ended as slow_client");
    report.assert_undisturbed();
}

// ---- 3. aud and iss required when configured ----

const SECRET: &str = "hardening-secret-hardening-secret-0123";

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn claims() -> Value {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    json!({"sub": "app-1", "aud": "speech", "iss": "https://issuer.example", "exp": exp})
}

#[tokio::test]
async fn tokens_without_a_string_aud_or_iss_are_refused_when_those_are_configured() {
    let riva = riva().await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_AUTH__ENABLED", "true".into()),
        ("SGW_AUTH__HS256_SECRET", SECRET.into()),
        ("SGW_AUTH__AUDIENCE", "speech".into()),
        ("SGW_AUTH__ISSUER", "https://issuer.example".into()),
    ])
    .await;
    let good = token(claims());
    let canary = canary(format!("{}?token={good}", gw.ws_url()), 3);
    let mut shapes: Vec<(&str, Value)> = Vec::new();
    for (name, claim, value) in [
        ("no aud", "aud", None),
        ("aud: 123", "aud", Some(json!(123))),
        ("aud: null", "aud", Some(Value::Null)),
        ("aud: another service", "aud", Some(json!("billing"))),
        ("no iss", "iss", None),
        ("iss: 7", "iss", Some(json!(7))),
        ("iss: null", "iss", Some(Value::Null)),
    ] {
        let mut c = claims();
        match value {
            Some(v) => c[claim] = v,
            None => {
                c.as_object_mut().unwrap().remove(claim);
            }
        }
        shapes.push((name, c));
    }
    for (name, c) in shapes {
        let bearer = format!("Bearer {}", token(c));
        match attempt(&gw.ws_url(), &[("authorization", &bearer)]).await {
            Ok(_) => panic!("a token with {name} was accepted"),
            Err((status, headers, body)) => {
                assert_eq!(status, 401, "{name}");
                assert_eq!(body["code"], "AUTHENTICATION_FAILED", "{name}");
                let field = if name.contains("aud") { "aud" } else { "iss" };
                assert!(
                    body["message"].as_str().unwrap().contains(field),
                    "{name}: {body}"
                );
                assert!(headers.iter().any(|(k, _)| k == "www-authenticate"));
            }
        }
    }
    let bearer = format!("Bearer {good}");
    assert!(
        attempt(&gw.ws_url(), &[("authorization", &bearer)])
            .await
            .is_ok(),
        "the well-formed token is accepted"
    );
    canary.await.unwrap().assert_undisturbed();
}

// ---- 4. connection-level timeouts and caps ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_silent_connections_are_closed_at_the_header_timeout() {
    let riva = riva().await;
    let gw = gateway(
        &riva,
        "slowloris",
        &[
            ("SGW_AUTH__ENABLED", "false".into()),
            ("SGW_LIMITS__HEADER_TIMEOUT", "1s".into()),
        ],
        None,
    )
    .await;
    let addr = gw.socket_addr();
    let canary = canary(gw.ws_url(), 6);
    let results = tokio::task::spawn_blocking(move || {
        // An upgrade request trickled at one byte every 200 ms.
        let slow = std::thread::spawn(move || {
            let mut s = StdTcp::connect(addr).unwrap();
            let request = format!(
                "GET /v1/audio/stream HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nX-Pad: {}\r\n\r\n",
                "a".repeat(200)
            );
            let t0 = Instant::now();
            for b in request.bytes() {
                if s.write_all(&[b]).is_err() || t0.elapsed() > Duration::from_secs(8) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let mut probe = [0u8; 1];
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let closed = matches!(s.read(&mut probe), Ok(0) | Err(_))
                && t0.elapsed() < Duration::from_secs(8);
            (closed, t0.elapsed())
        });
        // A connection that never sends a byte.
        let mut silent = StdTcp::connect(addr).unwrap();
        let silent_closed = closed_within(&mut silent, Duration::from_secs(8));
        // A kept-alive connection that goes quiet after one request.
        let mut kept = StdTcp::connect(addr).unwrap();
        write!(kept, "GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let kept_closed = closed_within(&mut kept, Duration::from_secs(8));
        (slow.join().unwrap(), silent_closed, kept_closed)
    })
    .await
    .unwrap();
    let ((slow_closed, slow_took), silent_closed, kept_closed) = results;
    eprintln!(
        "header timeout 1 s: slowloris closed {slow_closed} after {slow_took:?}; silent \
         connection closed after {silent_closed:?}; idle kept-alive connection closed after {kept_closed:?}"
    );
    assert!(
        slow_closed,
        "a slowloris upgrade request stayed open for 8 s"
    );
    assert!(
        silent_closed.is_some(),
        "a silent connection stayed open for 8 s"
    );
    assert!(
        kept_closed.is_some(),
        "an idle kept-alive connection stayed open for 8 s"
    );
    let cut = metric_at(addr, "sgw_connections_cut_total{reason=\"header_timeout\"}").await;
    assert!(cut >= Some(2.0), "header timeouts counted: {cut:?}");
    canary.await.unwrap().assert_undisturbed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_idle_connections_exceed_the_file_limit() {
    let riva = riva().await;
    let gw = gateway(
        &riva,
        "file_limit",
        &[
            ("SGW_AUTH__ENABLED", "false".into()),
            // Idle connections stay for the whole test unless the gateway makes room.
            ("SGW_LIMITS__HEADER_TIMEOUT", "60s".into()),
        ],
        Some(256),
    )
    .await;
    let addr = gw.socket_addr();
    let canary = canary(gw.ws_url(), 8);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline_fds = gw.fds();
    // 400 connections that never send a request: more than the process's 256 descriptors.
    let idle: Vec<StdTcp> = (0..400).map(|_| StdTcp::connect(addr).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held_fds = gw.fds();
    let mut health = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let got = tokio::time::timeout(
            Duration::from_secs(2),
            sgw_testkit::http_get(addr, "/health"),
        )
        .await;
        health.push((got.map(|r| r.0).ok(), t0.elapsed()));
    }
    // A new session is told the gateway is full (not left hanging).
    let refused = tokio::time::timeout(Duration::from_secs(5), attempt(&gw.ws_url(), &[]))
        .await
        .expect("a session attempt is answered");
    drop(idle);
    let report = canary.await.unwrap();
    let after = within(Duration::from_secs(5), async || {
        admitted(&gw.ws_url()).await.is_ok()
    })
    .await;
    let log = gw.log_text();
    eprintln!(
        "open-file limit 256, 400 idle connections: gateway fds {baseline_fds} -> {held_fds}; \
         /health {health:?}; new session {:?}; canary {report:?}",
        refused
            .as_ref()
            .map(|_| 101)
            .map_err(|e| (e.0, e.2.clone()))
    );
    assert!(
        held_fds < 256,
        "the gateway kept below its file limit ({held_fds})"
    );
    assert!(
        health.iter().all(|(s, _)| *s == Some(200)),
        "/health did not answer every time: {health:?}"
    );
    match refused {
        Err((503, _, body)) => assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("connection limit"),
            "{body}"
        ),
        other => panic!(
            "a session beyond the connection limit got {:?}",
            other.map(|_| 101).map_err(|e| e.0)
        ),
    }
    assert!(
        !log.contains("Too many open files"),
        "the gateway ran out of descriptors"
    );
    assert!(
        after.is_some(),
        "sessions were admitted again once the idle connections left"
    );
    report.assert_undisturbed();
}

// ---- the risks beside them ----

#[tokio::test]
async fn admin_listener_takes_status_and_metrics_off_the_public_port() {
    let riva = riva().await;
    let gw = gateway(
        &riva,
        "admin",
        &[
            ("SGW_AUTH__ENABLED", "false".into()),
            ("SGW_ADMIN_LISTEN", "127.0.0.1:0".into()),
        ],
        None,
    )
    .await;
    let public = gw.socket_addr();
    let admin = gw.admin_addr().expect("the admin address is printed");
    for path in ["/status", "/metrics"] {
        assert_eq!(
            sgw_testkit::http_get(public, path).await.0,
            404,
            "{path} public"
        );
        assert_eq!(
            sgw_testkit::http_get(admin, path).await.0,
            200,
            "{path} admin"
        );
    }
    assert_eq!(sgw_testkit::http_get(public, "/health").await.0, 200);
    assert_eq!(sgw_testkit::http_get(admin, "/health").await.0, 200);
    assert_eq!(
        sgw_testkit::http_get(admin, "/v1/audio/stream").await.0,
        404
    );
}

#[tokio::test]
async fn sessions_per_ip_and_per_subject_are_capped_with_429() {
    let riva = riva().await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_LIMITS__MAX_SESSIONS_PER_IP", "2".into()),
    ])
    .await;
    let a = attempt(&gw.ws_url(), &[]).await.expect("first");
    let _b = attempt(&gw.ws_url(), &[]).await.expect("second");
    match attempt(&gw.ws_url(), &[]).await {
        Err((429, headers, body)) => {
            assert_eq!(body["code"], "RATE_LIMIT_EXCEEDED");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("max_sessions_per_ip")
            );
            assert!(headers.iter().any(|(k, _)| k == "retry-after"));
        }
        other => panic!(
            "third session from one address: {:?}",
            other.map(|_| 101).map_err(|e| e.0)
        ),
    }
    let mut a = Client { ws: a };
    a.end().await;
    let _ = a.drain().await;
    assert!(
        within(Duration::from_secs(5), async || attempt(&gw.ws_url(), &[])
            .await
            .is_ok())
        .await
        .is_some(),
        "a place freed by a session's end is taken again"
    );

    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_AUTH__ENABLED", "true".into()),
        ("SGW_AUTH__HS256_SECRET", SECRET.into()),
        ("SGW_LIMITS__MAX_SESSIONS_PER_SUBJECT", "1".into()),
    ])
    .await;
    let as_subject = |sub: &str| {
        let mut c = claims();
        c["sub"] = json!(sub);
        format!("Bearer {}", token(c))
    };
    let (one, two) = (as_subject("app-1"), as_subject("app-2"));
    let _first = attempt(&gw.ws_url(), &[("authorization", &one)])
        .await
        .expect("app-1");
    let refused = attempt(&gw.ws_url(), &[("authorization", &one)]).await;
    assert_eq!(
        refused.map(|_| 101).map_err(|e| e.0),
        Err(429),
        "app-1 twice"
    );
    assert!(
        attempt(&gw.ws_url(), &[("authorization", &two)])
            .await
            .is_ok(),
        "another subject is not affected"
    );
}

#[tokio::test]
async fn a_second_origin_header_is_checked_too() {
    let riva = riva().await;
    let gw = Gateway::start(&[
        ("SGW_ROUTES__DEFAULT", riva.url()),
        ("SGW_LIMITS__ALLOWED_ORIGINS", "https://app.example".into()),
    ])
    .await;
    let addr = gw.addr;
    let upgrade = |origins: &[&str]| {
        let mut req = format!(
            "GET /v1/audio/stream HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for o in origins {
            req.push_str(&format!("Origin: {o}\r\n"));
        }
        req.push_str("\r\n");
        req
    };
    for (origins, want) in [
        (vec!["https://app.example"], "101"),
        (vec!["https://app.example", "https://evil.example"], "403"),
        (vec!["https://evil.example", "https://app.example"], "403"),
    ] {
        let req = upgrade(&origins);
        let status = tokio::task::spawn_blocking(move || {
            let mut s = StdTcp::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[9..12]).to_string()
        })
        .await
        .unwrap();
        assert_eq!(status, want, "{origins:?}");
    }
}

#[tokio::test]
async fn a_client_close_is_echoed() {
    let riva = riva().await;
    let gw = Gateway::with_backends(&[riva.url()]).await;
    let mut c = gw.connect().await;
    c.start(json!({})).await;
    c.audio(&tone(200, 16_000)).await;
    c.ws.send(Message::Close(None)).await.unwrap();
    let mut echoed = false;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), c.ws.next()).await {
        match m {
            Ok(Message::Close(_)) => {
                echoed = true;
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    assert!(
        echoed,
        "the gateway answered the client's close frame with its own"
    );
}

// ---- the soak: every abuse at once, for a while, beside normal sessions ----

/// Counts of what the abusers did.
#[derive(Debug, Default)]
struct Abuse {
    ping_floods: usize,
    stuck_readers: usize,
    slowloris: usize,
    idle_connections: usize,
    bad_tokens: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_clients_soak() {
    let seconds: u64 = std::env::var("SGW_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let riva = riva().await;
    let gw = gateway(
        &riva,
        "soak",
        &[
            ("SGW_AUTH__HS256_SECRET", SECRET.into()),
            ("SGW_AUTH__AUDIENCE", "speech".into()),
            ("SGW_AUTH__ISSUER", "https://issuer.example".into()),
            ("SGW_SESSION__IDLE_TIMEOUT", "3s".into()),
            ("SGW_LIMITS__WRITE_TIMEOUT", "2s".into()),
            ("SGW_LIMITS__HEADER_TIMEOUT", "2s".into()),
            ("SGW_LIMITS__MAX_WRITE_BUFFER_BYTES", "262144".into()),
            // The abusers all come from 127.0.0.1.
            ("SGW_LIMITS__CONNECT_RATE", "0".into()),
        ],
        None,
    )
    .await;
    let addr = gw.socket_addr();
    let good = token(claims());
    let url = format!("{}?token={good}", gw.ws_url());
    // Warm up (first session, allocator arenas), then the baseline.
    canary(url.clone(), 2).await.unwrap().assert_undisturbed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss0, fds0) = (gw.rss_kib(), gw.fds());
    let until = Instant::now() + Duration::from_secs(seconds);
    let abuse = std::sync::Arc::new(std::sync::Mutex::new(Abuse::default()));

    // Normal load: three sessions at a time, 5 s each, back to back.
    let mut normal = Vec::new();
    for _ in 0..3 {
        let url = url.clone();
        normal.push(tokio::spawn(async move {
            let mut reports = Vec::new();
            while Instant::now() + Duration::from_secs(5) < until {
                reports.push(canary(url.clone(), 5).await.unwrap());
            }
            reports
        }));
    }
    let mut abusers = Vec::new();
    // Ping floods that never read their pongs, 3 s each.
    {
        let (abuse, path) = (abuse.clone(), format!("/v1/audio/stream?token={good}"));
        abusers.push(std::thread::spawn(move || {
            while Instant::now() < until {
                flood_pings(&mut raw_upgrade_to(addr, &path), Duration::from_secs(3));
                abuse.lock().unwrap().ping_floods += 1;
            }
        }));
    }
    // Slowloris requests, one byte every 100 ms, and bursts of silent connections.
    {
        let abuse = abuse.clone();
        abusers.push(std::thread::spawn(move || {
            while Instant::now() < until {
                let mut slow = StdTcp::connect(addr).unwrap();
                let idle: Vec<StdTcp> =
                    (0..50).filter_map(|_| StdTcp::connect(addr).ok()).collect();
                for b in b"GET /v1/audio/stream HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaa"
                {
                    if slow.write_all(&[*b]).is_err() || Instant::now() > until {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let mut a = abuse.lock().unwrap();
                a.slowloris += 1;
                a.idle_connections += idle.len();
            }
        }));
    }
    // Stuck readers (hold 4 s after the gateway stopped taking their messages) and tokens
    // for another audience.
    let stuck = {
        let (abuse, url) = (abuse.clone(), url.clone());
        tokio::spawn(async move {
            while Instant::now() < until {
                let (ws, _) = stop_reading(&url).await;
                tokio::time::sleep(Duration::from_secs(4)).await;
                drop(ws);
                abuse.lock().unwrap().stuck_readers += 1;
            }
        })
    };
    let tokens = {
        let (abuse, plain) = (abuse.clone(), gw.ws_url());
        tokio::spawn(async move {
            let mut c = claims();
            c["aud"] = json!("billing");
            let other = format!("Bearer {}", token(c));
            while Instant::now() < until {
                let r = attempt(&plain, &[("authorization", &other)]).await;
                assert_eq!(r.map(|_| 101).map_err(|e| e.0), Err(401));
                abuse.lock().unwrap().bad_tokens += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut peak_rss = rss0;
    let mut peak_fds = fds0;
    while Instant::now() < until {
        peak_rss = peak_rss.max(gw.rss_kib());
        peak_fds = peak_fds.max(gw.fds());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut sessions = Vec::new();
    for n in normal {
        sessions.extend(n.await.unwrap());
    }
    stuck.await.unwrap();
    tokens.await.unwrap();
    for a in abusers {
        a.join().unwrap();
    }
    // Everything the abusers held is given back.
    let settled = within(Duration::from_secs(15), async || {
        metric_at(addr, "sgw_sessions_active").await == Some(0.0)
            && metric_at(addr, "sgw_connections_open").await == Some(1.0)
            && gw.fds() <= fds0 + 1
    })
    .await;
    let (rss1, fds1) = (gw.rss_kib(), gw.fds());
    let active = metric_at(addr, "sgw_sessions_active").await;
    let open = metric_at(addr, "sgw_connections_open").await;
    let abuse = std::mem::take(&mut *abuse.lock().unwrap());
    let disturbed: Vec<&CanaryReport> = sessions
        .iter()
        .filter(|r| !(r.finals > 0 && r.errors.is_empty() && r.close == Some(1000)))
        .collect();
    let report = format!(
        "# Abusive-clients soak\n\n{seconds} s; gateway: debug build of this commit, its own \
         process; back end: the in-process Riva double.\n\n\
         | | start | peak | end |\n|---|---:|---:|---:|\n\
         | RSS (KiB) | {rss0} | {peak_rss} | {rss1} |\n\
         | open descriptors | {fds0} | {peak_fds} | {fds1} |\n\
         | live sessions | 0 | | {active:?} |\n\
         | open connections (the /metrics request itself is 1) | | | {open:?} |\n\n\
         Abuse: {abuse:?}\n\nNormal sessions: {} ({} disturbed), longest gap between \
         messages {:?}\n\nSettled after the abuse stopped: {settled:?}\n",
        sessions.len(),
        disturbed.len(),
        sessions
            .iter()
            .map(|r| r.longest_gap)
            .max()
            .unwrap_or_default(),
    );
    let dir = sgw_testkit::repo().join("target/soak");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("report.md"), &report).unwrap();
    eprintln!("{report}");
    assert!(
        disturbed.is_empty(),
        "normal sessions were disturbed: {disturbed:?}"
    );
    assert!(sessions.len() >= 3, "normal sessions ran");
    assert!(abuse.ping_floods > 0 && abuse.stuck_readers > 0 && abuse.slowloris > 0);
    assert!(
        settled.is_some(),
        "sessions, connections or descriptors leaked:\n{report}"
    );
    assert!(
        rss1 < rss0 + 48 * 1024 && peak_rss < rss0 + 128 * 1024,
        "memory did not come back:\n{report}"
    );
}
