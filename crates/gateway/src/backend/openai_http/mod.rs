//! OpenAI-compatible HTTP back end (`openai://HOST:PORT/v1?model=NAME`, `openais://` for
//! TLS): servers with `POST /v1/audio/transcriptions` and no streaming — vLLM and SGLang
//! serving GLM-ASR-Nano or Whisper, speaches, NVIDIA NIM's HTTP ASR, OpenAI itself.
//!
//! The gateway endpoints the audio ([`crate::backend::utterances`], as for offline Triton
//! models) and uploads each utterance as a WAV file ([`wire`]); its answer becomes a final.
//! Partials, when `openai_backend.partials` is on, re-upload the open utterance at most
//! once per `partial_interval`, never while one is in flight. Each request is bounded by
//! `openai_backend.request_timeout`; HTTP errors are classified for failover and the
//! breaker by [`wire::classify`]. One pooled client per back end ([`connector`]).
//!
//! Words: the adapter asks for `verbose_json` with word timestamps; a server that refuses
//! that (400/422 on the first request) gets plain `json` from then on, and its finals
//! carry no words. Health: `GET {base}/models` must answer 200 and list the model (or,
//! with `?health=ready`, `GET {base}/health/ready` must answer 2xx: NIM lists no models).
//! The language goes as ISO-639-1 (`en`), or with `?language=bcp47` as given (`en-US`,
//! NIM), or not at all (`?language=omit`); `auto` never.
//!
//! The bearer key (`?key_file=`, else `openai_backend.key_file`) is read once at start-up
//! and is sent only in the `Authorization` header, marked sensitive; it never appears in
//! a message or a log.

pub mod connector;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request};

use super::scheduler::{QueueStatus, Scheduler};
use super::utterances::{self, Decoding, Endpointing};
use super::{
    AudioStream, BackendError, BackendErrorKind, EventStream, Health, RecognitionParams,
    SpeechBackend,
};
use crate::config::{BackendUrl, HealthProbe, LanguageForm, OpenAiSettings};
use crate::error::ErrorClass;
use crate::telemetry::metrics::DecodeQueueMetrics;
use connector::HttpClient;
use wire::{Fields, Format};

/// Largest answer read (a transcript of 25 s with word times is a few KiB).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// What the server has shown about `verbose_json` (see the module's "Words").
const FORMAT_UNKNOWN: u8 = 0;
const FORMAT_VERBOSE: u8 = 1;
const FORMAT_JSON: u8 = 2;

pub struct OpenAiBackend {
    inner: Arc<Inner>,
    /// Every session's requests, finals first (`openai_backend.max_inflight`).
    queue: Scheduler,
}

/// What every request of one back end shares.
struct Inner {
    name: String,
    model: String,
    /// `http(s)://host:port/base` without a trailing slash.
    base: String,
    client: HttpClient,
    /// `Bearer …`, marked sensitive.
    authorization: Option<HeaderValue>,
    language: LanguageForm,
    health: HealthProbe,
    settings: OpenAiSettings,
    format: AtomicU8,
}

impl OpenAiBackend {
    pub fn new(url: &BackendUrl, settings: &OpenAiSettings) -> Result<Self, BackendError> {
        let setup = |problem: String| {
            BackendError::new(BackendErrorKind::Unavailable, ErrorClass::Internal, problem)
        };
        let client = connector::client(url, settings.connect_timeout)
            .map_err(|e| setup(format!("TLS settings of {}: {e}", url.url)))?;
        let target = url
            .openai
            .clone()
            .ok_or_else(|| setup(format!("{} is not an openai URL", url.url)))?;
        let authorization = match target.key_file.as_ref().or(settings.key_file.as_ref()) {
            Some(file) => Some(bearer(file).map_err(|e| setup(format!("{}: {e}", url.url)))?),
            None => None,
        };
        let scheme = if url.tls { "https" } else { "http" };
        let host = match url.host.contains(':') {
            true => format!("[{}]", url.host),
            false => url.host.clone(),
        };
        let base = format!("{scheme}://{host}:{}/{}", url.port, target.base_path);
        // Every request's URI is the base and a fixed path: checked once, here.
        format!("{base}/audio/transcriptions")
            .parse::<hyper::Uri>()
            .map_err(|e| setup(format!("{}: not a usable HTTP address: {e}", url.url)))?;
        Ok(OpenAiBackend {
            queue: Scheduler::new(
                settings.max_inflight,
                settings.queue,
                DecodeQueueMetrics::default(),
            ),
            inner: Arc::new(Inner {
                name: url.url.clone(),
                model: url.model.clone().unwrap_or_default(),
                base,
                client,
                authorization,
                language: target.language,
                health: target.health,
                settings: settings.clone(),
                format: AtomicU8::new(FORMAT_UNKNOWN),
            }),
        })
    }
}

