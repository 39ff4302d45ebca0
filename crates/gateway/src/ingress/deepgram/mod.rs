//! The Deepgram-compatible live dialect (`GET /v1/listen`, upgraded to a WebSocket), so
//! clients built on Deepgram's SDKs and voice-agent plugins reach the gateway's back ends
//! by changing one base URL. The field names and message shapes follow Deepgram's public
//! streaming contract; README "Deepgram-compatible API" says what maps to what and which
//! query parameters are accepted but not honoured.
//!
//! - Settings come in the query string and start the session at once; `model` names a
//!   route. `mulaw` / `alaw` audio is decoded to PCM16 here, at the edge.
//! - Client text messages: `KeepAlive` (keeps the session alive), `Finalize` (the current
//!   utterance becomes final now), `CloseStream` (flush, `Metadata`, close).
//! - Server messages: `Results` (interim and final), `Metadata` before the close, `Error`,
//!   and the gateway's own notices as `GatewayStatus` (SDKs skip types they do not know).
//! - Credentials: `Authorization: Token …` or `Bearer …`, or the subprotocol pair
//!   `token, …` that browsers use.
//!
//! Pure apart from the per-session counters: nothing here logs.

pub mod prerecorded;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use axum::extract::ws::Message;
use axum::http::header;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

use super::dialect::{Contract, Decoded, Dialect, Upgrade};
use crate::security::auth::AuthError;
use crate::session::audio::max_frame_bytes;
use crate::session::{
    CloseCause, Command, ErrorKind, Event, SAMPLE_RATES, SessionError, StartConfig, Transcript,
};

/// Query parameters accepted and not honoured (Deepgram treats each as optional).
pub const IGNORED_PARAMETERS: &[&str] = &[
    "callback",
    "callback_method",
    "detect_entities",
    "diarize_model",
    "dictation",
    "extra",
    "filler_words",
    "language_hint",
    "mip_opt_out",
    "numerals",
    "redact",
    "replace",
    "search",
    "tag",
    "version",
];

/// Most phrase hints (`keywords` and `keyterm` together) and bytes of one.
pub const MAX_PHRASES: usize = 100;
pub const MAX_PHRASE_BYTES: usize = 100;

/// A `keywords` value: `word` or `word:intensifier` (the boost; 1 when absent).
fn keyword(value: &str) -> Result<(String, f32), SessionError> {
    let bad = || {
        invalid(
            ErrorKind::InvalidRequest,
            "`keywords` are WORD or WORD:INTENSIFIER, the intensifier a number between -100 \
             and 100",
        )
    };
    let (word, boost) = match value.rsplit_once(':') {
        Some((word, n)) => {
            let boost = n.trim().parse::<f32>().map_err(|_| bad())?;
            if !(-100.0..=100.0).contains(&boost) {
                return Err(bad());
            }
            (word, boost)
        }
        None => (value, 1.0),
    };
    Ok((word.trim().to_string(), boost))
}

/// How the client's raw audio is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Linear16,
    Mulaw,
    Alaw,
}

/// One `/v1/listen` session's codec.
#[derive(Debug)]
pub struct Deepgram {
    config: StartConfig,
    encoding: Encoding,
    request_id: String,
    created: SystemTime,
    model: String,
    /// PCM16 samples received per channel, for `Metadata.duration`.
    samples: AtomicU64,
    /// Channels interleaved in the client's audio (`channels`).
    wire_channels: usize,
    /// Sessions: one per channel with `multichannel=true`, else one (channels mixed).
    sessions: usize,
    /// Most PCM16 bytes of one session frame (`session.max_frame`): a longer message is
    /// split into frames of this size (Deepgram takes any chunk size).
    frame_bytes: usize,
}

fn invalid(kind: ErrorKind, message: impl Into<String>) -> SessionError {
    SessionError::new(kind, message)
}

fn flag(key: &str, value: &str) -> Result<bool, SessionError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(
            ErrorKind::InvalidRequest,
            format!("`{key}` must be true or false"),
        )),
    }
}

