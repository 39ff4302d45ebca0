//! NVIDIA Triton adapter (KServe v2 gRPC, `inference.GRPCInferenceService`).
//!
//! A model follows the README's tensor contract in one of two shapes, told apart by its
//! `ModelConfig` (fetched once per back end):
//! - **streaming**: decoupled with sequence batching — one `ModelStreamInfer` stream per
//!   session, one request per audio chunk ([`streaming`]);
//! - **offline**: not decoupled — the gateway endpoints the audio itself with a VAD and
//!   sends each utterance as one `ModelInfer` ([`offline`], over the shared
//!   [`crate::backend::utterances`] loop).
//!
//! Health is `ServerReady` and `ModelReady` for the model the URL names.

pub mod offline;
pub mod streaming;
pub mod tensors;

use std::time::Duration;

use async_trait::async_trait;

use crate::backend::grpc::{self, ChannelPool};
use tokio::sync::OnceCell;
use tonic::transport::Channel;

use super::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use super::proto::inference::model_config::SchedulingChoice;
use super::proto::inference::{
    DataType, ModelConfigRequest, ModelReadyRequest, ServerReadyRequest,
};
use super::scheduler::{QueueStatus, Scheduler};
use super::utterances::Endpointing;
use super::{
    AudioStream, BackendError, BackendErrorKind, EventStream, Health, RecognitionParams,
    SpeechBackend,
};
use crate::config::{BackendUrl, TritonSettings};
use crate::error::ErrorClass;
use crate::telemetry::metrics::DecodeQueueMetrics;

pub type Client = GrpcInferenceServiceClient<Channel>;

/// Which half of the tensor contract a model implements.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelShape {
    Streaming {
        /// Send an empty request this often while no audio flows, so the sequence does
        /// not pass `max_sequence_idle_microseconds`.
        keepalive: Duration,
        io: ModelIo,
    },
    Offline {
        io: ModelIo,
    },
}

/// How requests to a model are shaped.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelIo {
    /// The contract's outputs this model declares, requested by name.
    pub outputs: Vec<String>,
    /// `max_batch_size > 0`: tensors carry a leading batch dimension.
    pub batched: bool,
}

pub struct TritonBackend {
    name: String,
    model: String,
    channels: ChannelPool,
    settings: TritonSettings,
    shape: OnceCell<ModelShape>,
    /// Offline models: every session's `ModelInfer`s, finals first (`triton.max_inflight`).
    queue: Scheduler,
}

impl TritonBackend {
    pub fn new(url: &BackendUrl, settings: &TritonSettings) -> Result<Self, BackendError> {
        Ok(TritonBackend {
            name: url.url.clone(),
            model: url.model.clone().unwrap_or_default(),
            channels: ChannelPool::new(url, settings.connect_timeout, settings.connections)?,
            settings: settings.clone(),
            shape: OnceCell::new(),
            queue: Scheduler::new(
                settings.max_inflight,
                settings.queue,
                DecodeQueueMetrics::default(),
            ),
        })
    }

    /// Counts the decode queue in these (registered) metrics.
    pub fn with_queue_metrics(mut self, metrics: DecodeQueueMetrics) -> Self {
        self.queue = Scheduler::new(self.settings.max_inflight, self.settings.queue, metrics);
        self
    }

    fn client(&self) -> Client {
        GrpcInferenceServiceClient::new(self.channels.first().clone())
            .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES)
    }

    /// The model's shape, from its configuration (fetched once, then cached).
    pub async fn shape(&self) -> Result<ModelShape, BackendError> {
        self.shape
            .get_or_try_init(|| async {
                let mut client = self.client();
                let call = client.model_config(ModelConfigRequest {
                    name: self.model.clone(),
                    version: String::new(),
                });
                let resp = tokio::time::timeout(self.settings.open_timeout, call)
                    .await
                    .map_err(|_| {
                        BackendError::new(
                            BackendErrorKind::Timeout,
                            ErrorClass::UpstreamRetryable,
                            "no ModelConfig answer in time",
                        )
                    })?
                    .map_err(grpc::map_status)?;
                let config = resp.into_inner().config.unwrap_or_default();
                shape_of(&config).map_err(|problem| {
                    BackendError::new(
                        BackendErrorKind::Rejected,
                        ErrorClass::UpstreamFatal,
                        format!(
                            "model `{}` does not follow the tensor contract: {problem}",
                            self.model
                        ),
                    )
                })
            })
            .await
            .cloned()
    }
}