impl OpenAiBackend {
    /// Counts the decode queue in these (registered) metrics.
    pub fn with_queue_metrics(mut self, metrics: DecodeQueueMetrics) -> Self {
        self.queue = Scheduler::new(
            self.inner.settings.max_inflight,
            self.inner.settings.queue,
            metrics,
        );
        self
    }
}

/// The `Authorization` value from a key file (one line; surrounding space ignored).
fn bearer(file: &std::path::Path) -> Result<HeaderValue, String> {
    let bytes = crate::security::files::read(file).map_err(|e| e.to_string())?;
    let key = String::from_utf8(bytes)
        .map_err(|_| format!("{}: the key is not UTF-8 text", file.display()))?;
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(format!(
            "{}: must hold one key on one line (it is empty or has spaces)",
            file.display()
        ));
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
        format!(
            "{}: the key has characters a header cannot carry",
            file.display()
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// A 2xx answer's content type and body, or the request's failure.
type Answer = (String, Bytes);

impl Inner {
    fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}/{path}", self.base));
        if let Some(auth) = &self.authorization {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        req
    }

    /// Sends one request and reads the whole answer within `deadline`.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        deadline: Duration,
    ) -> Result<(u16, String, Bytes), BackendError> {
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                let what = if e.is_connect() {
                    "connect failed"
                } else {
                    "request failed"
                };
                BackendError::new(
                    BackendErrorKind::Unavailable,
                    ErrorClass::UpstreamRetryable,
                    format!("{what}: {}", source_chain(&e)),
                )
            })?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_ascii_lowercase();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    BackendError::new(
                        BackendErrorKind::Unavailable,
                        ErrorClass::UpstreamRetryable,
                        format!("reading the answer failed: {e}"),
                    )
                })?
                .to_bytes();
            Ok((status, content_type, body))
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| {
                BackendError::new(
                    BackendErrorKind::Timeout,
                    ErrorClass::UpstreamRetryable,
                    format!("no answer within {deadline:?}"),
                )
            })?
    }

    /// One transcription request in `format`.
    async fn transcribe(
        &self,
        fields: &Fields,
        format: Format,
        wav: &[u8],
    ) -> Result<Answer, BackendError> {
        let form = wire::form(fields, format, wav);
        let req = self
            .request(Method::POST, "audio/transcriptions")
            .header(CONTENT_TYPE, form.content_type)
            .body(Full::new(form.body))
            .expect("a valid request");
        let (status, content_type, body) = self.send(req, self.settings.request_timeout).await?;
        match status {
            200..=299 => Ok((content_type, body)),
            _ => Err(wire::classify(status, &body)),
        }
    }

    /// Decodes one utterance: `verbose_json` with words unless the server has refused it
    /// (then, and on its first refusal, plain `json`).
    async fn decode(
        self: Arc<Self>,
        fields: Arc<Fields>,
        samples: Vec<i16>,
    ) -> Result<Option<crate::backend::TranscriptEvent>, BackendError> {
        let wav = wire::wav(&samples, self.settings.sample_rate);
        drop(samples);
        let known = self.format.load(Ordering::Relaxed);
        let answer = if known == FORMAT_JSON {
            self.transcribe(&fields, Format::Json, &wav).await?
        } else {
            match self.transcribe(&fields, Format::VerboseWords, &wav).await {
                Ok(a) => {
                    self.format.store(FORMAT_VERBOSE, Ordering::Relaxed);
                    a
                }
                Err(e) if known == FORMAT_UNKNOWN && e.class == ErrorClass::Client => {
                    let a = self.transcribe(&fields, Format::Json, &wav).await?;
                    self.format.store(FORMAT_JSON, Ordering::Relaxed);
                    tracing::info!(backend = %self.name, "back end refused verbose_json: plain json from now on, finals without words");
                    a
                }
                Err(e) => return Err(e),
            }
        };
        wire::read_answer(&answer.0, &answer.1, Instant::now())
    }
}

/// An error and its sources, on one line (hyper's top error says little alone).
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

