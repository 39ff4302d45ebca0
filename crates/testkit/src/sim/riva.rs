//! The sim's Riva streams, on the Riva skeleton ([`crate::skeleton::riva`]).
//!
//! A stream's first request carries the config (its `sample_rate_hertz` times the words);
//! every audio request is answered by one response: the finals it completed and, if the
//! utterance has words and the client asked for interim results, a partial (stability
//! 0.5) — or no result at all, which still tells the gateway the stream is alive. At the
//! half-close the pending words become a last final and the stream ends. Word times are
//! integer milliseconds of the stream, `audio_processed` seconds of the stream.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Status, Streaming};

use super::driver::{self, Responder};
use super::recognizer::{Recognizer, RecognizerConfig, Word};
use super::{Behaviour, SimOptions};
use crate::skeleton::riva::{self, RivaStreams};
use crate::skeleton::{ResponseStream, ServerOptions};
use sgw_proto::grpc::health::v1::health_check_response::ServingStatus;
use sgw_proto::nvidia::riva::asr::riva_speech_recognition_config_response::Config;
use sgw_proto::nvidia::riva::asr::streaming_recognize_request::StreamingRequest;
use sgw_proto::nvidia::riva::asr::{
    SpeechRecognitionAlternative, StreamingRecognitionResult, StreamingRecognizeRequest,
    StreamingRecognizeResponse, WordInfo,
};

/// Serves Riva and its health service on `listener` until `shutdown` resolves.
pub async fn serve_riva(
    listener: TcpListener,
    options: SimOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let behaviour = options.behaviour;
    let health = match behaviour {
        Behaviour::Unavailable => ServingStatus::NotServing,
        Behaviour::Normal | Behaviour::Hang | Behaviour::Slow(_) | Behaviour::FailAfter(_) => {
            ServingStatus::Serving
        }
    };
    // The process's behaviour is fixed: the sender is dropped, the status stays.
    let (_, health) = watch::channel(health);
    let sim = RivaSim {
        behaviour,
        model: options.riva_model.clone(),
        recognizer: options.recognizer_config(),
    };
    let transport = ServerOptions {
        connection_window: Some(super::CONNECTION_WINDOW),
        ..ServerOptions::default()
    };
    riva::serve(listener, sim, health, &transport, shutdown).await
}

struct RivaSim {
    behaviour: Behaviour,
    model: String,
    recognizer: Arc<RecognizerConfig>,
}

#[tonic::async_trait]
impl RivaStreams for RivaSim {
    async fn stream(
        &self,
        request: Request<Streaming<StreamingRecognizeRequest>>,
    ) -> Result<ResponseStream<StreamingRecognizeResponse>, Status> {
        if self.behaviour == Behaviour::Unavailable {
            return Err(driver::unavailable());
        }
        let responder = RivaStream {
            config: self.recognizer.clone(),
            recognizer: None,
            interim_results: true,
        };
        Ok(driver::respond(
            request.into_inner(),
            responder,
            self.behaviour,
        ))
    }

    fn model(&self) -> Result<Config, Status> {
        if self.behaviour == Behaviour::Unavailable {
            return Err(driver::unavailable());
        }
        let parameters = [("type", "online"), ("sample_rate", "16000")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Config {
            model_name: self.model.clone(),
            parameters,
        })
    }
}

/// One `StreamingRecognize` call.
struct RivaStream {
    config: Arc<RecognizerConfig>,
    /// Set by the first request (the config).
    recognizer: Option<Recognizer>,
    interim_results: bool,
}

impl Responder for RivaStream {
    type Request = StreamingRecognizeRequest;
    type Response = StreamingRecognizeResponse;

    fn request(
        &mut self,
        req: StreamingRecognizeRequest,
        out: &mut Vec<StreamingRecognizeResponse>,
    ) -> Result<(), Status> {
        let (audio, recognizer) = match (req.streaming_request, &mut self.recognizer) {
            (Some(StreamingRequest::StreamingConfig(c)), None) => {
                let rate = c
                    .config
                    .as_ref()
                    .map(|rc| rc.sample_rate_hertz)
                    .filter(|r| *r > 0)
                    .unwrap_or(16_000);
                self.interim_results = c.interim_results;
                self.recognizer = Some(Recognizer::new(self.config.clone(), rate as u32));
                return Ok(());
            }
            (Some(StreamingRequest::StreamingConfig(_)), Some(_)) => {
                return Err(Status::invalid_argument(
                    "only the first request may carry a config",
                ));
            }
            (Some(StreamingRequest::AudioContent(audio)), Some(r)) => (audio, r),
            (_, None) => {
                return Err(Status::invalid_argument(
                    "the first request must carry the config",
                ));
            }
            (None, Some(_)) => return Err(Status::invalid_argument("an empty request")),
        };
        let mut results: Vec<StreamingRecognitionResult> = recognizer
            .push(&audio)
            .iter()
            .map(|words| result(words, true, recognizer.audio_ms()))
            .collect();
        if self.interim_results && !recognizer.pending().is_empty() {
            results.push(result(recognizer.pending(), false, recognizer.audio_ms()));
        }
        out.push(StreamingRecognizeResponse {
            results,
            ..Default::default()
        });
        Ok(())
    }

