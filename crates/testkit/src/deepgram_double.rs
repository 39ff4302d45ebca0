//! A scripted Deepgram streaming server for tests: `GET /v1/listen` upgraded to a
//! WebSocket on 127.0.0.1:0, in the message shapes of Deepgram's live contract. It records
//! each upgrade's query and `Authorization`, every audio byte and every control message
//! (`KeepAlive`, `Finalize`, `CloseStream`). Modes:
//! - `Scripted`: every socket is handed to the test as a [`DoubleSocket`], which sees what
//!   arrives and decides what to answer (any `Results`, any close code, at any point);
//! - `Auto`: answers by itself like the Riva double's auto mode — an interim result per
//!   audio message, a final every `final_every_ms` of audio, one at `Finalize`, and at
//!   `CloseStream` the last final, `Metadata` and close 1000. A final's words tile the audio
//!   since the previous one in 100 ms words (`w<k>`, k counted from the stream start);
//! - `Refuse(status)`: every upgrade is refused with that HTTP status and Deepgram's error
//!   body.
//!
//! With a key ([`DeepgramDouble::start_with_key`]), an upgrade without
//! `Authorization: Token KEY` is refused with 401, as Deepgram does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Scripted,
    Auto { final_every_ms: u64 },
    Refuse(u16),
}

/// What arrived on a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Audio(Bytes),
    /// A text message's `type` (`KeepAlive`, `Finalize`, `CloseStream`, or anything else).
    Control(String),
    /// The client closed (its close code) or the connection ended (`None`).
    Closed(Option<u16>),
}

/// One upgraded socket, as the test sees it.
pub struct DoubleSocket {
    /// The upgrade's query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The upgrade's `Authorization` header.
    pub authorization: Option<String>,
    pub inbound: mpsc::UnboundedReceiver<Inbound>,
    out: mpsc::UnboundedSender<Message>,
}

impl DoubleSocket {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of query parameter `key`.
    pub fn params(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Sends one JSON message (e.g. [`results`]).
    pub fn send(&self, message: Value) {
        let _ = self.out.send(Message::Text(message.to_string().into()));
    }

    /// Closes the socket with `code` and `reason`.
    pub fn close(&self, code: u16, reason: &str) {
        let _ = self.out.send(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        })));
    }

    /// The next inbound item within 10 s.
    pub async fn next(&mut self) -> Inbound {
        tokio::time::timeout(Duration::from_secs(10), self.inbound.recv())
            .await
            .expect("the gateway sent something within 10 s")
            .unwrap_or(Inbound::Closed(None))
    }

    /// Reads until at least `bytes` of audio arrived (control messages are skipped);
    /// returns the audio.
    pub async fn audio_at_least(&mut self, bytes: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < bytes {
            match self.next().await {
                Inbound::Audio(b) => got.extend_from_slice(&b),
                Inbound::Control(_) => {}
                other => panic!("expected audio, got {other:?} after {} bytes", got.len()),
            }
        }
        got
    }

    /// Reads until the control message `kind`; returns the audio that came before it.
    pub async fn until_control(&mut self, kind: &str) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            match self.next().await {
                Inbound::Audio(b) => got.extend_from_slice(&b),
                Inbound::Control(k) if k == kind => return got,
                Inbound::Control(_) => {}
                other => panic!("expected audio or {kind}, got {other:?}"),
            }
        }
    }
}

/// A `Results` message: `words` as (word, start s, end s), times in seconds of the stream.
pub fn results(is_final: bool, start: f64, duration: f64, words: &[(&str, f64, f64)]) -> Value {
    let transcript = words.iter().map(|w| w.0).collect::<Vec<_>>().join(" ");
    json!({
        "type": "Results",
        "channel_index": [0, 1],
        "duration": duration,
        "start": start,
        "is_final": is_final,
        "speech_final": is_final,
        "channel": {"alternatives": [{
            "transcript": transcript,
            "confidence": 0.875,
            "words": words.iter().map(|(w, s, e)| json!({
                "word": w, "punctuated_word": w, "start": s, "end": e, "confidence": 0.75,
            })).collect::<Vec<_>>(),
        }]},
        "metadata": {"request_id": "double"},
    })
}

