//! Deepgram's prerecorded API: `POST /v1/listen` with the audio file as the body (the
//! SDKs' `transcribe_file`), the same query parameters as the live stream, and Deepgram's
//! response JSON: `metadata`, `results.channels[].alternatives[]` with words, and
//! `results.utterances` when `utterances=true`.
//!
//! The file goes through [`super::super::files`]: read within `files.*`, decoded in Rust,
//! each channel (`multichannel=true`) or the mix run through an ordinary paced session.
//! Raw audio is accepted too when the query names its `encoding` (and `sample_rate`,
//! `channels`). `{"url": …}` bodies are refused: the gateway fetches nothing on a
//! client's behalf (no server-side request forgery).

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::{Deepgram, Encoding, Settings, alaw, normalised, ulaw};
use crate::ingress::dialect::Upgrade;
use crate::ingress::files::{self, BodyError, FileTranscript};
use crate::ingress::{AppState, gate};
use crate::media::{self, MediaError, Pcm};
use crate::security::tls::PeerAddr;
use crate::session::{ErrorKind, Outcome, Transcript};

/// `POST /v1/listen`.
pub async fn listen_file(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<PeerAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let request = Upgrade {
        headers: &headers,
        query: query.as_deref(),
        config: &state.config,
    };
    let admitted = match gate::check::<Deepgram>(&state, peer, &request) {
        Ok(a) => a,
        Err(refusal) => return *refusal,
    };
    let settings = match Settings::from_query(&request, false) {
        Ok(s) => s,
        Err(e) => return gate::bad_request::<Deepgram>(&state, &e),
    };
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if json_body {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            ErrorKind::InvalidRequest,
            "this gateway does not fetch audio from URLs ({\"url\": ...} bodies): send the \
             audio file itself as the request body (Content-Type: application/octet-stream \
             or audio/*)",
        );
    }
    let _file_place = match files::take_place::<Deepgram>(&state) {
        Ok(p) => p,
        Err(refusal) => return *refusal,
    };
    let content_length = files::content_length(&headers);
    let bytes = match files::read_body(body, content_length, &state.config.files).await {
        Ok(b) => b,
        Err(e) => {
            let status = match e {
                BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
                BodyError::Broken | BodyError::Empty => StatusCode::BAD_REQUEST,
            };
            return refuse(&state, status, ErrorKind::InvalidRequest, &e.to_string());
        }
    };
    let sha256 = crate::security::apikeys::sha256_hex_bytes(&bytes);
    let decoded = match settings.encoding {
        Some(encoding) => raw(&bytes, encoding, &settings, &state),
        None => files::decode(bytes, &state.config.files).await,
    };
    let pcm = match decoded {
        Ok(p) => p,
        Err(e) => {
            let status = match e {
                MediaError::TooLong { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return refuse(&state, status, ErrorKind::AudioFormat, &e.to_string());
        }
    };
    if !crate::session::SAMPLE_RATES.contains(&pcm.sample_rate) {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            ErrorKind::AudioFormat,
            &format!(
                "the audio is sampled at {} Hz: this gateway takes 8000 to 48000 Hz",
                pcm.sample_rate
            ),
        );
    }
    let duration = pcm.seconds();
    let channel_count = pcm.channels.len();
    let mut config = settings.config.clone();
    config.sample_rate = pcm.sample_rate;
    let channels = files::channels(pcm, settings.multichannel);
    // One session per channel: each takes an admission place.
    let (ticket, key, places) = admitted.into_parts();
    let mut tickets = vec![ticket];
    for _ in 1..channels.len() {
        match state.admission.admit() {
            Some(t) => tickets.push(t),
            None => {
                let retry_after = gate::retry_after_secs(&state);
                state.ctx.metrics.rejected("global_limit");
                return gate::refusal::<Deepgram>(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(retry_after),
                    ErrorKind::RateLimitExceeded,
                    &format!(
                        "the gateway has no place for {} more sessions (one per channel); \
                         retry after {retry_after} s",
                        channels.len()
                    ),
                );
            }
        }
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let created = std::time::SystemTime::now();
    let runs = channels.into_iter().zip(tickets).map(|(samples, ticket)| {
        files::transcribe(
            state.ctx.clone(),
            &state.sessions,
            <Deepgram as crate::ingress::dialect::Contract>::NAME,
            ticket,
            key.clone(),
            config.clone(),
            samples,
        )
    });
    let results = futures::future::join_all(runs).await;
    drop(places);
    if let Some(failed) = results.iter().find(|r| r.outcome != Outcome::Completed) {
        return files::failure::<Deepgram>(&state, failed.error.clone());
    }
    let body = FileResponse {
        metadata: Metadata {
            transaction_key: "deprecated",
            request_id: &request_id,
            sha256: &sha256,
            created: humantime_serde::re::humantime::format_rfc3339_millis(created).to_string(),
            duration,
            channels: channel_count,
            models: [&request_id],
            model_info: json!({
                request_id.clone(): {
                    "name": settings.route,
                    "version": env!("CARGO_PKG_VERSION"),
                    "arch": "speech-gateway",
                }
            }),
        },
        results: Results {
            channels: results.iter().map(channel).collect(),
            utterances: settings
                .utterances
                .then(|| utterances(&results, settings.utt_split)),
        },
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn refuse(state: &AppState, status: StatusCode, kind: ErrorKind, message: &str) -> Response {
    state.ctx.metrics.rejected("bad_request");
    gate::refusal::<Deepgram>(status, None, kind, message)
}

/// Raw audio as the query describes it.
fn raw(
    bytes: &[u8],
    encoding: Encoding,
    settings: &Settings,
    state: &AppState,
) -> Result<Pcm, MediaError> {
    let max = state.config.files.max_duration.as_secs_f64();
    let rate = settings.config.sample_rate;
    match encoding {
        Encoding::Linear16 => media::linear16(bytes, rate, settings.channels, max),
        Encoding::Mulaw | Encoding::Alaw => {
            let decode = if encoding == Encoding::Mulaw {
                ulaw
            } else {
                alaw
            };
            let pcm: Vec<u8> = bytes
                .iter()
                .flat_map(|&b| decode(b).to_le_bytes())
                .collect();
            media::linear16(&pcm, rate, settings.channels, max)
        }
    }
}

#[derive(Serialize)]
struct FileResponse<'a> {
    metadata: Metadata<'a>,
    results: Results,
}

#[derive(Serialize)]
struct Metadata<'a> {
    transaction_key: &'static str,
    request_id: &'a str,
    sha256: &'a str,
    created: String,
    duration: f64,
    channels: usize,
    models: [&'a str; 1],
    model_info: serde_json::Value,
}

#[derive(Serialize)]
struct Results {
    channels: Vec<Channel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    utterances: Option<Vec<Utterance>>,
}

#[derive(Serialize)]
struct Channel {
    alternatives: [Alternative; 1],
}

#[derive(Serialize)]
struct Alternative {
    transcript: String,
    confidence: f32,
    words: Vec<FileWord>,
}

#[derive(Serialize, Clone)]
struct FileWord {
    word: String,
    start: f64,
    end: f64,
    confidence: f32,
    punctuated_word: String,
    /// Deepgram numbers speakers from 0; Riva from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    speaker: Option<u32>,
}

#[derive(Serialize)]
struct Utterance {
    start: f64,
    end: f64,
    confidence: f32,
    channel: usize,
    /// The speaker of the utterance's first word (with `diarize`).
    #[serde(skip_serializing_if = "Option::is_none")]
    speaker: Option<u32>,
    transcript: String,
    words: Vec<FileWord>,
    id: String,
}

fn words_of(t: &Transcript) -> Vec<FileWord> {
    t.words
        .iter()
        .flatten()
        .map(|w| FileWord {
            word: normalised(&w.word).into_owned(),
            start: w.start,
            end: w.end,
            confidence: w.confidence,
            punctuated_word: w.word.clone(),
            speaker: w.speaker.map(|s| s.saturating_sub(1)),
        })
        .collect()
}

fn mean(values: impl Iterator<Item = f32>) -> f32 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f32 }
}

