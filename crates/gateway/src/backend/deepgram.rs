//! Deepgram streaming adapter: `GET /v1/listen` upgraded to a WebSocket, one socket per
//! back-end stream, towards Deepgram's cloud (`deepgrams://api.deepgram.com`) or any server
//! of the same contract — another gateway's Deepgram dialect included.
//!
//! - The session's settings become the query (`encoding=linear16`, `sample_rate`,
//!   `channels=1`, `language`, `punctuate`, …); the URL's own parameters (`model=nova-3`)
//!   go along and win over derived ones. Interim results are always asked for: they are the
//!   stream's heartbeat (stall detection); the session drops partials the client did not
//!   ask for.
//! - The key (`Authorization: Token KEY`) is read once from its file; it is never logged and
//!   never part of an error message.
//! - Audio goes up as binary messages. When the session's audio ends (its `end`, or a
//!   finalize), `Finalize` then `CloseStream` go up and the results keep coming until the
//!   server closes. When no audio was sent for `deepgram_backend.keepalive`, a `KeepAlive`
//!   goes up (the server closes a socket that hears nothing for 10 s).
//! - `Results` become [`TranscriptEvent`]s (`is_final` → final, else partial; times are
//!   seconds of the stream, made milliseconds); `Metadata`, empty results and any other
//!   message prove the stream alive ([`TranscriptEvent::progress`]).
//! - Failures are classified here ([`handshake_error`], [`close_error`]): a refused
//!   connection, 429, 5xx or a close other than 1000 may succeed elsewhere; 401/403 (the
//!   key) will not; 400 refuses the session's own settings.
//! - Health: a TCP (and TLS) handshake within `health.timeout`. Deepgram has no health
//!   endpoint a key-less probe may call, and a WebSocket probe every few seconds would open
//!   a session upstream each time (a cloud request, another gateway's admission place); the
//!   key and the model are proven by the sessions themselves, whose 401s open the breaker.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{
    AudioStream, BackendError, BackendErrorKind, EventStream, Health, RecognitionParams,
    SpeechBackend, StreamWord, TranscriptEvent,
};
use crate::config::{BackendUrl, DeepgramBackendSettings};
use crate::error::ErrorClass;
use crate::security::files;

/// Events buffered between the socket task and the session.
const EVENT_QUEUE: usize = 64;
/// Longest piece of a server's diagnostic (close reason, error code) kept in a message.
const MAX_DIAGNOSTIC: usize = 200;
/// Longest one message to the server may wait for the socket: a server that stops reading
/// fails the stream instead of holding its task (and socket) forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// TLS towards a `deepgrams://` back end.
struct Tls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

/// A Deepgram streaming endpoint.
pub struct DeepgramBackend {
    name: String,
    host: String,
    port: u16,
    /// `ws://HOST:PORT/v1/listen` or `wss://…`, without the query.
    endpoint: String,
    tls: Option<Tls>,
    /// `Token KEY`, marked sensitive; `None`: no key configured.
    authorization: Option<HeaderValue>,
    /// The URL's own query parameters, passed upstream as written.
    params: Vec<(String, String)>,
    settings: DeepgramBackendSettings,
}

fn internal(message: String) -> BackendError {
    BackendError::new(BackendErrorKind::Unavailable, ErrorClass::Internal, message)
}

impl DeepgramBackend {
    /// Reads the key file and the TLS files now, so that a bad one stops start-up with its
    /// name (never its content).
    pub fn new(url: &BackendUrl, settings: &DeepgramBackendSettings) -> Result<Self, BackendError> {
        let key_file = url.key_file.as_ref().or(settings.key_file.as_ref());
        let authorization = key_file
            .map(|f| authorization(f))
            .transpose()
            .map_err(|e| internal(format!("the API key of {}: {e}", url.url)))?;
        let tls = url
            .tls
            .then(|| client_tls(url))
            .transpose()
            .map_err(|e| internal(format!("TLS settings of {}: {e}", url.url)))?;
        let host = if url.host.contains(':') {
            format!("[{}]", url.host)
        } else {
            url.host.clone()
        };
        let scheme = if url.tls { "wss" } else { "ws" };
        Ok(DeepgramBackend {
            name: url.url.clone(),
            host: url.host.clone(),
            port: url.port,
            endpoint: format!("{scheme}://{host}:{}/v1/listen", url.port),
            tls,
            authorization,
            params: url.params.clone(),
            settings: settings.clone(),
        })
    }