/// Counters kept in every mode.
#[derive(Default, Debug)]
pub struct Stats {
    /// Upgrades accepted.
    pub sockets_opened: AtomicUsize,
    /// Upgrades refused (mode `Refuse`, or a wrong key).
    pub refused: AtomicUsize,
    pub audio_bytes: AtomicU64,
    pub keepalives: AtomicUsize,
    pub finalizes: AtomicUsize,
    pub close_streams: AtomicUsize,
}

pub struct DeepgramDouble {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    sockets: Mutex<mpsc::UnboundedReceiver<DoubleSocket>>,
    stop: Option<oneshot::Sender<()>>,
}

impl DeepgramDouble {
    pub async fn start(mode: Mode) -> DeepgramDouble {
        Self::start_with_key(mode, None).await
    }

    /// A double that refuses (401) upgrades without `Authorization: Token KEY`.
    pub async fn start_with_key(mode: Mode, key: Option<&str>) -> DeepgramDouble {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound address");
        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let expected = key.map(|k| format!("Token {k}"));
        let st = stats.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        tokio::spawn(serve_socket(tcp, mode, expected.clone(), tx.clone(), st.clone()));
                    }
                }
            }
        });
        DeepgramDouble {
            addr,
            stats,
            sockets: Mutex::new(rx),
            stop: Some(stop),
        }
    }

    /// The back-end URL of this double (`deepgram://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("deepgram://{}", self.addr)
    }

    /// The next socket the gateway opens (scripted mode).
    pub async fn next_socket(&self) -> DoubleSocket {
        tokio::time::timeout(Duration::from_secs(10), self.sockets.lock().await.recv())
            .await
            .expect("the gateway opened a socket in time")
            .expect("double alive")
    }

    /// Stops accepting (open sockets go on).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for DeepgramDouble {
    fn drop(&mut self) {
        self.stop();
    }
}

fn refusal(status: u16, code: &str) -> ErrorResponse {
    let body =
        json!({"err_code": code, "err_msg": "refused by the double", "request_id": "double"});
    let mut resp = ErrorResponse::new(Some(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(status).expect("a status code");
    resp
}

/// What the upgrade carried: its query and its `Authorization`.
type Seen = (Vec<(String, String)>, Option<String>);

async fn serve_socket(
    tcp: tokio::net::TcpStream,
    mode: Mode,
    expected: Option<String>,
    sockets: mpsc::UnboundedSender<DoubleSocket>,
    stats: Arc<Stats>,
) {
    let seen: Arc<std::sync::Mutex<Seen>> = Default::default();
    let s = seen.clone();
    let st = stats.clone();
    // The error type is tungstenite's (an HTTP response), fixed by its callback trait.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| {
        let query: Vec<(String, String)> =
            serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let refused = match mode {
            Mode::Refuse(status) => Some(refusal(status, "REFUSED")),
            _ if req.uri().path() != "/v1/listen" => Some(refusal(404, "NOT_FOUND")),
            _ if expected.is_some() && auth != expected => Some(refusal(401, "INVALID_AUTH")),
            _ => None,
        };
        *s.lock().unwrap() = (query, auth);
        match refused {
            Some(r) => {
                st.refused.fetch_add(1, Ordering::Relaxed);
                Err(r)
            }
            None => Ok(resp),
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    stats.sockets_opened.fetch_add(1, Ordering::Relaxed);
    let (query, authorization) = std::mem::take(&mut *seen.lock().unwrap());
    let (mut sink, mut source) = ws.split();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
    // Writer: until a close is sent or every sender is gone.
    tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
    });
    // Reader: counts and forwards.
    let st = stats.clone();
    tokio::spawn(async move {
        while let Some(m) = source.next().await {
            let item = match m {
                Ok(Message::Binary(b)) => {
                    st.audio_bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                    Inbound::Audio(b)
                }
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    let kind = v["type"].as_str().unwrap_or("").to_string();
                    match kind.as_str() {
                        "KeepAlive" => st.keepalives.fetch_add(1, Ordering::Relaxed),
                        "Finalize" => st.finalizes.fetch_add(1, Ordering::Relaxed),
                        "CloseStream" => st.close_streams.fetch_add(1, Ordering::Relaxed),
                        _ => 0,
                    };
                    Inbound::Control(kind)
                }
                Ok(Message::Close(f)) => {
                    let _ = in_tx.send(Inbound::Closed(f.map(|f| u16::from(f.code))));
                    return;
                }
                Ok(_) => continue,
                Err(_) => break,
            };
            if in_tx.send(item).is_err() {
                return;
            }
        }
        let _ = in_tx.send(Inbound::Closed(None));
    });
    let socket = DoubleSocket {
        query,
        authorization,
        inbound: in_rx,
        out: out_tx,
    };
    match mode {
        Mode::Scripted => {
            let _ = sockets.send(socket);
        }
        Mode::Auto { final_every_ms } => {
            tokio::spawn(auto_answer(socket, final_every_ms));
        }
        Mode::Refuse(_) => unreachable!("refused before the upgrade"),
    }
}

