//! The OpenAI transcription API on the wire, as pure functions: the WAV file and the
//! multipart form of one request, the answer read into a [`TranscriptEvent`], and HTTP
//! statuses classified into [`BackendError`]s. Nothing here does I/O, logs or counts.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use crate::backend::{BackendError, BackendErrorKind, StreamWord, TranscriptEvent};
use crate::config::LanguageForm;
use crate::error::ErrorClass;

/// The answer shape asked of the server. `verbose_json` with word timestamps gives the
/// words the session needs to place finals; servers that refuse it get plain `json`
/// (text only) from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    VerboseWords,
    Json,
}

/// One request's fields besides the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    pub model: String,
    /// In the back end's [`LanguageForm`]; `None` for `auto` and for `omit`.
    pub language: Option<String>,
    /// The session's phrases, comma-separated (Whisper-style servers take a prompt).
    pub prompt: Option<String>,
}

impl Fields {
    pub fn new(model: &str, language: &str, form: LanguageForm, phrases: &[(String, f32)]) -> Self {
        let language = language.trim();
        let language = match form {
            _ if language.is_empty() || language.eq_ignore_ascii_case("auto") => None,
            LanguageForm::Omit => None,
            LanguageForm::Bcp47 => Some(language.to_string()),
            LanguageForm::Iso639 => language
                .split(['-', '_'])
                .next()
                .map(str::to_ascii_lowercase),
        };
        let prompt = phrases
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Fields {
            model: model.to_string(),
            language,
            prompt: (!prompt.is_empty()).then_some(prompt),
        }
    }
}

/// PCM16LE mono samples as a WAV file (the 44-byte canonical header).
pub fn wav(samples: &[i16], sample_rate: u32) -> Bytes {
    let data_len = (samples.len() * 2) as u32;
    let mut out = BytesMut::with_capacity(44 + samples.len() * 2);
    out.put_slice(b"RIFF");
    out.put_u32_le(36 + data_len);
    out.put_slice(b"WAVEfmt ");
    out.put_u32_le(16); // fmt chunk size
    out.put_u16_le(1); // PCM
    out.put_u16_le(1); // mono
    out.put_u32_le(sample_rate);
    out.put_u32_le(sample_rate * 2); // byte rate
    out.put_u16_le(2); // block align
    out.put_u16_le(16); // bits per sample
    out.put_slice(b"data");
    out.put_u32_le(data_len);
    for s in samples {
        out.put_i16_le(*s);
    }
    out.freeze()
}

/// A `multipart/form-data` body: its `Content-Type` and bytes.
#[derive(Debug, Clone)]
pub struct Form {
    pub content_type: String,
    pub body: Bytes,
}

