//! NVIDIA Riva adapter: `nvidia.riva.asr.RivaSpeechRecognition/StreamingRecognize`.
//!
//! `riva.connections` tonic channels per back end, taken in turn by new streams (HTTP/2
//! multiplexes the sessions' streams on each; see [`grpc::ChannelPool`]). The first
//! request of a stream carries only the `StreamingRecognitionConfig`; every later request
//! only `audio_content`. Word time offsets are always requested: the session needs word
//! end times to know where a final ends, so that a stream can be reopened at an utterance
//! boundary without losing or repeating audio. The client only sees words if it asked.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::grpc::{self, ChannelPool};
use futures::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::proto::grpc::health::v1::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use super::proto::nvidia::riva::AudioEncoding;
use super::proto::nvidia::riva::asr::{
    EndpointingConfig, RecognitionConfig, RivaSpeechRecognitionConfigRequest,
    SpeakerDiarizationConfig, SpeechContext, StreamingRecognitionConfig,
    StreamingRecognitionResult, StreamingRecognizeRequest, StreamingRecognizeResponse,
    riva_speech_recognition_client::RivaSpeechRecognitionClient, streaming_recognize_request,
};
use super::{
    AudioStream, BackendError, EventStream, Health, RecognitionParams, SpeechBackend, StreamWord,
    TranscriptEvent,
};
use crate::config::{BackendUrl, RivaSettings};

/// Most speakers Riva is asked to tell apart when a client asks for diarization.
const MAX_SPEAKERS: i32 = 8;

/// A Riva server, reached over `riva.connections` lazily connected channels.
pub struct RivaBackend {
    name: String,
    channels: ChannelPool,
    /// `RecognitionConfig.model`; empty lets Riva pick its default for the language.
    model: String,
    settings: RivaSettings,
}

impl RivaBackend {
    pub fn new(url: &BackendUrl, settings: &RivaSettings) -> Result<Self, BackendError> {
        Ok(RivaBackend {
            name: url.url.clone(),
            channels: ChannelPool::new(url, settings.connect_timeout, settings.connections)?,
            model: url.model.clone().unwrap_or_default(),
            settings: settings.clone(),
        })
    }

