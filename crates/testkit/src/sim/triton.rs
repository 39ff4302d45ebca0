//! The sim's Triton model, on the Triton skeleton ([`crate::skeleton::triton`]): one model
//! that follows the README's tensor contract in its streaming shape (decoupled, sequence batching), so
//! the gateway's adapter picks `ModelStreamInfer`.
//!
//! Each request of a stream is one chunk of a sequence: `sequence_start` begins it afresh,
//! `sequence_end` finalises it. A request gets the finals its audio completed, then (if it
//! carried audio and the utterance has words) a partial, then the empty response flagged
//! `triton_final_response` that marks it complete; the `sequence_end` request's pending
//! words become a final before that. A failed request gets an `error_message` response
//! and the stream stays open, as with Triton. The outputs honour the batch dimension of
//! the request's `AUDIO` (`[n]` → `[1]`, `[1, n]` → `[1, 1]`).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::net::TcpListener;
use tonic::{Status, Streaming};

use super::driver::{self, Responder};
use super::recognizer::{Recognizer, RecognizerConfig, Word};
use super::{Behaviour, SimOptions};
use crate::skeleton::triton::{self, TritonModel, completion, contract_config};
use crate::skeleton::{ResponseStream, ServerOptions};
use sgw_proto::inference::infer_parameter::ParameterChoice;
use sgw_proto::inference::model_infer_response::InferOutputTensor;
use sgw_proto::inference::{
    InferParameter, ModelConfig, ModelInferRequest, ModelInferResponse, ModelStreamInferResponse,
};
use speech_gateway::backend::triton::tensors::{self, bytes_tensor};

/// The idle limit the model declares; the adapter keeps sequences alive at half of it.
const MAX_SEQUENCE_IDLE_US: u64 = 60_000_000;

/// Serves the KServe v2 service on `listener` until `shutdown` resolves.
pub async fn serve_triton(
    listener: TcpListener,
    options: SimOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let sim = TritonSim {
        behaviour: options.behaviour,
        config: contract_config(&options.triton_model, "sim", Some(MAX_SEQUENCE_IDLE_US)),
        sample_rate_hz: options.triton_sample_rate_hz,
        recognizer: options.recognizer_config(),
    };
    let transport = ServerOptions {
        connection_window: Some(super::CONNECTION_WINDOW),
        ..ServerOptions::default()
    };
    triton::serve(listener, sim, &transport, shutdown).await
}

struct TritonSim {
    behaviour: Behaviour,
    config: ModelConfig,
    sample_rate_hz: u32,
    recognizer: Arc<RecognizerConfig>,
}

#[tonic::async_trait]
impl TritonModel for TritonSim {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn ready(&self) -> Result<(), Status> {
        if self.behaviour == Behaviour::Unavailable {
            return Err(driver::unavailable());
        }
        Ok(())
    }

    async fn infer(&self, _: ModelInferRequest) -> Result<ModelInferResponse, Status> {
        Err(Status::unimplemented(
            "the sim's model is decoupled: use ModelStreamInfer",
        ))
    }

    async fn stream(
        &self,
        requests: Streaming<ModelInferRequest>,
    ) -> Result<ResponseStream<ModelStreamInferResponse>, Status> {
        let responder = TritonStream {
            model: self.config.name.clone(),
            recognizer: Recognizer::new(self.recognizer.clone(), self.sample_rate_hz),
            config: self.recognizer.clone(),
            sample_rate_hz: self.sample_rate_hz,
            sequence: None,
        };
        Ok(driver::respond(requests, responder, self.behaviour))
    }
}

/// One `ModelStreamInfer` call.
struct TritonStream {
    model: String,
    config: Arc<RecognizerConfig>,
    sample_rate_hz: u32,
    recognizer: Recognizer,
    /// The sequence in progress.
    sequence: Option<u64>,
}

impl Responder for TritonStream {
    type Request = ModelInferRequest;
    type Response = ModelStreamInferResponse;

    fn request(
        &mut self,
        req: ModelInferRequest,
        out: &mut Vec<ModelStreamInferResponse>,
    ) -> Result<(), Status> {
        match self.answer(&req) {
            Ok(responses) => out.extend(responses.into_iter().map(|r| ModelStreamInferResponse {
                error_message: String::new(),
                infer_response: Some(r),
            })),
            Err(message) => out.push(ModelStreamInferResponse {
                error_message: message,
                infer_response: None,
            }),
        }
        Ok(())
    }

    fn half_close(&mut self, _: &mut Vec<ModelStreamInferResponse>) {}

