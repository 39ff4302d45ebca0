//! `POST /v1/audio/transcriptions`: OpenAI's file transcription, in a multipart form.
//!
//! Fields: `file` (any format [`crate::media`] decodes; channels are mixed), `model` (a
//! route), `language`, `prompt` (comma- or line-separated phrases become phrase hints for
//! Riva), `response_format` (`json`, `text`, `srt`, `vtt`, `verbose_json`),
//! `timestamp_granularities[]` (`segment`, `word`; with `verbose_json`), `stream` (`true`:
//! server-sent events); `temperature`, `chunking_strategy`, `include[]` and unknown fields
//! are accepted and ignored. The file runs through an ordinary paced session
//! ([`super::super::files`]): routes, breakers, failover with replay, admission.

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, Multipart, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use super::{OpenAi, error, prompt_phrases, route};
use crate::ingress::dialect::{Contract, Upgrade};
use crate::ingress::files::{self, BodyError};
use crate::ingress::{AppState, gate};
use crate::media::MediaError;
use crate::security::tls::PeerAddr;
use crate::session::{Event, Outcome, StartConfig, Transcript};

/// What the form asked for.
#[derive(Debug, Default)]
struct Form {
    file: Option<bytes::Bytes>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    format: Format,
    words: bool,
    segments: bool,
    stream: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Format {
    #[default]
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

fn invalid(param: &str, message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some(param),
        "invalid_value",
        message,
    )
}

/// `POST /v1/audio/transcriptions`.
pub async fn create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let headers: HeaderMap = request.headers().clone();
    let upgrade = Upgrade {
        headers: &headers,
        query: query.as_deref(),
        config: &state.config,
    };
    let admitted = match gate::check::<OpenAi>(&state, peer, &upgrade) {
        Ok(a) => a,
        Err(refusal) => return *refusal,
    };
    let _file_place = match files::take_place::<OpenAi>(&state) {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    let limits = state.config.files.clone();
    let content_length = files::content_length(&headers);
    if content_length.is_some_and(|n| n > limits.max_bytes as u64) {
        return too_large(&state, limits.max_bytes);
    }
    let form = tokio::time::timeout(limits.upload_timeout, read_form(request, limits.max_bytes))
        .await
        .unwrap_or(Err(FormError::Body(BodyError::Timeout {
            seconds: limits.upload_timeout.as_secs(),
        })));
    let form = match form {
        Ok(f) => f,
        Err(FormError::Body(BodyError::TooLarge { limit })) => return too_large(&state, limit),
        Err(FormError::Body(e)) => {
            state.ctx.metrics.rejected("bad_request");
            let status = match e {
                BodyError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(
                status,
                "invalid_request_error",
                None,
                "invalid_request",
                &e.to_string(),
            );
        }
        Err(FormError::Invalid(response)) => {
            state.ctx.metrics.rejected("bad_request");
            return response;
        }
    };
    let Some(model) = form.model.as_deref() else {
        state.ctx.metrics.rejected("bad_request");
        return invalid(
            "model",
            "`model` is required: a route of this gateway (GET /v1/models)",
        );
    };
    let route = match route(&state, model) {
        Ok(r) => r.to_string(),
        Err(response) => return *response,
    };
    let Some(file) = form.file.clone() else {
        state.ctx.metrics.rejected("bad_request");
        return invalid(
            "file",
            "`file` is required: the audio file, as a multipart file field",
        );
    };
    let pcm = match files::decode(file, &limits).await {
        Ok(p) => p,
        Err(e) => {
            state.ctx.metrics.rejected("bad_request");
            let status = match e {
                MediaError::TooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(
                status,
                "invalid_request_error",
                Some("file"),
                "invalid_value",
                &e.to_string(),
            );
        }
    };
    if !crate::session::SAMPLE_RATES.contains(&pcm.sample_rate) {
        state.ctx.metrics.rejected("bad_request");
        return invalid(
            "file",
            &format!(
                "the audio is sampled at {} Hz: this gateway takes 8000 to 48000 Hz",
                pcm.sample_rate
            ),
        );
    }
    let duration = pcm.seconds();
    let config = StartConfig {
        sample_rate: pcm.sample_rate,
        model: Some(route),
        language: form.language.clone().unwrap_or_else(|| "auto".into()),
        phrases: prompt_phrases(form.prompt.as_deref()),
        punctuate: true,
        ..StartConfig::default()
    };
    let samples = files::channels(pcm, false).swap_remove(0);
    let (ticket, key, places) = admitted.into_parts();
    let (events, task) = files::start(
        state.ctx.clone(),
        &state.sessions,
        OpenAi::NAME,
        ticket,
        key,
        config,
        samples,
    );
    if form.stream {
        return sse(events, places);
    }
    let mut finals = Vec::new();
    let mut failure = None;
    let mut events = events;
    while let Some(ev) = events.next().await {
        match ev {
            Event::Final(t) => finals.push(t),
            Event::Error(e) if failure.is_none() => failure = Some(e),
            _ => {}
        }
    }
    drop(places);
    if task.await.unwrap_or(Outcome::Failed) != Outcome::Completed {
        return files::failure::<OpenAi>(&state, failure);
    }
    render(&form, &finals, duration)
}

fn too_large(state: &AppState, limit: usize) -> Response {
    state.ctx.metrics.rejected("bad_request");
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        Some("file"),
        "file_too_large",
        &BodyError::TooLarge { limit }.to_string(),
    )
}

enum FormError {
    Body(BodyError),
    Invalid(Response),
}

/// Reads the multipart form within `limit` bytes in all.
async fn read_form(request: Request, limit: usize) -> Result<Form, FormError> {
    let (parts, body) = request.into_parts();
    let body = Body::new(http_body_util::Limited::new(body, limit));
    let request = Request::from_parts(parts, body);
    let mut multipart = Multipart::from_request(request, &()).await.map_err(|e| {
        FormError::Invalid(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "invalid_request",
            &format!("the request must be multipart/form-data with a `file` field: {e}"),
        ))
    })?;
    let mut form = Form::default();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(form_error(&e.to_string())),
        };
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let bytes = field
                .bytes()
                .await
                .map_err(|e| form_error(&e.to_string()))?;
            form.file = Some(bytes);
            continue;
        }
        let value = field.text().await.map_err(|e| form_error(&e.to_string()))?;
        if value.len() > 4096 {
            return Err(FormError::Invalid(invalid(
                &name,
                "a form field other than `file` is at most 4096 bytes",
            )));
        }
        match name.as_str() {
            "model" => form.model = Some(value),
            "language" => {
                let v = value.trim();
                if !v.is_empty() {
                    if v.len() > 32 {
                        return Err(FormError::Invalid(invalid(
                            "language",
                            "`language` must be a language code such as en",
                        )));
                    }
                    form.language = Some(v.to_string());
                }
            }
            "prompt" => form.prompt = Some(value),
            "response_format" => {
                form.format = match value.trim() {
                    "json" => Format::Json,
                    "text" => Format::Text,
                    "srt" => Format::Srt,
                    "vtt" => Format::Vtt,
                    "verbose_json" => Format::VerboseJson,
                    other => {
                        let shown: String = other.chars().take(32).collect();
                        return Err(FormError::Invalid(invalid(
                            "response_format",
                            &format!(
                                "response_format `{shown}` is not supported: use json, text, srt, \
                                 vtt or verbose_json"
                            ),
                        )));
                    }
                }
            }
            "timestamp_granularities[]" | "timestamp_granularities" => match value.trim() {
                "word" => form.words = true,
                "segment" => form.segments = true,
                _ => {
                    return Err(FormError::Invalid(invalid(
                        "timestamp_granularities",
                        "timestamp_granularities are `word` and `segment`",
                    )));
                }
            },
            "stream" => form.stream = value.trim().eq_ignore_ascii_case("true"),
            // Accepted and ignored (README lists them), as is anything unknown.
            _ => {}
        }
    }
    Ok(form)
}

