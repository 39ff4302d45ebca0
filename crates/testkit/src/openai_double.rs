//! A scripted OpenAI-compatible transcription server: axum on 127.0.0.1:0 serving
//! `GET /v1/models` and `POST /v1/audio/transcriptions`, for the gateway's `openai://`
//! back end.
//!
//! Every upload is recorded (its form fields, its file, its `Authorization`). Each
//! request takes the next [`Reply`] of the script; with the script empty it answers the
//! default: a transcript that says how much audio it heard (`heard N ms`, one word
//! spanning the file), so a test can add up what reached the server without a model.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::json;

/// What one transcription request is answered with.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The default answer (see the module).
    Heard,
    /// This status with OpenAI's error body.
    Status(u16),
    /// Never answers (the client's deadline must end it).
    Hang,
    /// The default answer, after this long (a slow server).
    Slow(std::time::Duration),
}

/// One upload as the double saw it.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    pub model: Option<String>,
    pub response_format: Option<String>,
    pub timestamp_granularities: Vec<String>,
    pub language: Option<String>,
    pub prompt: Option<String>,
    /// The `file` field's bytes and its declared content type.
    pub file: Bytes,
    pub file_type: Option<String>,
    pub authorization: Option<String>,
}

impl Upload {
    /// The WAV header's sample rate, channels and bits, and the data's duration in ms
    /// (read by hand from the canonical 44-byte header: a malformed file fails the test).
    pub fn wav(&self) -> (u32, u16, u16, u64) {
        let f = &self.file;
        assert!(f.len() >= 44, "a WAV file: {} bytes", f.len());
        assert_eq!(&f[0..4], b"RIFF");
        assert_eq!(&f[8..16], b"WAVEfmt ");
        let u16_at = |i: usize| u16::from_le_bytes([f[i], f[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]);
        assert_eq!(u32_at(4) as usize, f.len() - 8, "RIFF size");
        assert_eq!(u16_at(20), 1, "PCM");
        assert_eq!(&f[36..40], b"data");
        let data = u32_at(40) as usize;
        assert_eq!(data, f.len() - 44, "data size");
        let (rate, channels, bits) = (u32_at(24), u16_at(22), u16_at(34));
        let ms = (data as u64 / 2 / u64::from(channels.max(1))) * 1000 / u64::from(rate.max(1));
        (rate, channels, bits, ms)
    }
}

#[derive(Debug, Default)]
pub struct Log {
    pub uploads: Vec<Upload>,
    pub script: VecDeque<Reply>,
    /// Replies once the script is empty (`Heard` unless set).
    pub otherwise: Option<Reply>,
    /// Ids `GET /v1/models` lists.
    pub models: Vec<String>,
    /// Answer 400 to `verbose_json`, as servers without it do.
    pub refuse_verbose: bool,
    pub model_list_requests: usize,
    /// `GET /v1/health/ready` (NIM's probe) answers 503 while set.
    pub not_ready: bool,
}

pub struct OpenAiDouble {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Log>>,
    /// Aborted on drop: a hanging request must not hold a graceful shutdown.
    server: tokio::task::JoinHandle<()>,
}

impl Drop for OpenAiDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl OpenAiDouble {
    /// A server listing `models`.
    pub async fn start(models: &[&str]) -> OpenAiDouble {
        let log = Arc::new(Mutex::new(Log {
            models: models.iter().map(|m| m.to_string()).collect(),
            ..Log::default()
        }));
        let app = Router::new()
            .route("/v1/models", get(list_models))
            .route("/v1/health/ready", get(ready))
            .route("/v1/audio/transcriptions", post(transcribe))
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the double serves");
        });
        OpenAiDouble { addr, log, server }
    }

    /// `openai://ADDR/v1?model=MODEL` plus `extra` query parameters (`&key_file=…`).
    pub fn url(&self, model: &str, extra: &str) -> String {
        format!("openai://{}/v1?model={model}{extra}", self.addr)
    }

    pub fn uploads(&self) -> Vec<Upload> {
        self.log.lock().unwrap().uploads.clone()
    }

    /// Replies for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.log.lock().unwrap().script.extend(replies);
    }

    /// The reply once the script is spent.
    pub fn otherwise(&self, reply: Reply) {
        self.log.lock().unwrap().otherwise = Some(reply);
    }
}

async fn list_models(State(log): State<Arc<Mutex<Log>>>) -> Response {
    let mut log = log.lock().unwrap();
    log.model_list_requests += 1;
    let data: Vec<_> = log
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "double"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn ready(State(log): State<Arc<Mutex<Log>>>) -> StatusCode {
    match log.lock().unwrap().not_ready {
        true => StatusCode::SERVICE_UNAVAILABLE,
        false => StatusCode::OK,
    }
}

async fn transcribe(
    State(log): State<Arc<Mutex<Log>>>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let mut up = Upload {
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        ..Upload::default()
    };
    while let Some(field) = form.next_field().await.expect("a multipart form") {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            up.file_type = field.content_type().map(String::from);
            up.file = field.bytes().await.expect("the file");
            continue;
        }
        let value = field.text().await.expect("a text field");
        match name.as_str() {
            "model" => up.model = Some(value),
            "response_format" => up.response_format = Some(value),
            "timestamp_granularities[]" => up.timestamp_granularities.push(value),
            "language" => up.language = Some(value),
            "prompt" => up.prompt = Some(value),
            other => panic!("unexpected form field `{other}`"),
        }
    }
    let verbose = up.response_format.as_deref() == Some("verbose_json");
    let (_, _, _, ms) = up.wav();
    let reply = {
        let mut log = log.lock().unwrap();
        let refuse = verbose && log.refuse_verbose;
        log.uploads.push(up);
        if refuse {
            Reply::Status(400)
        } else {
            let next = log.script.pop_front();
            next.or_else(|| log.otherwise.clone())
                .unwrap_or(Reply::Heard)
        }
    };
    match reply {
        Reply::Heard => {
            let text = format!("heard {ms} ms");
            let mut body = json!({"text": text});
            if verbose {
                body["words"] = json!([{"word": "heard", "start": 0.0, "end": ms as f64 / 1000.0}]);
            }
            axum::Json(body).into_response()
        }
        Reply::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            axum::Json(json!({"error": {"message": format!("scripted {code}"), "type": "test"}})),
        )
            .into_response(),
        Reply::Hang => std::future::pending().await,
        Reply::Slow(after) => {
            tokio::time::sleep(after).await;
            let body = json!({
                "text": format!("heard {ms} ms"),
                "words": [{"word": "heard", "start": 0.0, "end": ms as f64 / 1000.0}],
            });
            axum::Json(body).into_response()
        }
    }
}