/// The query settings of a `/v1/listen` request, live or prerecorded.
#[derive(Debug)]
pub(crate) struct Settings {
    pub config: StartConfig,
    /// `encoding`, when the request names one (prerecorded: then the body is raw audio).
    pub encoding: Option<Encoding>,
    /// `channels` (raw audio only; 1 when absent).
    pub channels: usize,
    pub multichannel: bool,
    /// Prerecorded: `utterances`, and `utt_split` (the word gap that splits them, s).
    pub utterances: bool,
    pub utt_split: f64,
    pub route: String,
}

/// Most channels a request may name.
pub const MAX_CHANNELS: usize = crate::media::MAX_CHANNELS;

impl Settings {
    /// Reads the query. `live`: the WebSocket, where audio is always raw and one channel.
    pub(crate) fn from_query(request: &Upgrade<'_>, live: bool) -> Result<Self, SessionError> {
        // Deepgram's defaults where they differ from the session's.
        let mut config = StartConfig {
            interim_results: false,
            punctuate: false,
            idle_timeout: request.config.deepgram.idle_timeout,
            ..StartConfig::default()
        };
        let mut encoding = None;
        let mut sample_rate = None;
        let mut model = None;
        let mut channels = 1;
        let mut multichannel = false;
        let mut utterances = false;
        let mut utt_split = 0.8;
        for (key, value) in request.query_pairs() {
            match key.as_str() {
                "model" => model = Some(value.to_ascii_lowercase()),
                "language" => {
                    let v = value.trim();
                    if v.is_empty() || v.len() > 32 {
                        return Err(invalid(
                            ErrorKind::InvalidRequest,
                            "`language` must be a language code such as en-US",
                        ));
                    }
                    config.language = v.to_string();
                }
                "encoding" => {
                    encoding = Some(match value.to_ascii_lowercase().as_str() {
                        "linear16" => Encoding::Linear16,
                        "mulaw" => Encoding::Mulaw,
                        "alaw" => Encoding::Alaw,
                        other => {
                            let shown: String = other.chars().take(32).collect();
                            return Err(invalid(
                                ErrorKind::AudioFormat,
                                format!(
                                    "encoding `{shown}` is not supported by this gateway: use \
                                     linear16, mulaw or alaw{}",
                                    if live {
                                        ""
                                    } else {
                                        ", or send a file (WAV, FLAC, MP3, Ogg, M4A, WebM) \
                                         without `encoding`"
                                    }
                                ),
                            ));
                        }
                    })
                }
                "sample_rate" => {
                    sample_rate = Some(
                        value
                            .parse::<u32>()
                            .ok()
                            .filter(|r| SAMPLE_RATES.contains(r))
                            .ok_or_else(|| {
                                invalid(
                                    ErrorKind::AudioFormat,
                                    "`sample_rate` must be an integer number of Hz between \
                                     8000 and 48000",
                                )
                            })?,
                    )
                }
                "channels" => {
                    channels = value
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_CHANNELS).contains(n))
                        .ok_or_else(|| {
                            invalid(
                                ErrorKind::AudioFormat,
                                format!("`channels` must be a number from 1 to {MAX_CHANNELS}"),
                            )
                        })?;
                }
                "multichannel" => multichannel = flag(&key, &value)?,
                "utterances" => utterances = flag(&key, &value)?,
                "utt_split" => {
                    utt_split = value
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|s| (0.0..=60.0).contains(s))
                        .ok_or_else(|| {
                            invalid(
                                ErrorKind::InvalidRequest,
                                "`utt_split` must be a number of seconds between 0 and 60",
                            )
                        })?;
                }
                "interim_results" => config.interim_results = flag(&key, &value)?,
                "vad_events" => config.vad_events = flag(&key, &value)?,
                "diarize" => config.diarize = flag(&key, &value)?,
                "utterance_end_ms" => {
                    let ms = value
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|ms| (1_000..=60_000).contains(ms))
                        .ok_or_else(|| {
                            invalid(
                                ErrorKind::InvalidRequest,
                                "`utterance_end_ms` must be a number of milliseconds between \
                                 1000 and 60000",
                            )
                        })?;
                    config.utterance_end_ms = Some(ms);
                }
                "punctuate" | "smart_format" => {
                    config.punctuate |= flag(&key, &value)?;
                }
                "profanity_filter" => config.profanity_filter = flag(&key, &value)?,
                "keywords" | "keyterm" => {
                    let (phrase, boost) = if key == "keywords" {
                        keyword(&value)?
                    } else {
                        (value.trim().to_string(), 1.0)
                    };
                    if phrase.is_empty() || phrase.len() > MAX_PHRASE_BYTES {
                        return Err(invalid(
                            ErrorKind::InvalidRequest,
                            format!("`{key}` values are 1 to {MAX_PHRASE_BYTES} bytes"),
                        ));
                    }
                    if config.phrases.len() == MAX_PHRASES {
                        return Err(invalid(
                            ErrorKind::InvalidRequest,
                            format!("at most {MAX_PHRASES} `keywords` and `keyterm` in all"),
                        ));
                    }
                    config.phrases.push((phrase, boost));
                }
                "endpointing" => {
                    config.endpointing_ms = if value.eq_ignore_ascii_case("false") {
                        None
                    } else {
                        let ms = value
                            .parse::<u32>()
                            .ok()
                            .filter(|ms| (10..=10_000).contains(ms))
                            .ok_or_else(|| {
                                invalid(
                                    ErrorKind::InvalidRequest,
                                    "`endpointing` must be false or a number of \
                                     milliseconds between 10 and 10000",
                                )
                            })?;
                        Some(ms)
                    }
                }
                // Accepted and not honoured, as README lists; anything else is ignored
                // too, as Deepgram does with parameters it does not know.
                _ => {}
            }
        }
        if config.utterance_end_ms.is_some() && !config.interim_results {
            return Err(invalid(
                ErrorKind::InvalidRequest,
                "`utterance_end_ms` needs interim_results=true (as with Deepgram)",
            ));
        }
        config.sample_rate = sample_rate.unwrap_or(match encoding {
            Some(Encoding::Mulaw | Encoding::Alaw) => 8_000,
            _ => 16_000,
        });
        let route = model.unwrap_or_else(|| "default".to_string());
        if request.config.route(&route).is_none() {
            let known: Vec<&str> = request
                .config
                .routes
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            return Err(invalid(
                ErrorKind::ModelUnavailable,
                format!(
                    "unknown model `{route}`: this gateway serves {}",
                    known.join(", ")
                ),
            ));
        }
        config.model = Some(route.clone());
        Ok(Settings {
            config,
            encoding,
            channels,
            multichannel,
            utterances,
            utt_split,
            route,
        })
    }
}