/// Reads the shape from a model configuration, or says what is missing.
pub fn shape_of(config: &super::proto::inference::ModelConfig) -> Result<ModelShape, String> {
    let audio = config
        .input
        .iter()
        .find(|i| i.name == tensors::AUDIO)
        .ok_or("no input AUDIO")?;
    if audio.data_type != DataType::TypeInt16 as i32 {
        return Err("input AUDIO is not INT16".into());
    }
    for required in [tensors::TRANSCRIPT, tensors::IS_FINAL] {
        if !config.output.iter().any(|o| o.name == required) {
            return Err(format!("no output {required}"));
        }
    }
    let io = ModelIo {
        outputs: [
            tensors::TRANSCRIPT,
            tensors::IS_FINAL,
            tensors::WORDS,
            tensors::CONFIDENCE,
        ]
        .iter()
        .filter(|name| config.output.iter().any(|o| o.name == **name))
        .map(|s| s.to_string())
        .collect(),
        batched: config.max_batch_size > 0,
    };
    let decoupled = config
        .model_transaction_policy
        .as_ref()
        .is_some_and(|p| p.decoupled);
    let sequence = config
        .scheduling_choice
        .as_ref()
        .map(|SchedulingChoice::SequenceBatching(s)| s);
    match (decoupled, sequence) {
        (true, Some(seq)) => {
            // Triton's default idle limit is 1 s when the config leaves it unset.
            let idle = match seq.max_sequence_idle_microseconds {
                0 => Duration::from_secs(1),
                us => Duration::from_micros(us),
            };
            Ok(ModelShape::Streaming {
                keepalive: (idle / 2).clamp(Duration::from_millis(200), Duration::from_secs(30)),
                io,
            })
        }
        (true, None) => Err("decoupled but without sequence batching".into()),
        (false, _) => Ok(ModelShape::Offline { io }),
    }
}