    fn request(&self, p: &RecognitionParams) -> Result<Request, BackendError> {
        let uri = format!("{}?{}", self.endpoint, query(p, &self.params));
        let mut request = uri
            .into_client_request()
            .map_err(|e| internal(format!("invalid request URI for {}: {e}", self.name)))?;
        if let Some(auth) = &self.authorization {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::header::AUTHORIZATION,
                auth.clone(),
            );
        }
        Ok(request)
    }

    /// TCP, then TLS for `deepgrams://`.
    async fn transport(&self) -> Result<MaybeTlsStream<TcpStream>, BackendError> {
        let unavailable = |what: &str, e: std::io::Error| {
            BackendError::new(
                BackendErrorKind::Unavailable,
                ErrorClass::UpstreamRetryable,
                format!("{what} failed: {e}"),
            )
        };
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| unavailable("connect", e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(MaybeTlsStream::Plain(tcp)),
            Some(tls) => tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(tls.server_name.clone(), tcp)
                .await
                .map(MaybeTlsStream::Rustls)
                .map_err(|e| unavailable("TLS handshake", e)),
        }
    }

    /// Connects and upgrades within `deepgram_backend.connect_timeout`.
    async fn connect(&self, request: Request) -> Result<Socket, BackendError> {
        let timeout = self.settings.connect_timeout;
        let attempt = async {
            let stream = self.transport().await?;
            tokio_tungstenite::client_async_with_config(request, stream, None)
                .await
                .map(|(ws, _)| ws)
                .map_err(handshake_error)
        };
        tokio::time::timeout(timeout, attempt).await.map_err(|_| {
            BackendError::new(
                BackendErrorKind::Timeout,
                ErrorClass::UpstreamRetryable,
                format!("no WebSocket upgrade within {timeout:?}"),
            )
        })?
    }
}