impl Deepgram {
    fn from_query(request: &Upgrade<'_>) -> Result<Self, SessionError> {
        let settings = Settings::from_query(request, true)?;
        let config = settings.config;
        let frame_bytes = max_frame_bytes(config.sample_rate, request.config.session.max_frame);
        Ok(Deepgram {
            config,
            encoding: settings.encoding.unwrap_or(Encoding::Linear16),
            request_id: uuid::Uuid::new_v4().to_string(),
            created: SystemTime::now(),
            model: settings.route,
            samples: AtomicU64::new(0),
            wire_channels: settings.channels,
            sessions: if settings.multichannel {
                settings.channels
            } else {
                1
            },
            frame_bytes,
        })
    }

    /// A binary message as PCM16 planes: one per session (each channel with
    /// `multichannel`, else the channels mixed into one). A message must hold whole
    /// sample frames (2 bytes × channels for linear16, 1 × channels for G.711).
    fn planes(&self, bytes: Bytes) -> Result<Vec<Bytes>, SessionError> {
        let pcm: Bytes = match self.encoding {
            Encoding::Linear16 => bytes,
            Encoding::Mulaw => bytes.iter().flat_map(|&b| ulaw(b).to_le_bytes()).collect(),
            Encoding::Alaw => bytes.iter().flat_map(|&b| alaw(b).to_le_bytes()).collect(),
        };
        let n = self.wire_channels;
        let frame = 2 * n;
        if n > 1 && !pcm.len().is_multiple_of(frame) {
            return Err(invalid(
                ErrorKind::AudioFormat,
                format!(
                    "a binary message of {} channels must hold whole sample frames ({} bytes \
                     of linear16 each); this one ({} bytes) was not transcribed",
                    n,
                    frame,
                    pcm.len()
                ),
            ));
        }
        self.samples
            .fetch_add((pcm.len() / frame) as u64, Ordering::Relaxed);
        if n == 1 {
            return Ok(vec![pcm]);
        }
        let samples = pcm
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]));
        if self.sessions == 1 {
            let all: Vec<i16> = samples.collect();
            let mixed: Vec<i16> = all
                .chunks_exact(n)
                .map(|f| (f.iter().map(|&s| i32::from(s)).sum::<i32>() / n as i32) as i16)
                .collect();
            return Ok(vec![crate::pcm::pcm_bytes(&mixed)]);
        }
        let mut planes = vec![Vec::with_capacity(pcm.len() / n); n];
        for (i, s) in samples.enumerate() {
            planes[i % n].extend_from_slice(&s.to_le_bytes());
        }
        Ok(planes.into_iter().map(Bytes::from).collect())
    }

    /// PCM16 audio as session frames of at most `session.max_frame` (Deepgram takes any
    /// chunk size).
    fn frames(&self, mut pcm: Bytes) -> Vec<Command> {
        let mut frames = Vec::with_capacity(pcm.len() / self.frame_bytes.max(1) + 1);
        while pcm.len() > self.frame_bytes {
            frames.push(Command::Audio(pcm.split_to(self.frame_bytes)));
        }
        frames.push(Command::Audio(pcm));
        frames
    }

    fn results(&self, t: &Transcript, is_final: bool, channel: usize) -> Message {
        let words: Vec<ResultWord<'_>> = t
            .words
            .iter()
            .flatten()
            .map(|w| ResultWord {
                word: normalised(&w.word),
                punctuated_word: &w.word,
                start: w.start,
                end: w.end,
                confidence: w.confidence,
                speaker: w.speaker.map(|s| s.saturating_sub(1)),
            })
            .collect();
        let end = if is_final {
            t.words
                .as_ref()
                .and_then(|w| w.last())
                .map_or(t.timestamp_ms as f64 / 1000.0, |w| w.end)
        } else {
            t.timestamp_ms as f64 / 1000.0
        };
        let start = if is_final {
            (end - t.duration_ms as f64 / 1000.0).max(0.0)
        } else {
            words.first().map_or(end, |w| w.start.min(end))
        };
        let results = Results {
            kind: "Results",
            channel_index: [channel as u32, self.sessions as u32],
            duration: end - start,
            start,
            is_final,
            speech_final: is_final,
            from_finalize: is_final && t.from_finalize,
            channel: Channel {
                alternatives: [Alternative {
                    transcript: &t.text,
                    confidence: t.confidence,
                    words,
                }],
            },
            metadata: ResultsMetadata {
                request_id: &self.request_id,
                model_info: ModelInfo {
                    name: &self.model,
                    version: env!("CARGO_PKG_VERSION"),
                    arch: "speech-gateway",
                },
                model_uuid: &self.request_id,
            },
        };
        text(&results)
    }

    fn metadata(&self) -> Message {
        let seconds =
            self.samples.load(Ordering::Relaxed) as f64 / f64::from(self.config.sample_rate);
        text(&json!({
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": "",
            "created": humantime_serde::re::humantime::format_rfc3339_millis(self.created).to_string(),
            "duration": seconds,
            "channels": self.wire_channels,
            "models": [self.request_id],
            "model_info": {
                self.request_id.clone(): {
                    "name": self.model,
                    "version": env!("CARGO_PKG_VERSION"),
                    "arch": "speech-gateway",
                }
            },
        }))
    }
}

