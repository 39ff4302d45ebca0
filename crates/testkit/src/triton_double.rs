//! A Triton double for tests: the Triton skeleton ([`crate::skeleton::triton`]) on
//! 127.0.0.1:0, serving one model that follows the tensor contract in either shape.
//! - streaming (decoupled, sequence batching): per request, a partial once the sequence
//!   holds audio, a final (covering everything since the last) on `sequence_end` or every
//!   `final_every_ms`, then the empty response flagged `triton_final_response`;
//! - offline: one `ModelInfer` → one final "utterance N" whose one word spans the audio.
//!
//! Every request is recorded for the test to inspect; `fail_next` injects a model error.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sgw_proto::inference::infer_parameter::ParameterChoice;
use sgw_proto::inference::model_infer_response::InferOutputTensor;
use sgw_proto::inference::{
    InferParameter, ModelConfig, ModelInferRequest, ModelInferResponse, ModelStreamInferResponse,
};
use speech_gateway::backend::triton::tensors::bytes_tensor;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::skeleton::triton::{self, TritonModel, completion, contract_config};
use crate::skeleton::{ResponseStream, Running, ServerOptions};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    Streaming { idle_us: u64, final_every_ms: u64 },
    Offline,
}

/// One request as the double saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub id: String,
    pub sequence_id: Option<i64>,
    pub start: bool,
    pub end: bool,
    pub empty_final: bool,
    pub audio: Bytes,
    pub shape: Vec<i64>,
    pub outputs: Vec<String>,
}

#[derive(Default)]
pub struct Log {
    pub requests: Vec<Seen>,
    pub unary: Vec<Bytes>,
    pub fail_next: Option<String>,
}

pub struct TritonDouble {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Log>>,
    /// Serving until dropped.
    _server: Running,
}

impl TritonDouble {
    pub async fn start(model: &str, shape: Shape) -> TritonDouble {
        let log = Arc::new(Mutex::new(Log::default()));
        let idle_us = match shape {
            Shape::Streaming { idle_us, .. } => Some(idle_us),
            Shape::Offline => None,
        };
        let svc = Svc {
            config: contract_config(model, "python", idle_us),
            shape,
            log: log.clone(),
        };
        let server = Running::spawn(move |listener, shutdown| async move {
            triton::serve(listener, svc, &ServerOptions::default(), shutdown).await
        })
        .await;
        TritonDouble {
            addr: server.addr,
            log,
            _server: server,
        }
    }

    pub fn url(&self, model: &str) -> String {
        format!("triton://{}/{model}", self.addr)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().requests.clone()
    }

    pub fn fail_next(&self, message: &str) {
        self.log.lock().unwrap().fail_next = Some(message.to_string());
    }
}

struct Svc {
    config: ModelConfig,
    shape: Shape,
    log: Arc<Mutex<Log>>,
}

fn bool_param(p: &HashMap<String, InferParameter>, k: &str) -> bool {
    matches!(
        p.get(k).and_then(|p| p.parameter_choice.as_ref()),
        Some(ParameterChoice::BoolParam(true))
    )
}

/// A response with the contract's outputs; `words` as (word, start s, end s).
pub fn result(
    id: &str,
    text: &str,
    is_final: bool,
    words: &[(&str, f64, f64)],
) -> ModelInferResponse {
    let json = serde_json::to_vec(
        &words
            .iter()
            .map(
                |(w, s, e)| serde_json::json!({"word": w, "start": s, "end": e, "confidence": 0.5}),
            )
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let out = |name: &str, dt: &str| InferOutputTensor {
        name: name.into(),
        datatype: dt.into(),
        shape: vec![1],
        ..Default::default()
    };
    ModelInferResponse {
        model_name: "m".into(),
        id: id.into(),
        outputs: vec![
            out("TRANSCRIPT", "BYTES"),
            out("IS_FINAL", "BOOL"),
            out("WORDS", "BYTES"),
            out("CONFIDENCE", "FP32"),
        ],
        raw_output_contents: vec![
            bytes_tensor(&[text.as_bytes()]),
            Bytes::from(vec![u8::from(is_final)]),
            bytes_tensor(&[&json]),
            Bytes::copy_from_slice(&0.625f32.to_le_bytes()),
        ],
        ..Default::default()
    }
}

#[tonic::async_trait]
impl TritonModel for Svc {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    async fn infer(&self, req: ModelInferRequest) -> Result<ModelInferResponse, Status> {
        let audio = req.raw_input_contents.first().cloned().unwrap_or_default();
        let n = {
            let mut log = self.log.lock().unwrap();
            log.unary.push(audio.clone());
            log.unary.len()
        };
        let secs = audio.len() as f64 / 2.0 / 16_000.0;
        Ok(result(
            "",
            &format!("utterance {n}"),
            true,
            &[("utterance", 0.0, secs)],
        ))
    }

    async fn stream(
        &self,
        mut inbound: Streaming<ModelInferRequest>,
    ) -> Result<ResponseStream<ModelStreamInferResponse>, Status> {
        let Shape::Streaming { final_every_ms, .. } = self.shape else {
            return Err(Status::unimplemented("offline model"));
        };
        let (tx, rx) = mpsc::channel(64);
        let log = self.log.clone();
        tokio::spawn(async move {
            let mut samples = 0u64; // since the sequence start
            let mut final_at = 0u64; // samples covered by finals
            while let Some(Ok(req)) = inbound.next().await {
                let seen = Seen {
                    id: req.id.clone(),
                    sequence_id: match req
                        .parameters
                        .get("sequence_id")
                        .and_then(|p| p.parameter_choice.clone())
                    {
                        Some(ParameterChoice::Int64Param(v)) => Some(v),
                        _ => None,
                    },
                    start: bool_param(&req.parameters, "sequence_start"),
                    end: bool_param(&req.parameters, "sequence_end"),
                    empty_final: bool_param(&req.parameters, "triton_enable_empty_final_response"),
                    audio: req.raw_input_contents.first().cloned().unwrap_or_default(),
                    shape: req
                        .inputs
                        .first()
                        .map(|i| i.shape.clone())
                        .unwrap_or_default(),
                    outputs: req.outputs.iter().map(|o| o.name.clone()).collect(),
                };
                let fail = {
                    let mut l = log.lock().unwrap();
                    l.requests.push(seen.clone());
                    l.fail_next.take()
                };
                if let Some(message) = fail {
                    let _ = tx
                        .send(Ok(ModelStreamInferResponse {
                            error_message: message,
                            infer_response: None,
                        }))
                        .await;
                    continue;
                }
                samples += seen.audio.len() as u64 / 2;
                let ms = |s: u64| s as f64 / 16.0 / 1000.0;
                let mut responses = Vec::new();
                if seen.end || (samples - final_at) * 1000 / 16_000 >= final_every_ms {
                    if samples > final_at {
                        responses.push(result(
                            &seen.id,
                            "done",
                            true,
                            &[("done", ms(final_at), ms(samples))],
                        ));
                        final_at = samples;
                    }
                } else if samples > final_at && !seen.audio.is_empty() {
                    responses.push(result(&seen.id, "so far", false, &[]));
                }
                responses.push(completion("", &seen.id));
                for r in responses {
                    if tx
                        .send(Ok(ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(r),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}