#[async_trait]
impl SpeechBackend for OpenAiBackend {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn sample_rate_hz(&self) -> u32 {
        self.inner.settings.sample_rate
    }

    /// The whole utterance as one upload (two-pass recognition's quality pass).
    async fn recognize(
        &self,
        params: RecognitionParams,
        pcm: bytes::Bytes,
    ) -> Result<crate::backend::TranscriptEvent, BackendError> {
        let fields = Arc::new(Fields::new(
            &self.inner.model,
            &params.language,
            self.inner.language,
            &params.phrases,
        ));
        let samples = crate::pcm::pcm_samples(&pcm);
        // Each request is bounded by openai_backend.request_timeout; a final's turn first.
        let decode = Box::pin(self.inner.clone().decode(fields, samples));
        let ev = self.queue.run_final(decode).await?;
        Ok(ev.unwrap_or_else(|| crate::backend::TranscriptEvent {
            is_final: true,
            ..crate::backend::TranscriptEvent::progress(Instant::now())
        }))
    }

    async fn open(
        &self,
        params: RecognitionParams,
        audio: AudioStream,
    ) -> Result<EventStream, BackendError> {
        let s = &self.inner.settings;
        let defaults = Endpointing {
            silence: s.endpointing,
            partial_interval: s.partial_interval,
            max_utterance: s.max_utterance,
            sample_rate: s.sample_rate,
            interim_results: s.partials,
        };
        let fields = Arc::new(Fields::new(
            &self.inner.model,
            &params.language,
            self.inner.language,
            &params.phrases,
        ));
        let inner = self.inner.clone();
        let decode = move |utterance: &[i16]| -> Decoding {
            Box::pin(inner.clone().decode(fields.clone(), utterance.to_vec()))
        };
        Ok(utterances::open(
            decode,
            Endpointing::new(defaults, &params),
            audio,
            self.queue.clone(),
        ))
    }

    fn queue(&self) -> Option<QueueStatus> {
        Some(self.queue.status())
    }

    async fn health(&self) -> Health {
        let inner = &self.inner;
        let path = match inner.health {
            HealthProbe::Models => "models",
            HealthProbe::Ready => "health/ready",
        };
        let req = inner
            .request(Method::GET, path)
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let answer = inner.send(req, inner.settings.health_timeout).await;
        match (inner.health, answer) {
            (_, Err(e)) => Health::Down(format!("GET /{path}: {}", e.message)),
            (HealthProbe::Ready, Ok((200..=299, _, _))) => Health::Up,
            (HealthProbe::Models, Ok((200, _, body))) => {
                match wire::lists_model(&body, &inner.model) {
                    Ok(true) => Health::Up,
                    Ok(false) => {
                        Health::Down(format!("model `{}` not listed by GET /models", inner.model))
                    }
                    Err(problem) => Health::Down(problem),
                }
            }
            (_, Ok((status, _, _))) => Health::Down(format!("GET /{path} answered {status}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_gives_a_sensitive_bearer_and_errors_never_show_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "sk-test-123\n").unwrap();
        let v = bearer(&file).unwrap();
        assert_eq!(v.to_str().unwrap(), "Bearer sk-test-123");
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("sk-test"), "Debug hides it");
        std::fs::write(&file, "sk-part one\n").unwrap();
        let e = bearer(&file).unwrap_err();
        assert!(
            e.contains("one key on one line") && !e.contains("sk-part"),
            "{e}"
        );
        let e = bearer(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn a_base_path_that_is_no_uri_path_stops_start_up() {
        let settings = OpenAiSettings {
            sample_rate: 16_000,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            endpointing: Duration::from_millis(500),
            partials: false,
            partial_interval: Duration::from_secs(1),
            max_utterance: Duration::from_secs(25),
            key_file: None,
            health_timeout: Duration::from_secs(1),
            max_inflight: 4,
            queue: Default::default(),
        };
        let ok = BackendUrl::parse("openai://127.0.0.1:8000/v1?model=m").unwrap();
        assert!(OpenAiBackend::new(&ok, &settings).is_ok());
        let bad = BackendUrl::parse("openai://127.0.0.1:8000/v 1?model=m").unwrap();
        let e = OpenAiBackend::new(&bad, &settings).err().expect("refused");
        assert!(e.message.contains("not a usable HTTP address"), "{e}");
        assert_eq!(e.class, ErrorClass::Internal);
    }
}
