//! Measurement tool: the CPU floor of the gateway's transport. NOT a gateway.
//!
//!     cargo build --release -p speech-gateway --example floor_relay
//!     GATEWAY_BIN=target/release/examples/floor_relay bash scripts/bench-load.sh 1000 40s 10s
//!
//! The least a relay can do for the v1 contract's happy path: accept a WebSocket, open one
//! Riva `StreamingRecognize` per session on one shared HTTP/2 connection, forward each
//! binary frame as `audio_content`, write each result as a `partial`/`final` JSON text
//! frame carrying `timestamp_ms`, and on `{"type":"end"}` half-close and close with 1000
//! once Riva ends the stream. Nothing else: no auth, admission, validation, replay buffer,
//! failover, timers, metrics or logs. Measured with the same load and sim as the gateway,
//! the difference is what the gateway's features cost (`docs/measurements.md`, session 7).
//!
//! Each half has two transports, chosen by `FLOOR_RELAY_LEAN` (a comma list):
//! - WebSocket: tungstenite (the gateway's library, with its 4 KiB read buffer), or with
//!   `ws` a hand-written handshake and framing straight on the socket (no zero-filled read
//!   buffer, one write per frame). It handles only what the load client sends: unfragmented
//!   masked frames.
//! - gRPC: tonic over hyper (the gateway's stack), or with `h2` the `h2` crate directly
//!   (5-byte gRPC message prefix, prost; no per-stream body task, no tonic codec).
//!
//! `FLOOR_RELAY_LEAN=ws,h2` is the floor of a transport rewrite that keeps tokio and h2.
//! `FLOOR_RELAY_WORDS=1` adds each result's `words` (word, start, end, confidence), as a
//! v1 client with word timestamps on gets them: the floor for the same output bytes.
//! It takes the arguments `bench-load.sh` passes to the gateway
//! (`serve --listen ADDR --backend riva://HOST:PORT`) so that `GATEWAY_BIN` can name it.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use sgw_proto::nvidia::riva::AudioEncoding;
use sgw_proto::nvidia::riva::asr::riva_speech_recognition_client::RivaSpeechRecognitionClient;
use sgw_proto::nvidia::riva::asr::{
    RecognitionConfig, StreamingRecognitionConfig, StreamingRecognizeRequest,
    StreamingRecognizeResponse, streaming_recognize_request::StreamingRequest,
};
use speech_gateway::backend::grpc::lazy_channel;
use speech_gateway::config::BackendUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

/// The gateway's WebSocket read buffer, so both read alike.
const READ_BUFFER: usize = speech_gateway::ingress::WS_READ_BUFFER;
const PATH: &str = "/nvidia.riva.asr.RivaSpeechRecognition/StreamingRecognize";

fn arg(args: &[String], name: &str) -> anyhow::Result<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "usage: floor_relay serve --listen ADDR --backend riva://HOST:PORT (missing {name})"
            )
        })
}

/// The back end's HTTP/2 connection, shared by all sessions.
#[derive(Clone)]
enum Upstream {
    Tonic(tonic::transport::Channel),
    H2(h2::client::SendRequest<Bytes>, String),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen")?;
    let backend = arg(&args, "--backend")?;
    let riva = backend
        .strip_prefix("riva://")
        .ok_or_else(|| anyhow::anyhow!("--backend must be riva://HOST:PORT"))?;
    let lean = std::env::var("FLOOR_RELAY_LEAN").unwrap_or_default();
    let lean: Vec<&str> = lean.split(',').map(str::trim).collect();
    let hand_ws = lean.contains(&"ws");
    let words = std::env::var("FLOOR_RELAY_WORDS").is_ok_and(|v| v == "1");
    let upstream = if lean.contains(&"h2") {
        Upstream::H2(connect_h2(riva).await?, riva.to_string())
    } else {
        // The gateway's own channel (nodelay, keep-alives), so the tonic half is its twin.
        let url = BackendUrl::parse(&backend).map_err(anyhow::Error::msg)?;
        Upstream::Tonic(lazy_channel(&url, Duration::from_secs(2))?)
    };
    let listener = TcpListener::bind(&listen).await?;
    eprintln!(
        "floor_relay listening on {} (WebSocket: {}, gRPC: {})",
        listener.local_addr()?,
        if hand_ws {
            "hand-written"
        } else {
            "tungstenite"
        },
        match upstream {
            Upstream::Tonic(_) => "tonic",
            Upstream::H2(..) => "h2",
        }
    );
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let _ = session(socket, hand_ws, words, upstream).await;
        });
    }
}

async fn connect_h2(riva: &str) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
    // The back end may still be starting (bench-load.sh starts both at once).
    let mut tries = 0;
    let tcp = loop {
        match TcpStream::connect(riva).await {
            Ok(tcp) => break tcp,
            Err(e) if tries == 100 => return Err(e.into()),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    tcp.set_nodelay(true)?;
    // hyper's client defaults, so both gRPC halves see the same windows.
    let (h2, connection) = h2::client::Builder::new()
        .initial_window_size(2 * 1024 * 1024)
        .initial_connection_window_size(5 * 1024 * 1024)
        .handshake::<_, Bytes>(tcp)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("floor_relay: HTTP/2 connection ended: {e}");
        }
    });
    Ok(h2)
}