/// `Token KEY` from the first line of `file`.
fn authorization(file: &Path) -> Result<HeaderValue, files::FileError> {
    let bad = |problem: &str| files::FileError {
        file: file.to_path_buf(),
        problem: problem.to_string(),
    };
    let bytes = files::read(file)?;
    let text = String::from_utf8(bytes).map_err(|_| bad("is not UTF-8 text"))?;
    let key = text.lines().next().unwrap_or("").trim();
    if key.is_empty() {
        return Err(bad("holds no API key"));
    }
    let mut value = HeaderValue::from_str(&format!("Token {key}"))
        .map_err(|_| bad("holds characters an HTTP header cannot carry"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The TLS client configuration: the URL's (or `[backend_tls]`'s) CA bundle, else the
/// system's roots; its client certificate, if any; its server name, else the host.
fn client_tls(url: &BackendUrl) -> Result<Tls, files::FileError> {
    let f = &url.tls_files;
    // A WebSocket upgrade is HTTP/1.1.
    let config = files::backend_http1_config(f)?;
    let name = f.server_name.clone().unwrap_or_else(|| url.host.clone());
    let server_name = ServerName::try_from(name.clone()).map_err(|_| files::FileError {
        file: Default::default(),
        problem: format!("`{name}` is not a valid TLS server name"),
    })?;
    Ok(Tls {
        config: Arc::new(config),
        server_name,
    })
}

/// The `/v1/listen` query for a session: what its settings ask, then the URL's own
/// parameters, which replace derived ones of the same name.
pub fn query(p: &RecognitionParams, url_params: &[(String, String)]) -> String {
    let mut derived: Vec<(&str, String)> = vec![
        ("encoding", "linear16".into()),
        ("sample_rate", p.sample_rate_hz.to_string()),
        ("channels", "1".into()),
        // Always: interim results are the stream's heartbeat (stall detection).
        ("interim_results", "true".into()),
    ];
    if !p.language.eq_ignore_ascii_case("auto") {
        derived.push(("language", p.language.clone()));
    }
    if p.punctuate {
        derived.push(("punctuate", "true".into()));
    }
    if p.profanity_filter {
        derived.push(("profanity_filter", "true".into()));
    }
    if p.diarize {
        derived.push(("diarize", "true".into()));
    }
    if let Some(ms) = p.endpointing_ms {
        derived.push(("endpointing", ms.to_string()));
    }
    // `keyterm` (Nova-3's phrase hints, boost-free): `keywords` is refused by Nova-3.
    for (phrase, _) in &p.phrases {
        derived.push(("keyterm", phrase.clone()));
    }
    derived.retain(|(k, _)| !url_params.iter().any(|(u, _)| u == k));
    let mut q = serde_urlencoded::to_string(&derived).expect("pairs of strings encode");
    for (k, v) in url_params {
        q.push('&');
        q.push_str(k);
        q.push('=');
        q.push_str(v);
    }
    q
}

fn capped(s: &str) -> String {
    s.chars().take(MAX_DIAGNOSTIC).collect()
}

/// Classifies a failed upgrade: the HTTP status of a refusal, else the transport.
pub fn handshake_error(e: WsError) -> BackendError {
    use BackendErrorKind as K;
    use ErrorClass as C;
    match e {
        WsError::Http(resp) => {
            let status = resp.status().as_u16();
            let (kind, class) = match status {
                // The session's own settings (language, model, …) were refused.
                400 => (K::Rejected, C::Client),
                408 | 429 => (K::Unavailable, C::UpstreamRetryable),
                500..=599 => (K::ServerError, C::UpstreamRetryable),
                // 401/403: the key; 402: the account; 404: not a Deepgram server; others.
                _ => (K::Rejected, C::UpstreamFatal),
            };
            // Deepgram's refusals carry `err_code` (INVALID_AUTH, …): short and safe.
            let code = resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                .and_then(|v| v["err_code"].as_str().map(capped));
            let message = match code {
                Some(code) => format!("upgrade refused: HTTP {status} {code}"),
                None => format!("upgrade refused: HTTP {status}"),
            };
            BackendError::new(kind, class, message)
        }
        WsError::Io(e) => BackendError::new(
            K::Unavailable,
            C::UpstreamRetryable,
            format!("connection failed: {e}"),
        ),
        other => BackendError::new(
            K::Protocol,
            C::UpstreamRetryable,
            format!("upgrade failed: {}", capped(&other.to_string())),
        ),
    }
}

/// Classifies the server's close: `None` for a normal end (1000, or no code). `error`: the
/// description of an `Error` message that came before it, if any.
pub fn close_error(frame: Option<&CloseFrame>, error: Option<&str>) -> Option<BackendError> {
    use BackendErrorKind as K;
    use ErrorClass as C;
    let frame = frame?;
    let code = u16::from(frame.code);
    let (kind, class) = match code {
        1000 => return None,
        // The server could not take what it was sent: another try sends the same.
        1002 | 1003 | 1007 | 1009 | 1010 => (K::Protocol, C::UpstreamFatal),
        // 1011: a server error (Deepgram's NET-0000, NET-0001); 1012-1014: restarting,
        // overloaded, a bad gateway; 1001: going away.
        1011..=1014 => (K::ServerError, C::UpstreamRetryable),
        _ => (K::Unavailable, C::UpstreamRetryable),
    };
    let mut message = format!("upstream closed the stream: {code}");
    for part in [Some(frame.reason.as_str()), error].into_iter().flatten() {
        if !part.is_empty() {
            message.push(' ');
            message.push_str(&capped(part));
        }
    }
    Some(BackendError::new(kind, class, message))
}

/// What one server text message means for the session.
#[derive(Debug, PartialEq)]
pub enum Mapped {
    Event(TranscriptEvent),
    /// An `Error` message: its description, kept for the close that follows.
    Error(String),
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum ServerMessage {
    Results(Results),
    Error(ErrorMessage),
    /// `Metadata`, `SpeechStarted`, `UtteranceEnd`, a gateway's `GatewayStatus`, …
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ErrorMessage {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Results {
    #[serde(default)]
    start: f64,
    #[serde(default)]
    duration: f64,
    #[serde(default)]
    is_final: bool,
    #[serde(default)]
    channel: ResultsChannel,
}

#[derive(Deserialize, Default)]
struct ResultsChannel {
    #[serde(default)]
    alternatives: Vec<Alternative>,
}

#[derive(Deserialize)]
struct Alternative {
    #[serde(default)]
    transcript: String,
    #[serde(default)]
    confidence: f32,
    #[serde(default)]
    words: Vec<ResultWord>,
}

#[derive(Deserialize)]
struct ResultWord {
    word: String,
    #[serde(default)]
    punctuated_word: Option<String>,
    start: f64,
    end: f64,
    #[serde(default)]
    confidence: f32,
    #[serde(default)]
    speaker: Option<u32>,
}

/// Seconds of the stream to milliseconds (negative and non-finite values to 0).
fn ms(seconds: f64) -> u64 {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0).round() as u64
    } else {
        0
    }
}

/// Maps one server text message. Public so that the fuzz targets can drive it.
pub fn map_message(text: &str, received_at: Instant) -> Result<Mapped, BackendError> {
    let message: ServerMessage = serde_json::from_str(text).map_err(|e| {
        BackendError::new(
            BackendErrorKind::Protocol,
            ErrorClass::UpstreamRetryable,
            format!("unreadable server message: {}", capped(&e.to_string())),
        )
    })?;
    let r = match message {
        ServerMessage::Results(r) => r,
        ServerMessage::Error(e) => {
            return Ok(Mapped::Error(capped(
                &e.description.or(e.message).unwrap_or_default(),
            )));
        }
        ServerMessage::Other => return Ok(Mapped::Event(TranscriptEvent::progress(received_at))),
    };
    let alt = r.channel.alternatives.into_iter().next();
    let (text, confidence, words) = match alt {
        Some(mut a) => {
            super::trim_in_place(&mut a.transcript);
            (a.transcript, a.confidence, a.words)
        }
        None => (String::new(), 0.0, Vec::new()),
    };
    Ok(Mapped::Event(TranscriptEvent {
        is_final: r.is_final,
        text,
        confidence,
        stability: 0.0,
        audio_processed_ms: Some(ms(r.start + r.duration)),
        words: words
            .into_iter()
            .map(|w| {
                let start_ms = ms(w.start);
                StreamWord {
                    word: w.punctuated_word.unwrap_or(w.word),
                    start_ms,
                    end_ms: ms(w.end).max(start_ms),
                    confidence: w.confidence,
                    // Deepgram numbers speakers from 0; the session's labels start at 1.
                    speaker: w.speaker.map(|s| s.saturating_add(1)),
                }
            })
            .collect(),
        received_at,
        local: false,
        notice: None,
    }))
}

#[async_trait]
impl SpeechBackend for DeepgramBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample_rate_hz(&self) -> u32 {
        self.settings.sample_rate
    }

    async fn open(
        &self,
        params: RecognitionParams,
        audio: AudioStream,
    ) -> Result<EventStream, BackendError> {
        let socket = self.connect(self.request(&params)?).await?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(drive(socket, audio, tx, self.settings.keepalive));
        Ok(ReceiverStream::new(rx).boxed())
    }

    async fn health(&self) -> Health {
        let timeout = self.settings.health_timeout;
        match tokio::time::timeout(timeout, self.transport()).await {
            Err(_) => Health::Down(format!("no connection within {timeout:?}")),
            Ok(Err(e)) => Health::Down(e.message),
            Ok(Ok(_)) => Health::Up,
        }
    }
}

fn control(kind: &str) -> Message {
    Message::Text(format!("{{\"type\":\"{kind}\"}}").into())
}

type Sink = futures::stream::SplitSink<Socket, Message>;

/// Sends one message within [`WRITE_TIMEOUT`].
async fn send(sink: &mut Sink, message: Message) -> Result<(), BackendError> {
    match tokio::time::timeout(WRITE_TIMEOUT, sink.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(send_error(e)),
        Err(_) => Err(BackendError::new(
            BackendErrorKind::Timeout,
            ErrorClass::UpstreamRetryable,
            format!("the server read nothing for {WRITE_TIMEOUT:?}"),
        )),
    }
}

/// One stream's socket: audio up, results down, until the server closes or the session
/// drops the event stream (which closes the socket: the stream is cancelled).
async fn drive(
    socket: Socket,
    audio: AudioStream,
    tx: mpsc::Sender<Result<TranscriptEvent, BackendError>>,
    keepalive: Duration,
) {
    let (mut sink, mut source) = socket.split();
    let mut audio = Some(audio);
    let mut last_sent = tokio::time::Instant::now();
    // The description of an `Error` message, for the close that follows it.
    let mut error: Option<String> = None;
    // Sending failed: the socket is going; its close (or end) says why (a send that timed
    // out ends the stream at once).
    let mut broken: Option<BackendError> = None;
    let outcome: Option<BackendError> = loop {
        let sending = audio.is_some() && broken.is_none();
        tokio::select! {
            _ = tx.closed() => {
                let _ = send(&mut sink, Message::Close(None)).await;
                return;
            }
            chunk = async { audio.as_mut().expect("guarded").next().await }, if sending => {
                let sent = match chunk {
                    Some(pcm) => {
                        last_sent = tokio::time::Instant::now();
                        send(&mut sink, Message::Binary(pcm)).await
                    }
                    None => {
                        audio = None;
                        match send(&mut sink, control("Finalize")).await {
                            Ok(()) => send(&mut sink, control("CloseStream")).await,
                            Err(e) => Err(e),
                        }
                    }
                };
                if let Err(e) = sent {
                    if e.kind == BackendErrorKind::Timeout {
                        break Some(e); // it reads nothing: nothing more will come either
                    }
                    broken = Some(e);
                    audio = None;
                }
            }
            _ = tokio::time::sleep_until(last_sent + keepalive), if sending => {
                last_sent = tokio::time::Instant::now();
                if let Err(e) = send(&mut sink, control("KeepAlive")).await {
                    if e.kind == BackendErrorKind::Timeout {
                        break Some(e);
                    }
                    broken = Some(e);
                    audio = None;
                }
            }
            message = source.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let item = match map_message(text.as_str(), Instant::now()) {
                        Ok(Mapped::Event(ev)) => Ok(ev),
                        Ok(Mapped::Error(description)) => {
                            error = Some(description);
                            continue;
                        }
                        Err(e) => Err(e),
                    };
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
                Some(Ok(Message::Close(frame))) => break close_error(frame.as_ref(), error.as_deref()),
                Some(Ok(_)) => {} // binary, ping, pong: nothing for the session
                Some(Err(e)) => break Some(broken.take().unwrap_or_else(|| send_error(e))),
                None => {
                    break Some(broken.take().unwrap_or_else(|| {
                        BackendError::new(
                            BackendErrorKind::Unavailable,
                            ErrorClass::UpstreamRetryable,
                            "the connection ended without a close",
                        )
                    }))
                }
            }
        }
    };
    if let Some(e) = outcome {
        let _ = tx.send(Err(e)).await;
    }
}

/// The socket failed under a send or a read.
fn send_error(e: WsError) -> BackendError {
    BackendError::new(
        BackendErrorKind::Unavailable,
        ErrorClass::UpstreamRetryable,
        format!("connection lost: {}", capped(&e.to_string())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    fn params() -> RecognitionParams {
        RecognitionParams {
            language: "de-DE".into(),
            sample_rate_hz: 16_000,
            punctuate: true,
            profanity_filter: false,
            interim_results: false,
            endpointing_ms: Some(300),
            custom: vec![("ignored".into(), "x".into())],
            phrases: vec![("Acme Corp".into(), 2.0), ("zeta".into(), 1.0)],
            diarize: true,
        }
    }

    fn pairs(q: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(q).unwrap()
    }

    #[test]
    fn the_query_carries_the_session_settings_and_the_url_wins() {
        let q = pairs(&query(&params(), &[]));
        let has = |k: &str, v: &str| q.iter().any(|(a, b)| a == k && b == v);
        assert!(has("encoding", "linear16") && has("sample_rate", "16000"));
        assert!(has("channels", "1") && has("language", "de-DE"));
        assert!(
            has("interim_results", "true"),
            "always: the stream's heartbeat, even when the client asked for none"
        );
        assert!(has("punctuate", "true") && has("diarize", "true"));
        assert!(has("endpointing", "300"));
        assert!(has("keyterm", "Acme Corp") && has("keyterm", "zeta"));
        assert!(
            !q.iter()
                .any(|(k, _)| k == "profanity_filter" || k == "ignored")
        );

        let mut p = params();
        p.language = "auto".into();
        p.endpointing_ms = None;
        let url = vec![
            ("model".to_string(), "nova-3".to_string()),
            ("punctuate".to_string(), "false".to_string()),
        ];
        let q = pairs(&query(&p, &url));
        assert!(
            !q.iter().any(|(k, _)| k == "language"),
            "auto: the server's default"
        );
        assert!(!q.iter().any(|(k, _)| k == "endpointing"));
        let punctuate: Vec<_> = q.iter().filter(|(k, _)| k == "punctuate").collect();
        assert_eq!(
            punctuate.len(),
            1,
            "the URL's value replaces the derived one"
        );
        assert_eq!(punctuate[0].1, "false");
        assert!(q.iter().any(|(k, v)| k == "model" && v == "nova-3"));
    }

    #[test]
    fn results_map_to_events_in_stream_milliseconds() {
        let now = Instant::now();
        let text = r#"{"type":"Results","channel_index":[0,1],"start":1.5,"duration":0.75,
            "is_final":true,"speech_final":false,"channel":{"alternatives":[{
            "transcript":" Hello, world. ","confidence":0.91,"words":[
              {"word":"hello","punctuated_word":"Hello,","start":1.52,"end":1.9,"confidence":0.8,"speaker":0},
              {"word":"world","start":2.0,"end":1.99,"confidence":0.7,"speaker":1}]}]},
            "metadata":{"request_id":"r"}}"#;
        let Mapped::Event(e) = map_message(text, now).unwrap() else {
            panic!("an event")
        };
        assert!(
            e.is_final,
            "is_final results are finals, speech_final or not"
        );
        assert_eq!(e.text, "Hello, world.");
        assert_eq!(e.confidence, 0.91);
        assert_eq!(e.audio_processed_ms, Some(2_250));
        assert_eq!(e.words[0].word, "Hello,", "punctuated_word when given");
        assert_eq!((e.words[0].start_ms, e.words[0].end_ms), (1_520, 1_900));
        assert_eq!(e.words[1].word, "world");
        assert_eq!(
            e.words[1].end_ms, 2_000,
            "an end before the start is clamped"
        );
        assert_eq!(
            (e.words[0].speaker, e.words[1].speaker),
            (Some(1), Some(2)),
            "Deepgram counts speakers from 0, the session from 1"
        );

        let interim = r#"{"type":"Results","start":0.0,"duration":1.0,"is_final":false,
            "channel":{"alternatives":[{"transcript":"hel","confidence":0.5,"words":[]}]}}"#;
        let Mapped::Event(e) = map_message(interim, now).unwrap() else {
            panic!("an event")
        };
        assert!(!e.is_final && e.text == "hel" && !e.is_progress());

        let empty = r#"{"type":"Results","start":3.0,"duration":1.0,"is_final":false,
            "channel":{"alternatives":[{"transcript":"","words":[]}]}}"#;
        let Mapped::Event(e) = map_message(empty, now).unwrap() else {
            panic!("an event")
        };
        assert!(
            e.is_progress(),
            "an empty interim result proves the stream alive"
        );
        assert_eq!(e.audio_processed_ms, Some(4_000), "and says how far it got");

        for other in [
            r#"{"type":"Metadata","request_id":"r","duration":1.0}"#,
            r#"{"type":"SpeechStarted","timestamp":0.5}"#,
            r#"{"type":"GatewayStatus","state":"failover"}"#,
        ] {
            assert_eq!(
                map_message(other, now).unwrap(),
                Mapped::Event(TranscriptEvent::progress(now)),
                "{other}"
            );
        }
        assert_eq!(
            map_message(r#"{"type":"Error","description":"bad thing"}"#, now).unwrap(),
            Mapped::Error("bad thing".into())
        );
        let e = map_message("not json", now).unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::Protocol);
    }

    #[test]
    fn closes_and_refusals_are_classified() {
        let frame = |code: u16, reason: &str| CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_string().into(),
        };
        assert!(close_error(None, None).is_none());
        assert!(close_error(Some(&frame(1000, "")), None).is_none());
        let e = close_error(Some(&frame(1011, "NET-0000")), Some("upstream fault")).unwrap();
        assert_eq!(
            (e.kind, e.class),
            (BackendErrorKind::ServerError, ErrorClass::UpstreamRetryable)
        );
        assert!(
            e.message.contains("1011 NET-0000 upstream fault"),
            "{}",
            e.message
        );
        for (code, class) in [
            (1001, ErrorClass::UpstreamRetryable),
            (1013, ErrorClass::UpstreamRetryable),
            (1008, ErrorClass::UpstreamRetryable),
            (1007, ErrorClass::UpstreamFatal),
        ] {
            assert_eq!(
                close_error(Some(&frame(code, "")), None).unwrap().class,
                class,
                "{code}"
            );
        }
        let long = close_error(Some(&frame(1011, &"x".repeat(120))), Some(&"y".repeat(900)));
        assert!(long.unwrap().message.len() < 400);

        let refused = |status: u16, body: Option<&str>| {
            let mut resp = tokio_tungstenite::tungstenite::http::Response::new(
                body.map(|b| b.as_bytes().to_vec()),
            );
            *resp.status_mut() =
                tokio_tungstenite::tungstenite::http::StatusCode::from_u16(status).unwrap();
            handshake_error(WsError::Http(Box::new(resp)))
        };
        let e = refused(
            401,
            Some(r#"{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}"#),
        );
        assert_eq!(
            (e.kind, e.class),
            (BackendErrorKind::Rejected, ErrorClass::UpstreamFatal)
        );
        assert_eq!(e.message, "upgrade refused: HTTP 401 INVALID_AUTH");
        for (status, class) in [
            (400, ErrorClass::Client),
            (403, ErrorClass::UpstreamFatal),
            (404, ErrorClass::UpstreamFatal),
            (408, ErrorClass::UpstreamRetryable),
            (429, ErrorClass::UpstreamRetryable),
            (502, ErrorClass::UpstreamRetryable),
            (503, ErrorClass::UpstreamRetryable),
        ] {
            assert_eq!(refused(status, None).class, class, "{status}");
        }
        let io = handshake_error(WsError::Io(std::io::ErrorKind::ConnectionRefused.into()));
        assert_eq!(io.class, ErrorClass::UpstreamRetryable);
    }

    #[test]
    fn the_key_comes_from_its_file_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dg.key");
        std::fs::write(&file, "s3cr3t-key\n").unwrap();
        let v = authorization(&file).unwrap();
        assert_eq!(v.to_str().unwrap(), "Token s3cr3t-key");
        assert!(v.is_sensitive());
        std::fs::write(&file, "\n").unwrap();
        let e = authorization(&file).unwrap_err();
        assert!(e.to_string().contains("holds no API key"), "{e}");
        std::fs::write(&file, "KEYMATERIAL\u{7f}").unwrap();
        let e = authorization(&file).unwrap_err().to_string();
        assert!(
            !e.contains("KEYMATERIAL"),
            "the key is not in the message: {e}"
        );
        let missing = authorization(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("cannot read"));
    }
}