/// The form of one transcription request: `file` (the WAV), `model`, `response_format`
/// (and `timestamp_granularities[]=word` with verbose), `language` and `prompt` if set.
pub fn form(fields: &Fields, format: Format, wav: &[u8]) -> Form {
    let boundary = format!("sgw-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let mut body = BytesMut::with_capacity(wav.len() + 1024);
    let mut text = |name: &str, value: &str| {
        body.put_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    };
    text("model", &fields.model);
    match format {
        Format::VerboseWords => {
            text("response_format", "verbose_json");
            text("timestamp_granularities[]", "word");
        }
        Format::Json => text("response_format", "json"),
    }
    if let Some(language) = &fields.language {
        text("language", language);
    }
    if let Some(prompt) = &fields.prompt {
        text("prompt", prompt);
    }
    body.put_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"utterance.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.put_slice(wav);
    body.put_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Form {
        content_type: format!("multipart/form-data; boundary={boundary}"),
        body: body.freeze(),
    }
}

#[derive(Deserialize)]
struct Answer {
    text: String,
    #[serde(default)]
    words: Option<Vec<Word>>,
}

#[derive(Deserialize)]
struct Word {
    word: String,
    start: f64,
    end: f64,
    /// speaches (faster-whisper) gives one; OpenAI does not.
    #[serde(default)]
    probability: Option<f32>,
}

/// Reads a 2xx answer: JSON with `text` (and `words` with `verbose_json`), or plain text
/// from servers that answer that way. Times are seconds from the utterance's start; an
/// empty text is nothing to say (`None`).
pub fn read_answer(
    content_type: &str,
    body: &[u8],
    received_at: Instant,
) -> Result<Option<TranscriptEvent>, BackendError> {
    let (text, words) = if content_type.starts_with("text/plain") {
        (String::from_utf8_lossy(body).trim().to_string(), Vec::new())
    } else {
        let answer: Answer = serde_json::from_slice(body).map_err(|e| {
            BackendError::new(
                BackendErrorKind::Protocol,
                ErrorClass::UpstreamFatal,
                format!("the transcription answer is not the expected JSON: {e}"),
            )
        })?;
        let ms = |s: f64| (s.max(0.0) * 1000.0).round() as u64;
        let words = answer
            .words
            .unwrap_or_default()
            .into_iter()
            .filter(|w| !w.word.trim().is_empty())
            .map(|w| StreamWord {
                word: w.word.trim().to_string(),
                start_ms: ms(w.start),
                end_ms: ms(w.end.max(w.start)),
                confidence: w.probability.unwrap_or(0.0),
                speaker: None,
            })
            .collect();
        (answer.text.trim().to_string(), words)
    };
    if text.is_empty() {
        return Ok(None);
    }
    let confidence = if words.is_empty() {
        0.0
    } else {
        words.iter().map(|w| w.confidence).sum::<f32>() / words.len() as f32
    };
    Ok(Some(TranscriptEvent {
        is_final: true,
        text,
        confidence,
        stability: 1.0,
        audio_processed_ms: None,
        words,
        received_at,
        local: false,
        notice: None,
    }))
}

/// Classifies a non-2xx answer. 429 and 5xx are the server's passing trouble (retry, or
/// the next back end); 408 a timeout; 400 and 422 refuse what this session asked for (its
/// language, its audio) — the client's, never counted against the back end; other 4xx
/// (401/403 a bad key, 404 an unknown model or path, 413/415) are this back end's
/// configuration, which retrying will not fix, but another back end may.
pub fn classify(status: u16, body: &[u8]) -> BackendError {
    use BackendErrorKind as K;
    use ErrorClass as C;
    let (kind, class) = match status {
        429 => (K::ServerError, C::UpstreamRetryable),
        500..=599 => (K::ServerError, C::UpstreamRetryable),
        408 => (K::Timeout, C::UpstreamRetryable),
        400 | 422 => (K::Rejected, C::Client),
        401..=499 => (K::Rejected, C::UpstreamFatal),
        // 1xx/3xx (redirects are not followed): not an answer this adapter can use
        _ => (K::Protocol, C::UpstreamFatal),
    };
    let mut message = format!("http {status}");
    let detail = error_message(body);
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&detail);
    }
    BackendError::new(kind, class, message)
}

/// OpenAI's `{"error": {"message"}}` (or FastAPI's `{"detail"}`), capped so nothing large
/// reaches logs; empty when the body has neither.
fn error_message(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let m = v["error"]["message"]
        .as_str()
        .or_else(|| v["message"].as_str())
        .or_else(|| v["detail"].as_str())
        .unwrap_or_default();
    m.chars().take(200).collect()
}