#[derive(Serialize)]
struct ResultWord<'a> {
    word: Cow<'a, str>,
    punctuated_word: &'a str,
    start: f64,
    end: f64,
    confidence: f32,
    /// Deepgram numbers speakers from 0; Riva from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    speaker: Option<u32>,
}

#[derive(Serialize)]
struct Alternative<'a> {
    transcript: &'a str,
    confidence: f32,
    words: Vec<ResultWord<'a>>,
}

#[derive(Serialize)]
struct Channel<'a> {
    alternatives: [Alternative<'a>; 1],
}

#[derive(Serialize)]
struct ModelInfo<'a> {
    name: &'a str,
    version: &'a str,
    arch: &'a str,
}

#[derive(Serialize)]
struct ResultsMetadata<'a> {
    request_id: &'a str,
    model_info: ModelInfo<'a>,
    model_uuid: &'a str,
}

#[derive(Serialize)]
struct Results<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel_index: [u32; 2],
    duration: f64,
    start: f64,
    is_final: bool,
    speech_final: bool,
    from_finalize: bool,
    channel: Channel<'a>,
    metadata: ResultsMetadata<'a>,
}

fn text(value: &impl Serialize) -> Message {
    Message::Text(
        serde_json::to_string(value)
            .expect("messages always serialize")
            .into(),
    )
}