    fn audio_ms(&self) -> u64 {
        self.recognizer.audio_ms()
    }
}

impl TritonStream {
    /// The responses to one request, or why it failed (Triton's `error_message`).
    fn answer(&mut self, req: &ModelInferRequest) -> Result<Vec<ModelInferResponse>, String> {
        if req.model_name != self.model {
            return Err(format!("unknown model `{}`", req.model_name));
        }
        let sequence = match req.parameters.get("sequence_id").map(choice) {
            Some(Some(ParameterChoice::Int64Param(id))) if id > 0 => id as u64,
            Some(Some(ParameterChoice::Uint64Param(id))) if id > 0 => id,
            _ => return Err("a sequence model needs a positive `sequence_id`".into()),
        };
        let (audio, batched) = audio_of(req)?;
        if flag(req, "sequence_start") {
            self.recognizer = Recognizer::new(self.config.clone(), self.sample_rate_hz);
            self.sequence = Some(sequence);
        } else if self.sequence != Some(sequence) {
            return Err(format!("sequence {sequence} was not started"));
        }
        let out = Outputs::requested(req, batched);
        let mut responses: Vec<ModelInferResponse> = self
            .recognizer
            .push(&audio)
            .iter()
            .map(|words| out.response(&req.id, words, true))
            .collect();
        if flag(req, "sequence_end") {
            let last = self.recognizer.finish();
            responses.extend(last.iter().map(|words| out.response(&req.id, words, true)));
            self.sequence = None;
        } else if !audio.is_empty() && !self.recognizer.pending().is_empty() {
            responses.push(out.response(&req.id, self.recognizer.pending(), false));
        }
        responses.push(completion(&req.model_name, &req.id));
        Ok(responses)
    }
}

fn choice(p: &InferParameter) -> Option<ParameterChoice> {
    p.parameter_choice.clone()
}

fn flag(req: &ModelInferRequest, name: &str) -> bool {
    matches!(
        req.parameters.get(name).and_then(choice),
        Some(ParameterChoice::BoolParam(true))
    )
}

/// The request's `AUDIO` bytes and whether it carries a batch dimension.
fn audio_of(req: &ModelInferRequest) -> Result<(Bytes, bool), String> {
    let Some(index) = req.inputs.iter().position(|i| i.name == tensors::AUDIO) else {
        return Err("no input AUDIO".into());
    };
    let input = &req.inputs[index];
    if input.datatype != "INT16" {
        return Err(format!("input AUDIO is {}, not INT16", input.datatype));
    }
    let batched = match input.shape.as_slice() {
        [_] => false,
        [1, _] => true,
        other => {
            return Err(format!(
                "input AUDIO has shape {other:?}, not [n] or [1, n]"
            ));
        }
    };
    let audio = match req.raw_input_contents.get(index) {
        Some(raw) => raw.clone(),
        None => input
            .contents
            .as_ref()
            .map(|c| {
                c.int_contents
                    .iter()
                    .flat_map(|s| (*s as i16).to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into()
            })
            .unwrap_or_default(),
    };
    Ok((audio, batched))
}

/// Which outputs a request asked for (all when it names none), and their shape.
struct Outputs {
    names: Vec<&'static str>,
    shape: Vec<i64>,
}

#[derive(Serialize)]
struct JsonWord<'a> {
    word: &'a str,
    start: f64,
    end: f64,
    confidence: f32,
}

impl Outputs {
    fn requested(req: &ModelInferRequest, batched: bool) -> Outputs {
        let all = [
            tensors::TRANSCRIPT,
            tensors::IS_FINAL,
            tensors::WORDS,
            tensors::CONFIDENCE,
        ];
        let names = all
            .into_iter()
            .filter(|n| req.outputs.is_empty() || req.outputs.iter().any(|o| o.name == *n))
            .collect();
        let shape = if batched { vec![1, 1] } else { vec![1] };
        Outputs { names, shape }
    }