#[async_trait]
impl SpeechBackend for TritonBackend {
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
        let channel = grpc::ready(self.channels.next(), self.settings.open_timeout).await?;
        let client = GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES);
        match self.shape().await? {
            ModelShape::Streaming { keepalive, io } => Ok(streaming::open(
                client,
                self.model.clone(),
                io,
                keepalive,
                params.sample_rate_hz,
                audio,
            )),
            ModelShape::Offline { io } => Ok(offline::open(
                client,
                self.model.clone(),
                io,
                Endpointing::new(offline::endpointing(&self.settings), &params),
                self.settings.infer_timeout,
                audio,
                self.queue.clone(),
            )),
        }
    }

    fn queue(&self) -> Option<QueueStatus> {
        matches!(self.shape.get(), Some(ModelShape::Offline { .. })).then(|| self.queue.status())
    }

    /// An offline model decodes the utterance in one `ModelInfer`; a streaming one takes
    /// it as a stream (the default).
    async fn recognize(
        &self,
        params: RecognitionParams,
        pcm: bytes::Bytes,
    ) -> Result<crate::backend::TranscriptEvent, BackendError> {
        let ModelShape::Offline { io } = self.shape().await? else {
            return crate::backend::recognize_by_stream(self, params, pcm).await;
        };
        let channel = grpc::ready(self.channels.next(), self.settings.open_timeout).await?;
        let client = GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES);
        let samples = crate::pcm::pcm_samples(&pcm);
        let decode = offline::recognize(
            client,
            &self.model,
            &io,
            &samples,
            self.settings.infer_timeout,
        );
        let ev = self.queue.run_final(decode).await?;
        Ok(ev.unwrap_or_else(|| crate::backend::TranscriptEvent {
            is_final: true,
            ..crate::backend::TranscriptEvent::progress(std::time::Instant::now())
        }))
    }

    async fn health(&self) -> Health {
        let timeout = self.settings.health_timeout;
        let mut client = self.client();
        let server =
            tokio::time::timeout(timeout, client.server_ready(ServerReadyRequest {})).await;
        match server {
            Err(_) => return Health::Down(format!("ServerReady timed out after {timeout:?}")),
            Ok(Err(s)) => return Health::Down(format!("ServerReady failed: {}", s.code())),
            Ok(Ok(r)) if !r.get_ref().ready => return Health::Down("server not ready".into()),
            Ok(Ok(_)) => {}
        }
        let model = tokio::time::timeout(
            timeout,
            client.model_ready(ModelReadyRequest {
                name: self.model.clone(),
                version: String::new(),
            }),
        )
        .await;
        match model {
            Err(_) => Health::Down(format!("ModelReady timed out after {timeout:?}")),
            Ok(Err(s)) => Health::Down(format!("ModelReady failed: {}", s.code())),
            Ok(Ok(r)) if !r.get_ref().ready => {
                Health::Down(format!("model `{}` not ready", self.model))
            }
            Ok(Ok(_)) => Health::Up,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::proto::inference::{
        ModelConfig, ModelInput, ModelOutput, ModelSequenceBatching, ModelTransactionPolicy,
    };

    fn config(decoupled: bool, seq: Option<u64>) -> ModelConfig {
        let out = |n: &str, t: DataType| ModelOutput {
            name: n.into(),
            data_type: t as i32,
            dims: vec![1],
        };
        ModelConfig {
            name: "m".into(),
            input: vec![ModelInput {
                name: "AUDIO".into(),
                data_type: DataType::TypeInt16 as i32,
                dims: vec![-1],
            }],
            output: vec![
                out("TRANSCRIPT", DataType::TypeString),
                out("IS_FINAL", DataType::TypeBool),
                out("WORDS", DataType::TypeString),
            ],
            scheduling_choice: seq.map(|us| {
                SchedulingChoice::SequenceBatching(ModelSequenceBatching {
                    max_sequence_idle_microseconds: us,
                })
            }),
            model_transaction_policy: Some(ModelTransactionPolicy { decoupled }),
            ..Default::default()
        }
    }

    #[test]
    fn shapes_are_told_apart_by_the_config() {
        match shape_of(&config(true, Some(60_000_000))).unwrap() {
            ModelShape::Streaming { keepalive, io } => {
                assert_eq!(keepalive, Duration::from_secs(30));
                assert_eq!(io.outputs, vec!["TRANSCRIPT", "IS_FINAL", "WORDS"]);
                assert!(!io.batched);
            }
            other => panic!("{other:?}"),
        }
        match shape_of(&config(true, Some(0))).unwrap() {
            ModelShape::Streaming { keepalive, .. } => {
                assert_eq!(keepalive, Duration::from_millis(500))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            shape_of(&config(false, None)).unwrap(),
            ModelShape::Offline { .. }
        ));
        assert!(
            shape_of(&config(true, None))
                .unwrap_err()
                .contains("sequence batching")
        );
        let mut bad = config(false, None);
        bad.input[0].data_type = DataType::TypeFp32 as i32;
        assert!(shape_of(&bad).unwrap_err().contains("INT16"));
        bad.input.clear();
        assert!(shape_of(&bad).unwrap_err().contains("AUDIO"));
        let mut bad = config(false, None);
        bad.output.retain(|o| o.name != "IS_FINAL");
        assert!(shape_of(&bad).unwrap_err().contains("IS_FINAL"));
    }
}