/// A word as Deepgram's `word` field spells it: lower case, without the punctuation
/// around it (`punctuated_word` keeps the back end's spelling). Borrowed when the word is
/// that already (most are): a result's every word was a new string, per partial.
fn normalised(word: &str) -> Cow<'_, str> {
    let trimmed = word.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'');
    let lower = if trimmed.is_ascii() {
        !trimmed.bytes().any(|b| b.is_ascii_uppercase())
    } else {
        // Every char its own lower case: then so is the word (`str::to_lowercase`'s
        // one context rule, the final sigma, applies to an upper-case Σ).
        trimmed.chars().all(|c| {
            let mut l = c.to_lowercase();
            l.next() == Some(c) && l.next().is_none()
        })
    };
    if lower {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(trimmed.to_lowercase())
    }
}

/// G.711 µ-law to linear PCM16.
pub(crate) fn ulaw(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// G.711 A-law to linear PCM16.
pub(crate) fn alaw(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0F);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    if a & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

impl Contract for Deepgram {
    const NAME: &'static str = "deepgram";

    fn credentials<'a>(
        request: &Upgrade<'a>,
        _allow_query: bool,
    ) -> Result<Option<Cow<'a, str>>, AuthError> {
        if let Some(h) = request.authorization()? {
            let (scheme, rest) = h.trim().split_once(' ').ok_or(AuthError::Malformed)?;
            let known =
                scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
            return match (known, rest.trim()) {
                (true, key) if !key.is_empty() => Ok(Some(Cow::Borrowed(key))),
                _ => Err(AuthError::Malformed),
            };
        }
        // Browsers: `Sec-WebSocket-Protocol: token, KEY`.
        let offered = request
            .headers
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok());
        Ok(offered.and_then(|list| {
            let mut items = list.split(',').map(str::trim);
            match (items.next(), items.next()) {
                (Some(scheme), Some(key))
                    if scheme.eq_ignore_ascii_case("token") && !key.is_empty() =>
                {
                    Some(Cow::Borrowed(key))
                }
                _ => None,
            }
        }))
    }

    fn error_body(kind: ErrorKind, message: &str) -> Value {
        json!({
            "err_code": kind.label(),
            "err_msg": message,
            "request_id": uuid::Uuid::new_v4().to_string(),
        })
    }
}

impl Dialect for Deepgram {
    const SUBPROTOCOLS: &'static [&'static str] = &["token"];

    fn accept(request: &Upgrade<'_>) -> Result<Self, SessionError> {
        Self::from_query(request)
    }

    fn opening(&self) -> Option<Command> {
        Some(Command::Start(self.config.clone()))
    }

    fn decode(&self, msg: Message) -> Decoded {
        match msg {
            Message::Binary(bytes) => {
                let pcm = match self.planes(bytes) {
                    Ok(mut planes) => planes.swap_remove(0),
                    Err(e) => return Decoded::One(Command::Reject(e)),
                };
                if pcm.len() <= self.frame_bytes {
                    return Decoded::One(Command::Audio(pcm));
                }
                Decoded::Many(self.frames(pcm).into_iter())
            }
            Message::Text(text) => Decoded::One(control(text.as_str())),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => Decoded::Nothing,
        }
    }

    fn channels(&self) -> usize {
        self.sessions
    }

    fn decode_channels(&self, msg: Message) -> Vec<(Option<usize>, Command)> {
        match msg {
            Message::Binary(bytes) => match self.planes(bytes) {
                Ok(planes) => planes
                    .into_iter()
                    .enumerate()
                    .flat_map(|(channel, pcm)| {
                        self.frames(pcm)
                            .into_iter()
                            .map(move |c| (Some(channel), c))
                    })
                    .collect(),
                Err(e) => vec![(None, Command::Reject(e))],
            },
            other => self.decode(other).map(|c| (None, c)).collect(),
        }
    }

    fn encode_channel(&self, channel: usize, ev: &Event) -> Vec<Message> {
        match ev {
            Event::Partial(t) => vec![self.results(t, false, channel)],
            Event::Final(t) => vec![self.results(t, true, channel)],
            other => self.encode(other),
        }
    }

    fn encode(&self, ev: &Event) -> Vec<Message> {
        match ev {
            Event::Partial(t) => vec![self.results(t, false, 0)],
            Event::Final(t) => vec![self.results(t, true, 0)],
            Event::Pong { .. } | Event::Finalized | Event::Reply(_) => Vec::new(),
            Event::Error(e) => vec![text(&json!({
                "type": "Error",
                "variant": e.kind.label().to_ascii_lowercase(),
                "code": e.kind.label(),
                "description": e.message,
                "message": e.message,
            }))],
            Event::SpeechStarted { at_ms } => vec![text(&json!({
                "type": "SpeechStarted",
                "channel": [0, 1],
                "timestamp": *at_ms as f64 / 1000.0,
            }))],
            Event::UtteranceEnd { last_word_end_ms } => vec![text(&json!({
                "type": "UtteranceEnd",
                "channel": [0, 1],
                "last_word_end": *last_word_end_ms as f64 / 1000.0,
            }))],
            Event::Status { state, message } => vec![text(&json!({
                "type": "GatewayStatus",
                "state": state.label(),
                "message": message,
            }))],
            Event::Close(cause) => vec![
                self.metadata(),
                super::v1::close_message(*cause, "end of stream"),
            ],
        }
    }

    fn close_code(cause: CloseCause) -> u16 {
        super::v1::close_code(cause)
    }
}

