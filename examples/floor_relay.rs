//! Measurement tool: the cost floor of the gateway's libraries. NOT a gateway.
//!
//!     cargo build --release --example floor_relay
//!     GATEWAY_BIN=target/release/examples/floor_relay bash scripts/bench-load.sh 1000 40s 10s
//!
//! The least a relay built on the gateway's own stack (tokio, tungstenite, tonic/hyper/h2,
//! prost, serde_json) can do for the v1 contract's happy path: accept a WebSocket, open one
//! Riva `StreamingRecognize` per session on one shared HTTP/2 connection, forward each
//! binary frame as `audio_content`, write each result as a `partial`/`final` JSON text
//! frame carrying `timestamp_ms`, and on `{"type":"end"}` half-close and close with 1000
//! once Riva ends the stream. Nothing else: no auth, admission, validation, replay buffer,
//! failover, timers, metrics or logs. Its CPU per session, measured with the same load and
//! sim as the gateway, is what the gateway's features cost on top of the libraries
//! (`docs/measurements.md`, session 7).
//!
//! It takes the arguments `bench-load.sh` passes to the gateway
//! (`serve --listen ADDR --backend riva://HOST:PORT`) so that `GATEWAY_BIN` can name it.

use futures::{SinkExt, StreamExt};
use speech_gateway::backend::proto::nvidia::riva::AudioEncoding;
use speech_gateway::backend::proto::nvidia::riva::asr::riva_speech_recognition_client::RivaSpeechRecognitionClient;
use speech_gateway::backend::proto::nvidia::riva::asr::{
    RecognitionConfig, StreamingRecognitionConfig, StreamingRecognizeRequest,
    StreamingRecognizeResponse, streaming_recognize_request::StreamingRequest,
};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tonic::transport::{Channel, Endpoint};

/// The gateway's WebSocket read buffer (`ingress::WS_READ_BUFFER`), so both read alike.
const READ_BUFFER: usize = 4 * 1024;

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen")?;
    let backend = arg(&args, "--backend")?;
    let riva = backend
        .strip_prefix("riva://")
        .ok_or_else(|| anyhow::anyhow!("--backend must be riva://HOST:PORT"))?;
    let channel = Endpoint::from_shared(format!("http://{riva}"))?.connect_lazy();
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("floor_relay listening on {}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let channel = channel.clone();
        tokio::spawn(async move {
            let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
            if let Ok(ws) = tokio_tungstenite::accept_async_with_config(socket, Some(config)).await
            {
                relay(ws, channel).await;
            }
        });
    }
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

/// One session: frames in, results out, until Riva ends the stream or the client goes.
async fn relay(mut ws: WebSocketStream<TcpStream>, channel: Channel) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<bytes::Bytes>();
    let audio = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|frame| {
        StreamingRecognizeRequest {
            streaming_request: Some(StreamingRequest::AudioContent(frame)),
            ..Default::default()
        }
    });
    let requests = futures::stream::iter([first_request()]).chain(audio);
    let mut client = RivaSpeechRecognitionClient::new(channel);
    let Ok(response) = client.streaming_recognize(requests).await else {
        return;
    };
    let mut results = response.into_inner();
    let mut audio_tx = Some(tx);
    loop {
        tokio::select! {
            msg = ws.next(), if audio_tx.is_some() => match msg {
                Some(Ok(Message::Binary(frame))) => {
                    if let Some(tx) = &audio_tx {
                        let _ = tx.send(frame);
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    let kind = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
                    if kind.as_deref() == Some("end") {
                        audio_tx = None; // half-close: Riva flushes, then ends the stream
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            r = results.message() => match r {
                Ok(Some(response)) => {
                    if write_results(&mut ws, response).await.is_err() {
                        return;
                    }
                }
                _ => {
                    let close = CloseFrame { code: CloseCode::Normal, reason: "end of session".into() };
                    let _ = ws.close(Some(close)).await;
                    return;
                }
            },
        }
    }
}

async fn write_results(
    ws: &mut WebSocketStream<TcpStream>,
    response: StreamingRecognizeResponse,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for result in response.results {
        let alt = result.alternatives.first();
        let json = serde_json::json!({
            "type": if result.is_final { "final" } else { "partial" },
            "text": alt.map(|a| a.transcript.trim()).unwrap_or(""),
            "confidence": alt.map(|a| a.confidence).unwrap_or(0.0),
            "timestamp_ms": (f64::from(result.audio_processed) * 1000.0).round() as u64,
        });
        ws.send(Message::text(json.to_string())).await?;
    }
    Ok(())
}