/// Whether `GET /models` lists `model` (OpenAI's `{"data": [{"id"}]}`).
pub fn lists_model(body: &[u8], model: &str) -> Result<bool, String> {
    #[derive(Deserialize)]
    struct List {
        data: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        id: String,
    }
    let list: List = serde_json::from_slice(body)
        .map_err(|e| format!("the model list is not OpenAI's {{\"data\": [...]}}: {e}"))?;
    Ok(list.data.iter().any(|m| m.id == model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wav_file_has_the_canonical_header() {
        let w = wav(&[1, -2, 300], 16_000);
        assert_eq!(w.len(), 44 + 6);
        assert_eq!(&w[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(w[4..8].try_into().unwrap()), 36 + 6);
        assert_eq!(&w[8..16], b"WAVEfmt ");
        assert_eq!(u16::from_le_bytes([w[20], w[21]]), 1, "PCM");
        assert_eq!(u16::from_le_bytes([w[22], w[23]]), 1, "mono");
        assert_eq!(u32::from_le_bytes(w[24..28].try_into().unwrap()), 16_000);
        assert_eq!(u32::from_le_bytes(w[28..32].try_into().unwrap()), 32_000);
        assert_eq!(u16::from_le_bytes([w[34], w[35]]), 16);
        assert_eq!(&w[36..40], b"data");
        assert_eq!(u32::from_le_bytes(w[40..44].try_into().unwrap()), 6);
        assert_eq!(&w[44..], &[1, 0, 0xfe, 0xff, 0x2c, 0x01]);
        // and the gateway's own decoder reads it back
        let pcm = crate::media::decode(w, 10.0).unwrap();
        assert_eq!(pcm.sample_rate, 16_000);
        assert_eq!(pcm.channels, vec![vec![1, -2, 300]]);
    }

    #[test]
    fn the_form_carries_the_fields_and_the_file() {
        let phrases = [("Riva".into(), 1.0), ("Triton".into(), 2.0)];
        let f = Fields::new("whisper-1", "en-US", LanguageForm::Iso639, &phrases);
        assert_eq!(f.language.as_deref(), Some("en"));
        assert_eq!(f.prompt.as_deref(), Some("Riva, Triton"));
        let lang = |code: &str, form| Fields::new("m", code, form, &[]).language;
        assert_eq!(lang("en-US", LanguageForm::Bcp47).as_deref(), Some("en-US"));
        assert_eq!(lang("en-US", LanguageForm::Omit), None);
        assert_eq!(lang("auto", LanguageForm::Iso639), None);
        assert_eq!(lang("auto", LanguageForm::Bcp47), None);
        assert_eq!(lang("DE", LanguageForm::Iso639).as_deref(), Some("de"));
        assert_eq!(
            Fields::new("m", "auto", LanguageForm::Iso639, &[]).prompt,
            None
        );
        let form = form(&f, Format::VerboseWords, b"RIFFxx");
        let boundary = form
            .content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap();
        let body = String::from_utf8_lossy(&form.body);
        for (name, value) in [
            ("model", "whisper-1"),
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "word"),
            ("language", "en"),
            ("prompt", "Riva, Triton"),
        ] {
            assert!(
                body.contains(&format!("name=\"{name}\"\r\n\r\n{value}\r\n--{boundary}")),
                "{name}: {body}"
            );
        }
        assert!(
            body.contains(
                "filename=\"utterance.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFFxx\r\n"
            )
        );
        assert!(body.ends_with(&format!("--{boundary}--\r\n")));
        let plain = super::form(&f, Format::Json, b"");
        let body = String::from_utf8_lossy(&plain.body);
        assert!(body.contains("\r\n\r\njson\r\n") && !body.contains("timestamp_granularities"));
    }

    #[test]
    fn answers_are_read_with_or_without_words() {
        let now = Instant::now();
        let verbose = br#"{"text":" Hello world. ","words":[{"word":" Hello","start":0.1,"end":0.5,"probability":0.9},{"word":"world.","start":0.6,"end":1.0}]}"#;
        let ev = read_answer("application/json", verbose, now)
            .unwrap()
            .unwrap();
        assert_eq!(ev.text, "Hello world.");
        assert!(ev.is_final);
        assert_eq!(ev.words.len(), 2);
        assert_eq!(
            (
                ev.words[0].word.as_str(),
                ev.words[0].start_ms,
                ev.words[0].end_ms
            ),
            ("Hello", 100, 500)
        );
        assert_eq!(ev.words[1].end_ms, 1_000);
        let plain = read_answer("application/json", br#"{"text":"hi","usage":{}}"#, now)
            .unwrap()
            .unwrap();
        assert_eq!(plain.text, "hi");
        assert!(plain.words.is_empty());
        let text = read_answer("text/plain; charset=utf-8", b"hi there\n", now)
            .unwrap()
            .unwrap();
        assert_eq!(text.text, "hi there");
        assert_eq!(
            read_answer("application/json", br#"{"text":"  "}"#, now).unwrap(),
            None
        );
        let bad = read_answer("application/json", b"<html>", now).unwrap_err();
        assert_eq!(bad.kind, BackendErrorKind::Protocol);
    }

    #[test]
    fn statuses_are_classified() {
        for (status, class, kind) in [
            (
                429,
                ErrorClass::UpstreamRetryable,
                BackendErrorKind::ServerError,
            ),
            (
                500,
                ErrorClass::UpstreamRetryable,
                BackendErrorKind::ServerError,
            ),
            (
                503,
                ErrorClass::UpstreamRetryable,
                BackendErrorKind::ServerError,
            ),
            (
                408,
                ErrorClass::UpstreamRetryable,
                BackendErrorKind::Timeout,
            ),
            (400, ErrorClass::Client, BackendErrorKind::Rejected),
            (422, ErrorClass::Client, BackendErrorKind::Rejected),
            (401, ErrorClass::UpstreamFatal, BackendErrorKind::Rejected),
            (404, ErrorClass::UpstreamFatal, BackendErrorKind::Rejected),
            (302, ErrorClass::UpstreamFatal, BackendErrorKind::Protocol),
        ] {
            let e = classify(status, b"");
            assert_eq!((e.class, e.kind), (class, kind), "{status}");
        }
        let e = classify(
            429,
            br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
        );
        assert_eq!(e.message, "http 429: slow down");
        let e = classify(422, br#"{"detail":"bad language"}"#);
        assert_eq!(e.message, "http 422: bad language");
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "y".repeat(1000));
        assert!(classify(500, long.as_bytes()).message.len() < 220);
    }

    #[test]
    fn the_model_list_is_read() {
        let body =
            br#"{"object":"list","data":[{"id":"default","object":"model"},{"id":"offline"}]}"#;
        assert_eq!(lists_model(body, "offline"), Ok(true));
        assert_eq!(lists_model(body, "whisper-1"), Ok(false));
        assert!(lists_model(b"[]", "x").is_err());
    }
}