/// A client text message: `KeepAlive`, `Finalize` or `CloseStream`.
fn control(text: &str) -> Command {
    let kind = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string));
    match kind.as_deref() {
        Some("KeepAlive") => Command::KeepAlive,
        Some("Finalize") => Command::Finalize,
        Some("CloseStream") => Command::End,
        _ => Command::Reject(invalid(
            ErrorKind::InvalidRequest,
            "text messages must be JSON objects with a `type` of KeepAlive, Finalize or \
             CloseStream; this one was ignored",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_decodes_to_the_reference_values() {
        // Silence and the extremes of each law.
        assert_eq!(ulaw(0xFF), 0);
        assert_eq!(ulaw(0x7F), 0);
        assert_eq!(ulaw(0x80), 32_124);
        assert_eq!(ulaw(0x00), -32_124);
        assert_eq!(alaw(0xD5), 8);
        assert_eq!(alaw(0x55), -8);
        assert_eq!(alaw(0xAA), 32_256);
        assert_eq!(alaw(0x2A), -32_256);
    }

    #[test]
    fn control_messages() {
        assert_eq!(control(r#"{"type":"KeepAlive"}"#), Command::KeepAlive);
        assert_eq!(control(r#"{"type":"Finalize"}"#), Command::Finalize);
        assert_eq!(control(r#"{"type":"CloseStream"}"#), Command::End);
        assert!(matches!(control("nope"), Command::Reject(_)));
    }

    #[test]
    fn the_readme_lists_every_parameter_accepted_and_not_honoured() {
        let readme = include_str!("../../../../../README.md");
        for p in IGNORED_PARAMETERS {
            assert!(
                readme.contains(&format!("`{p}`")),
                "README does not list `{p}`"
            );
        }
    }

    #[test]
    fn words_are_normalised_and_keep_their_punctuated_form() {
        assert_eq!(normalised("Hello,"), "hello");
        assert_eq!(normalised("don't."), "don't");
        // Whatever borrows, or not, spells the word as trimming and `to_lowercase` do.
        for w in [
            "hello",
            "Hello",
            "w12",
            "...",
            "",
            "a-b",
            "«Ça»",
            "école",
            "ÉCOLE",
            "straße",
            "ǅemal",
            "ǆemal",
            "ΣΑΣ.",
            "σας",
            "İstanbul",
            "ı",
            "日本",
            "Ⅻ",
            "ǈ",
            "'tis",
        ] {
            let reference = w
                .trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
                .to_lowercase();
            assert_eq!(normalised(w), reference, "{w:?}");
        }
        assert!(matches!(normalised("hello,"), Cow::Borrowed("hello")));
        assert!(matches!(normalised("école"), Cow::Borrowed("école")));
        assert!(matches!(normalised("Hello"), Cow::Owned(_)));
    }
}