    fn half_close(&mut self, out: &mut Vec<StreamingRecognizeResponse>) {
        let Some(recognizer) = self.recognizer.as_mut() else {
            return;
        };
        let results: Vec<_> = recognizer
            .finish()
            .iter()
            .map(|words| result(words, true, recognizer.audio_ms()))
            .collect();
        if !results.is_empty() {
            out.push(StreamingRecognizeResponse {
                results,
                ..Default::default()
            });
        }
    }

    fn audio_ms(&self) -> u64 {
        self.recognizer.as_ref().map_or(0, Recognizer::audio_ms)
    }
}

/// A final (confidence 1) or a partial (stability 0.5) of `words`.
fn result(words: &[Word], is_final: bool, audio_ms: u64) -> StreamingRecognitionResult {
    let confidence = if is_final { 1.0 } else { 0.0 };
    let transcript = words
        .iter()
        .map(|w| w.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    StreamingRecognitionResult {
        alternatives: vec![SpeechRecognitionAlternative {
            transcript,
            confidence,
            words: words
                .iter()
                .map(|w| WordInfo {
                    start_time: ms_i32(w.start_ms),
                    end_time: ms_i32(w.end_ms),
                    word: w.text.clone(),
                    confidence,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        is_final,
        stability: if is_final { 0.0 } else { 0.5 },
        audio_processed: audio_ms as f32 / 1000.0,
        ..Default::default()
    }
}

/// Riva's times are `int32` milliseconds (24 days: a stream never gets there).
fn ms_i32(ms: u64) -> i32 {
    i32::try_from(ms).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::marker::marker_audio;
    use sgw_proto::nvidia::riva::asr::{RecognitionConfig, StreamingRecognitionConfig};

    fn stream(interim_results: bool) -> RivaStream {
        let mut s = RivaStream {
            config: SimOptions::default().recognizer_config(),
            recognizer: None,
            interim_results: true,
        };
        let config = StreamingRecognizeRequest {
            streaming_request: Some(StreamingRequest::StreamingConfig(
                StreamingRecognitionConfig {
                    config: Some(RecognitionConfig {
                        sample_rate_hertz: 8_000,
                        ..Default::default()
                    }),
                    interim_results,
                },
            )),
            ..Default::default()
        };
        let mut out = Vec::new();
        s.request(config, &mut out).unwrap();
        assert!(out.is_empty(), "the config is not answered");
        s
    }

    fn audio(pcm: Vec<u8>) -> StreamingRecognizeRequest {
        StreamingRecognizeRequest {
            streaming_request: Some(StreamingRequest::AudioContent(pcm.into())),
            ..Default::default()
        }
    }

    #[test]
    fn every_audio_request_is_answered_at_the_configured_rate() {
        let mut s = stream(true);
        let mut out = Vec::new();
        // 8 kHz: 800 samples are 100 ms
        s.request(audio(marker_audio(1, 1, 800)), &mut out).unwrap();
        s.request(audio(marker_audio(2, 1, 800)), &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out[0].results.is_empty(), "nothing to say yet: a heartbeat");
        let partial = &out[1].results[0];
        assert!(!partial.is_final);
        assert_eq!(partial.stability, 0.5);
        assert_eq!(partial.audio_processed, 0.2);
        let alt = &partial.alternatives[0];
        assert_eq!(alt.transcript, "w1");
        assert_eq!((alt.words[0].start_time, alt.words[0].end_time), (0, 100));
        out.clear();
        s.half_close(&mut out);
        let last = &out[0].results[0];
        assert!(last.is_final);
        assert_eq!(last.alternatives[0].transcript, "w1 w2");
        assert_eq!(last.alternatives[0].words[1].confidence, 1.0);
    }

    #[test]
    fn without_interim_results_the_answer_is_empty() {
        let mut s = stream(false);
        let mut out = Vec::new();
        s.request(audio(marker_audio(1, 2, 800)), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].results.is_empty());
    }

    #[test]
    fn the_config_comes_first_and_only_once() {
        let mut s = RivaStream {
            config: SimOptions::default().recognizer_config(),
            recognizer: None,
            interim_results: true,
        };
        let err = s.request(audio(vec![0; 4]), &mut Vec::new()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let mut s = stream(true);
        let again = StreamingRecognizeRequest {
            streaming_request: Some(StreamingRequest::StreamingConfig(Default::default())),
            ..Default::default()
        };
        assert!(s.request(again, &mut Vec::new()).is_err());
    }
}
