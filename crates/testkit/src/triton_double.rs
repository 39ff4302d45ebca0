//! A Triton double for tests: a real tonic server on our KServe v2 protos, bound to
//! 127.0.0.1:0, serving one model that follows the tensor contract in either shape.
//! - streaming (decoupled, sequence batching): per request, a partial once the sequence
//!   holds audio, a final (covering everything since the last) on `sequence_end` or every
//!   `final_every_ms`, then the empty response flagged `triton_final_response`;
//! - offline: one `ModelInfer` → one final "utterance N" whose one word spans the audio.
//!
//! Every request is recorded for the test to inspect; `fail_next` injects a model error.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::Stream;
use sgw_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use sgw_proto::inference::infer_parameter::ParameterChoice;
use sgw_proto::inference::model_config::SchedulingChoice;
use sgw_proto::inference::model_infer_response::InferOutputTensor;
use sgw_proto::inference::{
    DataType, InferParameter, ModelConfig, ModelConfigRequest, ModelConfigResponse,
    ModelInferRequest, ModelInferResponse, ModelInput, ModelOutput, ModelReadyRequest,
    ModelReadyResponse, ModelSequenceBatching, ModelStreamInferResponse, ModelTransactionPolicy,
    ServerLiveRequest, ServerLiveResponse, ServerReadyRequest, ServerReadyResponse,
};
use speech_gateway::backend::triton::tensors::bytes_tensor;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

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
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TritonDouble {
    pub async fn start(model: &str, shape: Shape) -> TritonDouble {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let svc = Svc {
            model: model.to_string(),
            shape,
            log: log.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(GrpcInferenceServiceServer::new(svc))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = rx.await;
                    },
                ),
        );
        TritonDouble {
            addr,
            log,
            stop: Some(tx),
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

impl Drop for TritonDouble {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

struct Svc {
    model: String,
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

fn completion(id: &str) -> ModelInferResponse {
    let mut parameters = HashMap::new();
    parameters.insert(
        "triton_final_response".to_string(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::BoolParam(true)),
        },
    );
    ModelInferResponse {
        id: id.into(),
        parameters,
        ..Default::default()
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for Svc {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        r: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        Ok(Response::new(ModelReadyResponse {
            ready: r.get_ref().name == self.model,
        }))
    }

    async fn model_config(
        &self,
        r: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        if r.get_ref().name != self.model {
            return Err(Status::not_found("no such model"));
        }
        let out = |n: &str, t: DataType| ModelOutput {
            name: n.into(),
            data_type: t as i32,
            dims: vec![1],
        };
        let streaming = matches!(self.shape, Shape::Streaming { .. });
        let config = ModelConfig {
            name: self.model.clone(),
            backend: "python".into(),
            input: vec![ModelInput {
                name: "AUDIO".into(),
                data_type: DataType::TypeInt16 as i32,
                dims: vec![-1],
            }],
            output: vec![
                out("TRANSCRIPT", DataType::TypeString),
                out("IS_FINAL", DataType::TypeBool),
                out("WORDS", DataType::TypeString),
                out("CONFIDENCE", DataType::TypeFp32),
            ],
            scheduling_choice: match self.shape {
                Shape::Streaming { idle_us, .. } => {
                    Some(SchedulingChoice::SequenceBatching(ModelSequenceBatching {
                        max_sequence_idle_microseconds: idle_us,
                    }))
                }
                Shape::Offline => None,
            },
            model_transaction_policy: Some(ModelTransactionPolicy {
                decoupled: streaming,
            }),
            ..Default::default()
        };
        Ok(Response::new(ModelConfigResponse {
            config: Some(config),
        }))
    }

    async fn model_infer(
        &self,
        r: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let req = r.into_inner();
        let audio = req.raw_input_contents.first().cloned().unwrap_or_default();
        let n = {
            let mut log = self.log.lock().unwrap();
            log.unary.push(audio.clone());
            log.unary.len()
        };
        let secs = audio.len() as f64 / 2.0 / 16_000.0;
        Ok(Response::new(result(
            "",
            &format!("utterance {n}"),
            true,
            &[("utterance", 0.0, secs)],
        )))
    }

    type ModelStreamInferStream = OutStream;

    async fn model_stream_infer(
        &self,
        r: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<OutStream>, Status> {
        let Shape::Streaming { final_every_ms, .. } = self.shape else {
            return Err(Status::unimplemented("offline model"));
        };
        let mut inbound = r.into_inner();
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
                responses.push(completion(&seen.id));
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
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