/// One channel: its finals' text joined, their words in order.
fn channel(r: &FileTranscript) -> Channel {
    let transcript = r
        .finals
        .iter()
        .map(|t| t.text.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    Channel {
        alternatives: [Alternative {
            transcript,
            confidence: mean(r.finals.iter().map(|t| t.confidence)),
            words: r.finals.iter().flat_map(words_of).collect(),
        }],
    }
}

/// Utterances of every channel, in time order: each final, split further where its words
/// are more than `split` seconds apart or the speaker changes.
fn utterances(results: &[FileTranscript], split: f64) -> Vec<Utterance> {
    let mut out = Vec::new();
    for (channel, r) in results.iter().enumerate() {
        for t in &r.finals {
            let words = words_of(t);
            if words.is_empty() {
                if t.text.trim().is_empty() {
                    continue;
                }
                let end = t.timestamp_ms as f64 / 1000.0;
                out.push(utterance(
                    channel,
                    (end - t.duration_ms as f64 / 1000.0).max(0.0),
                    end,
                    t.confidence,
                    t.text.trim().to_string(),
                    Vec::new(),
                ));
                continue;
            }
            let mut group: Vec<FileWord> = Vec::new();
            for w in words {
                // A pause longer than `split`, or another speaker, starts a new one.
                if group
                    .last()
                    .is_some_and(|last| w.start - last.end > split || last.speaker != w.speaker)
                {
                    out.push(from_words(channel, std::mem::take(&mut group)));
                }
                group.push(w);
            }
            out.push(from_words(channel, group));
        }
    }
    out.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.channel.cmp(&b.channel)));
    out
}