fn first_request() -> StreamingRecognizeRequest {
    StreamingRecognizeRequest {
        streaming_request: Some(StreamingRequest::StreamingConfig(
            StreamingRecognitionConfig {
                config: Some(RecognitionConfig {
                    encoding: AudioEncoding::LinearPcm as i32,
                    sample_rate_hertz: 16_000,
                    language_code: "en-US".into(),
                    max_alternatives: 1,
                    audio_channel_count: 1,
                    ..Default::default()
                }),
                interim_results: true,
            },
        )),
        ..Default::default()
    }
}

fn audio_request(frame: Bytes) -> StreamingRecognizeRequest {
    StreamingRecognizeRequest {
        streaming_request: Some(StreamingRequest::AudioContent(frame)),
        ..Default::default()
    }
}

/// One session: frames in, results out, until Riva ends the stream or the client goes.
async fn session(
    socket: TcpStream,
    hand_ws: bool,
    words: bool,
    upstream: Upstream,
) -> anyhow::Result<()> {
    let mut client = if hand_ws {
        Client::hand(socket).await?
    } else {
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let ws = tokio_tungstenite::accept_async_with_config(socket, Some(config)).await?;
        Client::Tungstenite(Box::new(ws))
    };
    let mut riva = Riva::open(upstream).await?;
    let mut audio_open = true;
    loop {
        tokio::select! {
            msg = client.next(), if audio_open => match msg? {
                Some(In::Audio(frame)) => riva.send(frame)?,
                Some(In::End) => {
                    riva.finish()?;
                    audio_open = false;
                }
                Some(In::Ping(payload)) => client.pong(&payload).await?,
                Some(In::Other) => {}
                None => return Ok(()),
            },
            response = riva.next() => match response? {
                Some(response) => {
                    for result in response.results {
                        let alt = result.alternatives.first();
                        let mut json = serde_json::json!({
                            "type": if result.is_final { "final" } else { "partial" },
                            "text": alt.map(|a| a.transcript.trim()).unwrap_or(""),
                            "confidence": alt.map(|a| a.confidence).unwrap_or(0.0),
                            "timestamp_ms": (f64::from(result.audio_processed) * 1000.0).round() as u64,
                        });
                        if words {
                            json["words"] = alt
                                .map(|a| {
                                    a.words
                                        .iter()
                                        .map(|w| {
                                            serde_json::json!({
                                                "word": w.word,
                                                "start": w.start_time as f64 / 1000.0,
                                                "end": w.end_time as f64 / 1000.0,
                                                "confidence": w.confidence,
                                            })
                                        })
                                        .collect()
                                })
                                .unwrap_or_default();
                        }
                        client.send_text(json.to_string()).await?;
                    }
                }
                None => return client.close().await,
            },
        }
    }
}

/// What the relay makes of a client frame.
enum In {
    Audio(Bytes),
    End,
    /// A ping the hand-written side must answer (tungstenite answers its own).
    Ping(Bytes),
    Other,
}

fn is_end(text: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(text)
        .ok()
        .is_some_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("end"))
}

enum Client {
    Tungstenite(Box<WebSocketStream<TcpStream>>),
    /// The socket and what has been read from it but not yet framed.
    Hand(TcpStream, BytesMut),
}

impl Client {
    /// Reads the HTTP upgrade request and answers 101.
    async fn hand(mut socket: TcpStream) -> anyhow::Result<Self> {
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        let end = loop {
            if socket.read_buf(&mut buf).await? == 0 {
                anyhow::bail!("closed during the handshake");
            }
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            anyhow::ensure!(buf.len() < 16 * 1024, "handshake too long");
        };
        let head = std::str::from_utf8(&buf[..end])?;
        let key = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim())
            })
            .ok_or_else(|| anyhow::anyhow!("not a WebSocket upgrade"))?;
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let reply = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        socket.write_all(reply.as_bytes()).await?;
        buf.advance(end);
        Ok(Client::Hand(socket, buf))
    }

    /// The next frame (cancel-safe: partial input stays in the buffer); `None` when closed.
    async fn next(&mut self) -> anyhow::Result<Option<In>> {
        match self {
            Client::Tungstenite(ws) => Ok(match ws.next().await.transpose()? {
                Some(Message::Binary(frame)) => Some(In::Audio(frame)),
                Some(Message::Text(text)) if is_end(text.as_bytes()) => Some(In::End),
                Some(Message::Close(_)) | None => None,
                Some(_) => Some(In::Other),
            }),
            Client::Hand(socket, inbox) => loop {
                if let Some((opcode, payload)) = take_frame(inbox)? {
                    return Ok(match opcode {
                        0x2 => Some(In::Audio(payload.freeze())),
                        0x1 if is_end(&payload) => Some(In::End),
                        0x8 => None,
                        0x9 => Some(In::Ping(payload.freeze())),
                        _ => Some(In::Other),
                    });
                }
                if socket.read_buf(inbox).await? == 0 {
                    return Ok(None);
                }
            },
        }
    }

    async fn send_text(&mut self, text: String) -> anyhow::Result<()> {
        match self {
            Client::Tungstenite(ws) => ws.send(Message::text(text)).await?,
            Client::Hand(socket, _) => write_frame(socket, 0x1, text.as_bytes()).await?,
        }
        Ok(())
    }

    async fn pong(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        if let Client::Hand(socket, _) = self {
            write_frame(socket, 0xA, payload).await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> anyhow::Result<()> {
        match self {
            Client::Tungstenite(ws) => {
                let close = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "end of session".into(),
                };
                WebSocketStream::close(&mut **ws, Some(close)).await?;
            }
            Client::Hand(socket, _) => {
                let mut payload = 1000u16.to_be_bytes().to_vec();
                payload.extend_from_slice(b"end of session");
                write_frame(socket, 0x8, &payload).await?;
            }
        }
        Ok(())
    }
}