    fn streaming_config(&self, p: &RecognitionParams) -> StreamingRecognitionConfig {
        let language = if p.language.eq_ignore_ascii_case("auto") {
            self.settings.auto_language.clone()
        } else {
            p.language.clone()
        };
        StreamingRecognitionConfig {
            config: Some(RecognitionConfig {
                encoding: AudioEncoding::LinearPcm as i32,
                sample_rate_hertz: p.sample_rate_hz as i32,
                language_code: language,
                max_alternatives: 1,
                profanity_filter: p.profanity_filter,
                audio_channel_count: 1,
                enable_word_time_offsets: true,
                enable_automatic_punctuation: p.punctuate,
                model: self.model.clone(),
                custom_configuration: p.custom.iter().cloned().collect::<HashMap<_, _>>(),
                speech_contexts: speech_contexts(&p.phrases),
                diarization_config: p.diarize.then_some(SpeakerDiarizationConfig {
                    enable_speaker_diarization: true,
                    max_speaker_count: MAX_SPEAKERS,
                }),
                endpointing_config: p.endpointing_ms.map(|ms| EndpointingConfig {
                    stop_history: Some(ms as i32),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            // Always on, whatever the client asked: interim results are Riva's heartbeat
            // (stall detection); the session drops partials the client did not ask for.
            interim_results: true,
        }
    }
}

#[async_trait]
impl SpeechBackend for RivaBackend {
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
        let first = StreamingRecognizeRequest {
            streaming_request: Some(
                streaming_recognize_request::StreamingRequest::StreamingConfig(
                    self.streaming_config(&params),
                ),
            ),
            ..Default::default()
        };
        let requests = RequestStream {
            first: Some(first),
            audio,
        };
        let channel = grpc::ready(self.channels.next(), self.settings.open_timeout).await?;
        Ok(ResultStream::Calling(Box::pin(call(channel, requests))).boxed())
    }

    fn max_stream_age(&self) -> Option<Duration> {
        Some(self.settings.max_stream_age)
    }

    async fn health(&self) -> Health {
        let timeout = self.settings.health_timeout;
        let mut health = HealthClient::new(self.channels.first().clone());
        let check = tokio::time::timeout(
            timeout,
            health.check(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await;
        match check {
            Err(_) => return Health::Down(format!("health check timed out after {timeout:?}")),
            Ok(Ok(resp)) => {
                return match resp.into_inner().status() {
                    ServingStatus::Serving => self.model_listed(timeout).await,
                    other => Health::Down(format!("health status {}", other.as_str_name())),
                };
            }
            Ok(Err(status)) if status.code() == Code::Unimplemented => {}
            Ok(Err(status)) => {
                return Health::Down(format!("health check failed: {}", status.code()));
            }
        }
        self.model_listed(timeout).await
    }
}

impl RivaBackend {
    /// Asks Riva which models it serves; up when the call works and, if this back end
    /// names a model, that model is among them.
    async fn model_listed(&self, timeout: Duration) -> Health {
        let mut client = RivaSpeechRecognitionClient::new(self.channels.first().clone());
        let call = client.get_riva_speech_recognition_config(RivaSpeechRecognitionConfigRequest {
            model_name: String::new(),
        });
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Health::Down(format!("model list timed out after {timeout:?}")),
            Ok(Err(status)) => Health::Down(format!("model list failed: {}", status.code())),
            Ok(Ok(resp)) => {
                let models = resp.into_inner().model_config;
                if self.model.is_empty() || models.iter().any(|m| m.model_name == self.model) {
                    Health::Up
                } else {
                    Health::Down(format!("model `{}` is not served", self.model))
                }
            }
        }
    }
}

/// The request side of a stream: the config first, then one request per audio chunk.
/// A named type rather than combinators: it keeps the open future provably `Send`.
struct RequestStream {
    first: Option<StreamingRecognizeRequest>,
    audio: AudioStream,
}

impl futures::Stream for RequestStream {
    type Item = StreamingRecognizeRequest;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return std::task::Poll::Ready(Some(first));
        }
        self.audio.poll_next_unpin(cx).map(|chunk| {
            chunk.map(|c| StreamingRecognizeRequest {
                streaming_request: Some(
                    streaming_recognize_request::StreamingRequest::AudioContent(c),
                ),
                ..Default::default()
            })
        })
    }
}

/// Maps one message of the response stream to the events it carries, in Riva's order:
/// one event per result of channel 0 or 1 (a response with none of those is a progress
/// event, which proves the stream alive), or the status mapped to a [`BackendError`].
/// Public so that the fuzz targets (`fuzz/`) drive the same code as the adapter.
pub fn map_response(
    item: Result<StreamingRecognizeResponse, Status>,
) -> Vec<Result<TranscriptEvent, BackendError>> {
    match item {
        Ok(resp) => {
            let now = Instant::now();
            let events: Vec<_> = resp
                .results
                .into_iter()
                .filter(|r| r.channel_tag <= 1)
                .map(|r| Ok(map_result(r, now)))
                .collect();
            if events.is_empty() {
                vec![Ok(TranscriptEvent::progress(now))]
            } else {
                events
            }
        }
        Err(status) => vec![Err(grpc::map_status(status))],
    }
}

type Call = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    tonic::Response<tonic::Streaming<StreamingRecognizeResponse>>,
                    Status,
                >,
            > + Send,
    >,
>;

/// A stream's codec buffers: tonic's default is 8 KiB each way per stream, held for the
/// stream's life. Its messages are one audio frame up (3.2 KB at 100 ms) and results down
/// (hundreds of bytes; a few KB for a long utterance's words): 2 KiB to start, grown by the
/// codec as a message needs (docs/measurements.md, "Relays side by side": memory).
const STREAM_BUFFER: usize = 2 * 1024;
/// tonic's default: how much the encoder batches before it yields.
const STREAM_YIELD: usize = 32 * 1024;

/// Prost's codec for `StreamingRecognize` with [`STREAM_BUFFER`] buffers.
#[derive(Debug, Clone, Copy, Default)]
struct StreamCodec;

impl tonic::codec::Codec for StreamCodec {
    type Encode = StreamingRecognizeRequest;
    type Decode = StreamingRecognizeResponse;
    type Encoder = tonic_prost::ProstEncoder<StreamingRecognizeRequest>;
    type Decoder = tonic_prost::ProstDecoder<StreamingRecognizeResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(tonic::codec::BufferSettings::new(
            STREAM_BUFFER,
            STREAM_YIELD,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(tonic::codec::BufferSettings::new(
            STREAM_BUFFER,
            STREAM_YIELD,
        ))
    }
}

/// `StreamingRecognize` as the generated client calls it, with [`StreamCodec`].
async fn call(
    channel: Channel,
    requests: RequestStream,
) -> Result<tonic::Response<tonic::Streaming<StreamingRecognizeResponse>>, Status> {
    let mut grpc =
        tonic::client::Grpc::new(channel).max_decoding_message_size(grpc::MAX_MESSAGE_BYTES);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_static(
        "/nvidia.riva.asr.RivaSpeechRecognition/StreamingRecognize",
    );
    let mut request = tonic::IntoStreamingRequest::into_streaming_request(requests);
    request.extensions_mut().insert(tonic::GrpcMethod::new(
        "nvidia.riva.asr.RivaSpeechRecognition",
        "StreamingRecognize",
    ));
    grpc.streaming(request, path, StreamCodec).await
}

/// The response side: first the call (until Riva's response headers), then its results,
/// several per response message possible. A named state machine for the same reason as
/// [`RequestStream`].
enum ResultStream {
    Calling(Call),
    Streaming {
        inner: Box<tonic::Streaming<StreamingRecognizeResponse>>,
        pending: std::collections::VecDeque<Result<TranscriptEvent, BackendError>>,
    },
    Done,
}

impl futures::Stream for ResultStream {
    type Item = Result<TranscriptEvent, BackendError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        loop {
            match &mut *self {
                ResultStream::Calling(fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(resp)) => {
                        *self = ResultStream::Streaming {
                            inner: Box::new(resp.into_inner()),
                            pending: Default::default(),
                        };
                    }
                    Poll::Ready(Err(status)) => {
                        *self = ResultStream::Done;
                        return Poll::Ready(Some(Err(grpc::map_status(status))));
                    }
                },
                ResultStream::Streaming { inner, pending } => {
                    if let Some(item) = pending.pop_front() {
                        return Poll::Ready(Some(item));
                    }
                    match inner.poll_next_unpin(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(None) => {
                            *self = ResultStream::Done;
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Some(item)) => pending.extend(map_response(item)),
                    }
                }
                ResultStream::Done => return Poll::Ready(None),
            }
        }
    }
}

/// Maps one Riva result. Riva word times are integer milliseconds of the stream;
/// `audio_processed` is seconds of the stream.
pub(crate) fn map_result(r: StreamingRecognitionResult, received_at: Instant) -> TranscriptEvent {
    // Taken by value: the words' strings move into the event (a partial of a long
    // utterance carries every word so far; copying them per result would cost in
    // proportion to the utterance).
    let (text, confidence, words) = match r.alternatives.into_iter().next() {
        Some(alt) => {
            let mut text = alt.transcript;
            super::trim_in_place(&mut text);
            let words = alt
                .words
                .into_iter()
                .map(|w| StreamWord {
                    start_ms: w.start_time.max(0) as u64,
                    end_ms: w.end_time.max(w.start_time).max(0) as u64,
                    confidence: w.confidence,
                    // Riva labels speakers from 1; 0 means "no label".
                    speaker: (w.speaker_tag > 0).then_some(w.speaker_tag as u32),
                    word: w.word,
                })
                .collect();
            (text, alt.confidence, words)
        }
        None => (String::new(), 0.0, Vec::new()),
    };
    TranscriptEvent {
        is_final: r.is_final,
        text,
        confidence,
        stability: r.stability,
        audio_processed_ms: (r.audio_processed > 0.0)
            .then(|| (f64::from(r.audio_processed) * 1000.0).round() as u64),
        words,
        received_at,
        local: false,
        notice: None,
    }
}

/// Phrase hints as Riva takes them: one speech context per boost, in first-seen order.
fn speech_contexts(phrases: &[(String, f32)]) -> Vec<SpeechContext> {
    let mut contexts: Vec<SpeechContext> = Vec::new();
    for (phrase, boost) in phrases {
        match contexts.iter_mut().find(|c| c.boost == *boost) {
            Some(c) => c.phrases.push(phrase.clone()),
            None => contexts.push(SpeechContext {
                phrases: vec![phrase.clone()],
                boost: *boost,
            }),
        }
    }
    contexts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::proto::nvidia::riva::asr::{SpeechRecognitionAlternative, WordInfo};

    fn settings() -> RivaSettings {
        RivaSettings {
            sample_rate: 16_000,
            auto_language: "en-US".into(),
            max_stream_age: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(1),
            open_timeout: Duration::from_secs(1),
            health_timeout: Duration::from_secs(1),
            connections: 1,
        }
    }

    fn params() -> RecognitionParams {
        RecognitionParams {
            language: "auto".into(),
            sample_rate_hz: 16_000,
            punctuate: true,
            profanity_filter: true,
            interim_results: true,
            endpointing_ms: Some(700),
            custom: vec![("k".into(), "v".into())],
            phrases: vec![
                ("alpha".into(), 2.0),
                ("beta gamma".into(), 2.0),
                ("delta".into(), 10.0),
            ],
            diarize: true,
        }
    }

    #[tokio::test]
    async fn config_passes_the_client_settings_through() {
        let url = BackendUrl::parse("riva://127.0.0.1:1/parakeet-ctc").unwrap();
        let b = RivaBackend::new(&url, &settings()).unwrap();
        let c = b.streaming_config(&params());
        assert!(c.interim_results);
        let rc = c.config.unwrap();
        assert_eq!(rc.encoding, AudioEncoding::LinearPcm as i32);
        assert_eq!(rc.sample_rate_hertz, 16_000);
        assert_eq!(rc.language_code, "en-US", "auto maps to riva.auto_language");
        assert!(rc.enable_automatic_punctuation && rc.profanity_filter);
        assert!(rc.enable_word_time_offsets);
        assert_eq!(rc.model, "parakeet-ctc");
        assert_eq!(
            rc.custom_configuration.get("k").map(String::as_str),
            Some("v")
        );
        assert_eq!(rc.endpointing_config.unwrap().stop_history, Some(700));
        // Phrase hints: one speech context per boost, phrases in the order given.
        let contexts: Vec<(Vec<String>, f32)> = rc
            .speech_contexts
            .iter()
            .map(|c| (c.phrases.clone(), c.boost))
            .collect();
        assert_eq!(
            contexts,
            vec![
                (vec!["alpha".to_string(), "beta gamma".to_string()], 2.0),
                (vec!["delta".to_string()], 10.0)
            ]
        );
        let diarization = rc.diarization_config.unwrap();
        assert!(diarization.enable_speaker_diarization);
        assert_eq!(diarization.max_speaker_count, MAX_SPEAKERS);
        let mut p = params();
        p.language = "de-DE".into();
        p.endpointing_ms = None;
        p.diarize = false;
        let rc = b.streaming_config(&p).config.unwrap();
        assert_eq!(rc.language_code, "de-DE");
        assert!(
            rc.diarization_config.is_none(),
            "no diarization unless asked"
        );
        assert!(rc.endpointing_config.is_none());
    }

    #[test]
    fn results_map_words_in_ms_and_audio_processed_in_seconds() {
        let r = StreamingRecognitionResult {
            alternatives: vec![SpeechRecognitionAlternative {
                transcript: " hello world ".into(),
                confidence: 0.9,
                words: vec![
                    WordInfo {
                        start_time: 100,
                        end_time: 400,
                        word: "hello".into(),
                        confidence: 0.8,
                        ..Default::default()
                    },
                    WordInfo {
                        start_time: 500,
                        end_time: 450,
                        word: "world".into(),
                        confidence: 0.7,
                        speaker_tag: 2,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            is_final: true,
            stability: 0.0,
            audio_processed: 1.25,
            ..Default::default()
        };
        let e = map_result(r, Instant::now());
        assert!(e.is_final);
        assert_eq!(e.text, "hello world");
        assert_eq!(e.audio_processed_ms, Some(1250));
        assert_eq!(e.words[0].start_ms, 100);
        assert_eq!(e.words[0].end_ms, 400);
        assert_eq!((e.words[0].speaker, e.words[1].speaker), (None, Some(2)));
        assert_eq!(
            e.words[1].end_ms, 500,
            "an end before the start is clamped to the start"
        );
        let empty = map_result(StreamingRecognitionResult::default(), Instant::now());
        assert_eq!(empty.text, "");
        assert_eq!(empty.audio_processed_ms, None);
    }
}