/// A broken form: the body limit shows up here too.
fn form_error(message: &str) -> FormError {
    if message.contains("length limit exceeded") {
        return FormError::Body(BodyError::TooLarge { limit: 0 });
    }
    FormError::Invalid(error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        None,
        "invalid_request",
        &format!("the multipart form could not be read: {message}"),
    ))
}

/// Server-sent events: a `transcript.text.delta` per final as it comes, then
/// `transcript.text.done` with the whole text (or an `error` event).
fn sse(events: futures::channel::mpsc::Receiver<Event>, places: impl Send + 'static) -> Response {
    let stream = futures::stream::unfold(
        (events, String::new(), Some(places), false),
        |(mut events, mut text, places, done)| async move {
            if done {
                return None;
            }
            loop {
                match events.next().await {
                    Some(Event::Final(t)) => {
                        let piece = t.text.trim();
                        if piece.is_empty() {
                            continue;
                        }
                        let delta = if text.is_empty() {
                            piece.to_string()
                        } else {
                            format!(" {piece}")
                        };
                        text.push_str(&delta);
                        let frame = data(&json!({"type": "transcript.text.delta", "delta": delta}));
                        return Some((
                            Ok::<_, std::convert::Infallible>(frame),
                            (events, text, places, false),
                        ));
                    }
                    Some(Event::Error(e)) if !e.kind.recoverable() => {
                        let body = OpenAi::error_body(e.kind, &e.message);
                        let frame = data(&json!({"type": "error", "error": body["error"]}));
                        return Some((Ok(frame), (events, text, None, true)));
                    }
                    Some(_) => {}
                    None => {
                        let frame = data(&json!({"type": "transcript.text.done", "text": text}));
                        drop(places);
                        return Some((Ok(frame), (events, text, None, true)));
                    }
                }
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("a valid response")
}

fn data(v: &Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("data: {v}\n\n"))
}

/// The answer in the asked format.
fn render(form: &Form, finals: &[Transcript], duration: f64) -> Response {
    let text = finals
        .iter()
        .map(|t| t.text.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let segments: Vec<(f64, f64, &str)> = finals
        .iter()
        .filter(|t| !t.text.trim().is_empty())
        .map(|t| {
            let end = t
                .words
                .as_ref()
                .and_then(|w| w.last())
                .map_or(t.timestamp_ms as f64 / 1000.0, |w| w.end);
            let start = t
                .words
                .as_ref()
                .and_then(|w| w.first())
                .map_or((end - t.duration_ms as f64 / 1000.0).max(0.0), |w| w.start);
            (start, end, t.text.trim())
        })
        .collect();
    let usage = json!({"type": "duration", "seconds": duration.ceil()});
    match form.format {
        Format::Json => axum::Json(json!({"text": text, "usage": usage})).into_response(),
        Format::Text => plain("text/plain; charset=utf-8", format!("{text}\n")),
        Format::Srt => {
            let mut out = String::new();
            for (i, (start, end, t)) in segments.iter().enumerate() {
                out.push_str(&format!(
                    "{}\n{} --> {}\n{t}\n\n",
                    i + 1,
                    timestamp(*start, ','),
                    timestamp(*end, ',')
                ));
            }
            plain("application/x-subrip; charset=utf-8", out)
        }
        Format::Vtt => {
            let mut out = String::from("WEBVTT\n\n");
            for (start, end, t) in &segments {
                out.push_str(&format!(
                    "{} --> {}\n{t}\n\n",
                    timestamp(*start, '.'),
                    timestamp(*end, '.')
                ));
            }
            plain("text/vtt; charset=utf-8", out)
        }
        Format::VerboseJson => {
            let mut body = json!({
                "task": "transcribe",
                "language": form.language.clone().unwrap_or_else(|| "english".into()),
                "duration": duration,
                "text": text,
                "usage": usage,
            });
            // Segments unless only words were asked for (OpenAI's default is segments).
            if form.segments || !form.words {
                body["segments"] = segments
                    .iter()
                    .enumerate()
                    .map(|(i, (start, end, t))| {
                        json!({
                            "id": i,
                            "seek": 0,
                            "start": start,
                            "end": end,
                            "text": t,
                            "tokens": [],
                            "temperature": 0.0,
                            "avg_logprob": 0.0,
                            "compression_ratio": 1.0,
                            "no_speech_prob": 0.0,
                        })
                    })
                    .collect();
            }
            if form.words {
                body["words"] = finals
                    .iter()
                    .flat_map(|t| t.words.iter().flatten())
                    .map(|w| json!({"word": w.word, "start": w.start, "end": w.end}))
                    .collect();
            }
            axum::Json(body).into_response()
        }
    }
}

fn plain(content_type: &'static str, body: String) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `HH:MM:SS,mmm` (SubRip) or `HH:MM:SS.mmm` (WebVTT).
fn timestamp(seconds: f64, separator: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_phrases() {
        assert_eq!(timestamp(3_723.456, ','), "01:02:03,456");
        assert_eq!(timestamp(0.0, '.'), "00:00:00.000");
        assert_eq!(
            prompt_phrases(Some("Riva, Triton\n speech-gateway ,,")),
            vec![
                ("Riva".to_string(), 1.0),
                ("Triton".to_string(), 1.0),
                ("speech-gateway".to_string(), 1.0)
            ]
        );
        assert!(prompt_phrases(None).is_empty());
    }
}