fn from_words(channel: usize, words: Vec<FileWord>) -> Utterance {
    let start = words.first().map_or(0.0, |w| w.start);
    let end = words.last().map_or(0.0, |w| w.end);
    let confidence = mean(words.iter().map(|w| w.confidence));
    let transcript = words
        .iter()
        .map(|w| w.punctuated_word.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    utterance(channel, start, end, confidence, transcript, words)
}

fn utterance(
    channel: usize,
    start: f64,
    end: f64,
    confidence: f32,
    transcript: String,
    words: Vec<FileWord>,
) -> Utterance {
    Utterance {
        start,
        end,
        confidence,
        channel,
        speaker: words.first().and_then(|w| w.speaker),
        transcript,
        words,
        id: uuid::Uuid::new_v4().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Word;

    fn final_of(words: &[(&str, f64, f64)]) -> Transcript {
        Transcript {
            text: words.iter().map(|w| w.0).collect::<Vec<_>>().join(" "),
            confidence: 0.9,
            timestamp_ms: 0,
            duration_ms: 0,
            words: Some(
                words
                    .iter()
                    .map(|&(word, start, end)| Word {
                        word: word.into(),
                        start,
                        end,
                        confidence: 0.8,
                        speaker: None,
                    })
                    .collect(),
            ),
            from_finalize: false,
        }
    }

    #[test]
    fn utterances_split_at_word_gaps_and_interleave_channels_by_time() {
        let left = FileTranscript {
            finals: vec![final_of(&[
                ("Hello", 0.0, 0.4),
                ("there.", 0.5, 0.9),
                ("Bye.", 3.0, 3.4),
            ])],
            error: None,
            outcome: Outcome::Completed,
        };
        let right = FileTranscript {
            finals: vec![final_of(&[("Hi!", 1.0, 1.3)])],
            error: None,
            outcome: Outcome::Completed,
        };
        let u = utterances(&[left, right], 0.8);
        let seen: Vec<(usize, &str, f64)> = u
            .iter()
            .map(|u| (u.channel, u.transcript.as_str(), u.start))
            .collect();
        assert_eq!(
            seen,
            vec![(0, "Hello there.", 0.0), (1, "Hi!", 1.0), (0, "Bye.", 3.0)]
        );
        assert_eq!(u[0].words[1].word, "there");
        assert_eq!(u[0].words[1].punctuated_word, "there.");
        assert!((u[0].confidence - 0.8).abs() < 1e-6);
    }
}