    /// A result response: the words, as a final (confidence 1) or a partial.
    fn response(&self, id: &str, words: &[Word], is_final: bool) -> ModelInferResponse {
        let confidence: f32 = if is_final { 1.0 } else { 0.0 };
        let mut outputs = Vec::with_capacity(self.names.len());
        let mut raw = Vec::with_capacity(self.names.len());
        for name in &self.names {
            let (datatype, bytes) = match *name {
                tensors::TRANSCRIPT => {
                    let text = words
                        .iter()
                        .map(|w| w.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" ");
                    ("BYTES", bytes_tensor(&[text.as_bytes()]))
                }
                tensors::IS_FINAL => ("BOOL", Bytes::from(vec![u8::from(is_final)])),
                tensors::WORDS => {
                    let list: Vec<JsonWord> = words
                        .iter()
                        .map(|w| JsonWord {
                            word: &w.text,
                            start: w.start_ms as f64 / 1000.0,
                            end: w.end_ms as f64 / 1000.0,
                            confidence,
                        })
                        .collect();
                    let json = serde_json::to_vec(&list).unwrap_or_default();
                    ("BYTES", bytes_tensor(&[&json]))
                }
                _ => ("FP32", Bytes::copy_from_slice(&confidence.to_le_bytes())),
            };
            outputs.push(InferOutputTensor {
                name: (*name).into(),
                datatype: datatype.into(),
                shape: self.shape.clone(),
                ..Default::default()
            });
            raw.push(bytes);
        }
        ModelInferResponse {
            id: id.into(),
            outputs,
            raw_output_contents: raw,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::marker::marker_audio;
    use speech_gateway::backend::triton::shape_of;
    use speech_gateway::backend::triton::tensors::{
        SequenceFlags, audio_request, is_final_response,
    };
    use std::time::Instant;

    fn sim() -> TritonSim {
        let options = SimOptions::default();
        TritonSim {
            behaviour: Behaviour::Normal,
            config: contract_config(&options.triton_model, "sim", Some(MAX_SEQUENCE_IDLE_US)),
            sample_rate_hz: 16_000,
            recognizer: options.recognizer_config(),
        }
    }

    fn stream() -> TritonStream {
        let s = sim();
        TritonStream {
            model: s.config.name.clone(),
            config: s.recognizer.clone(),
            sample_rate_hz: 16_000,
            recognizer: Recognizer::new(s.recognizer, 16_000),
            sequence: None,
        }
    }

    fn request(id: u64, pcm: Vec<u8>, start: bool, end: bool, batched: bool) -> ModelInferRequest {
        audio_request(
            "asr_stream",
            id.to_string(),
            pcm.into(),
            &[],
            batched,
            Some(SequenceFlags {
                sequence_id: 7,
                start,
                end,
            }),
        )
    }

    #[test]
    fn the_adapter_reads_the_config_as_a_streaming_model() {
        let shape = shape_of(sim().config()).unwrap();
        assert!(matches!(
            shape,
            speech_gateway::backend::triton::ModelShape::Streaming { .. }
        ));
    }

    #[test]
    fn each_request_gets_its_results_then_its_completion() {
        let mut s = stream();
        let r = s
            .answer(&request(0, marker_audio(1, 2, 1600), true, false, true))
            .unwrap();
        assert_eq!(r.len(), 2, "a partial (w1), then the completion");
        assert_eq!(
            r[0].outputs[0].shape,
            vec![1, 1],
            "batched like the request"
        );
        let partial = tensors::read_result(&r[0], Instant::now())
            .unwrap()
            .unwrap();
        assert!(!partial.is_final);
        assert_eq!(partial.text, "w1");
        assert_eq!(
            (partial.words[0].start_ms, partial.words[0].end_ms),
            (0, 100)
        );
        assert!(is_final_response(&r[1]) && r[1].outputs.is_empty());
        assert_eq!(r[1].id, "0");

        let keepalive = s.answer(&request(1, vec![], false, false, true)).unwrap();
        assert_eq!(keepalive.len(), 1, "no audio: only the completion");

        let end = s.answer(&request(2, vec![], false, true, true)).unwrap();
        let last = tensors::read_result(&end[0], Instant::now())
            .unwrap()
            .unwrap();
        assert!(last.is_final);
        assert_eq!(last.text, "w1 w2");
        assert_eq!(last.confidence, 1.0);
        assert!(is_final_response(&end[1]));
    }

    #[test]
    fn bad_requests_are_named() {
        let mut s = stream();
        let err = s
            .answer(&request(0, vec![1, 0], false, false, false))
            .unwrap_err();
        assert!(err.contains("not started"), "{err}");
        let mut wrong = request(0, vec![], true, false, false);
        wrong.model_name = "other".into();
        assert!(s.answer(&wrong).unwrap_err().contains("unknown model"));
        let mut unsequenced = request(0, vec![], true, false, false);
        unsequenced.parameters.remove("sequence_id");
        assert!(s.answer(&unsequenced).unwrap_err().contains("sequence_id"));
    }
}