/// Takes one complete client frame (opcode, unmasked payload) off the front of `buf`.
fn take_frame(buf: &mut BytesMut) -> anyhow::Result<Option<(u8, BytesMut)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    anyhow::ensure!(b0 & 0x80 != 0, "fragmented frames are not handled");
    anyhow::ensure!(b1 & 0x80 != 0, "client frames must be masked");
    let (len, header) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            (usize::try_from(u64::from_be_bytes(n))?, 10)
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    anyhow::ensure!(len <= 1 << 20, "frame too long");
    if buf.len() < header + 4 + len {
        return Ok(None);
    }
    let mask = [
        buf[header],
        buf[header + 1],
        buf[header + 2],
        buf[header + 3],
    ];
    buf.advance(header + 4);
    let mut payload = buf.split_to(len);
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    Ok(Some((b0 & 0x0f, payload)))
}

/// Writes one unmasked server frame in a single write.
async fn write_frame(socket: &mut TcpStream, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    socket.write_all(&out).await
}

/// One Riva stream.
enum Riva {
    Tonic {
        audio: Option<tokio::sync::mpsc::UnboundedSender<Bytes>>,
        results: tonic::Streaming<StreamingRecognizeResponse>,
    },
    H2 {
        audio: h2::SendStream<Bytes>,
        results: h2::RecvStream,
        /// Response bytes not yet forming a whole gRPC message.
        pending: BytesMut,
    },
}

impl Riva {
    async fn open(upstream: Upstream) -> anyhow::Result<Self> {
        match upstream {
            Upstream::Tonic(channel) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
                let audio =
                    tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(audio_request);
                let requests = futures::stream::iter([first_request()]).chain(audio);
                let response = RivaSpeechRecognitionClient::new(channel)
                    .streaming_recognize(requests)
                    .await?;
                Ok(Riva::Tonic {
                    audio: Some(tx),
                    results: response.into_inner(),
                })
            }
            Upstream::H2(h2, authority) => {
                let request = http::Request::post(format!("http://{authority}{PATH}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())?;
                let mut h2 = h2.ready().await?;
                let (response, mut audio) = h2.send_request(request, false)?;
                audio.send_data(grpc_message(&first_request()), false)?;
                let results = response.await?.into_body();
                Ok(Riva::H2 {
                    audio,
                    results,
                    pending: BytesMut::new(),
                })
            }
        }
    }

    fn send(&mut self, frame: Bytes) -> anyhow::Result<()> {
        match self {
            Riva::Tonic { audio, .. } => {
                if let Some(tx) = audio {
                    let _ = tx.send(frame);
                }
            }
            Riva::H2 { audio, .. } => {
                audio.send_data(grpc_message(&audio_request(frame)), false)?
            }
        }
        Ok(())
    }

    /// Half-closes the audio side: Riva flushes, then ends the stream.
    fn finish(&mut self) -> anyhow::Result<()> {
        match self {
            Riva::Tonic { audio, .. } => *audio = None,
            Riva::H2 { audio, .. } => audio.send_data(Bytes::new(), true)?,
        }
        Ok(())
    }

    /// The next response (cancel-safe); `None` when Riva ends the stream.
    async fn next(&mut self) -> anyhow::Result<Option<StreamingRecognizeResponse>> {
        match self {
            Riva::Tonic { results, .. } => Ok(results.message().await?),
            Riva::H2 {
                results, pending, ..
            } => loop {
                if pending.len() >= 5 {
                    let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]]);
                    let len = len as usize;
                    if pending.len() >= 5 + len {
                        pending.advance(5);
                        return Ok(Some(StreamingRecognizeResponse::decode(
                            pending.split_to(len),
                        )?));
                    }
                }
                match results.data().await {
                    Some(chunk) => {
                        let chunk = chunk?;
                        let _ = results.flow_control().release_capacity(chunk.len());
                        pending.extend_from_slice(&chunk);
                    }
                    None => return Ok(None),
                }
            },
        }
    }
}

fn grpc_message(request: &StreamingRecognizeRequest) -> Bytes {
    let len = request.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(len as u32);
    request.encode(&mut out).expect("capacity reserved");
    out.freeze()
}