/// A final over `[from_ms, to_ms)` in 100 ms words `w<k>`.
fn tiled_final(from_ms: u64, to_ms: u64) -> Value {
    let words: Vec<(String, f64, f64)> = (from_ms / 100..to_ms.div_ceil(100))
        .map(|k| {
            (
                format!("w{k}"),
                (k * 100) as f64 / 1000.0,
                ((k * 100 + 100).min(to_ms)) as f64 / 1000.0,
            )
        })
        .collect();
    let refs: Vec<(&str, f64, f64)> = words.iter().map(|(w, s, e)| (w.as_str(), *s, *e)).collect();
    results(
        true,
        from_ms as f64 / 1000.0,
        (to_ms - from_ms) as f64 / 1000.0,
        &refs,
    )
}

async fn auto_answer(mut s: DoubleSocket, final_every_ms: u64) {
    let rate: u64 = s
        .param("sample_rate")
        .and_then(|r| r.parse().ok())
        .unwrap_or(16_000);
    let mut samples = 0u64;
    let mut last_final_ms = 0u64;
    while let Some(item) = s.inbound.recv().await {
        let ms = samples * 1000 / rate;
        match item {
            Inbound::Audio(a) => {
                samples += a.len() as u64 / 2;
                let ms = samples * 1000 / rate;
                if ms - last_final_ms >= final_every_ms {
                    s.send(tiled_final(last_final_ms, ms));
                    last_final_ms = ms;
                } else {
                    let start = last_final_ms as f64 / 1000.0;
                    let duration = (ms - last_final_ms) as f64 / 1000.0;
                    s.send(results(
                        false,
                        start,
                        duration,
                        &[("w", start, start + duration)],
                    ));
                }
            }
            Inbound::Control(kind) if kind == "Finalize" || kind == "CloseStream" => {
                if ms > last_final_ms {
                    let mut f = tiled_final(last_final_ms, ms);
                    f["from_finalize"] = Value::Bool(kind == "Finalize");
                    s.send(f);
                    last_final_ms = ms;
                }
                if kind == "CloseStream" {
                    s.send(json!({"type": "Metadata", "request_id": "double",
                                  "duration": ms as f64 / 1000.0, "channels": 1}));
                    s.close(1000, "");
                    return;
                }
            }
            Inbound::Control(_) => {}
            Inbound::Closed(_) => return,
        }
    }
}
