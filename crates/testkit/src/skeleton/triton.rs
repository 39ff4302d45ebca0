//! The Triton (KServe v2) server skeleton: one model that follows the gateway's tensor
//! contract (`AUDIO` in; `TRANSCRIPT`, `IS_FINAL`, `WORDS`, `CONFIDENCE` out), with the
//! liveness, readiness and configuration queries answered here. What answers `ModelInfer`
//! and `ModelStreamInfer` is a [`TritonModel`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use sgw_proto::inference::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use sgw_proto::inference::infer_parameter::ParameterChoice;
use sgw_proto::inference::model_config::SchedulingChoice;
use sgw_proto::inference::{
    DataType, InferParameter, ModelConfig, ModelConfigRequest, ModelConfigResponse,
    ModelInferRequest, ModelInferResponse, ModelInput, ModelOutput, ModelReadyRequest,
    ModelReadyResponse, ModelSequenceBatching, ModelStreamInferResponse, ModelTransactionPolicy,
    ServerLiveRequest, ServerLiveResponse, ServerReadyRequest, ServerReadyResponse,
};
use speech_gateway::backend::triton::tensors;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

use super::{ResponseStream, ServerOptions};

/// The one model a test server serves.
#[tonic::async_trait]
pub trait TritonModel: Send + Sync + 'static {
    /// The model's configuration (its `name` is the model's name).
    fn config(&self) -> &ModelConfig;

    /// Whether the server and its model are ready; a server that is not answers the
    /// configuration query and both inference calls with `unavailable()`.
    fn ready(&self) -> Result<(), Status> {
        Ok(())
    }

    /// One `ModelInfer` call (an offline model).
    async fn infer(&self, request: ModelInferRequest) -> Result<ModelInferResponse, Status>;

    /// One `ModelStreamInfer` call (a decoupled model).
    async fn stream(
        &self,
        requests: Streaming<ModelInferRequest>,
    ) -> Result<ResponseStream<ModelStreamInferResponse>, Status>;
}

/// The configuration of a model that follows the tensor contract. `sequence_idle_us`:
/// a decoupled model with sequence batching (streaming), else an offline model.
pub fn contract_config(name: &str, backend: &str, sequence_idle_us: Option<u64>) -> ModelConfig {
    let output = |name: &str, t: DataType| ModelOutput {
        name: name.into(),
        data_type: t as i32,
        dims: vec![1],
    };
    ModelConfig {
        name: name.into(),
        backend: backend.into(),
        max_batch_size: 0,
        input: vec![ModelInput {
            name: tensors::AUDIO.into(),
            data_type: DataType::TypeInt16 as i32,
            dims: vec![-1],
        }],
        output: vec![
            output(tensors::TRANSCRIPT, DataType::TypeString),
            output(tensors::IS_FINAL, DataType::TypeBool),
            output(tensors::WORDS, DataType::TypeString),
            output(tensors::CONFIDENCE, DataType::TypeFp32),
        ],
        scheduling_choice: sequence_idle_us.map(|us| {
            SchedulingChoice::SequenceBatching(ModelSequenceBatching {
                max_sequence_idle_microseconds: us,
            })
        }),
        model_transaction_policy: Some(ModelTransactionPolicy {
            decoupled: sequence_idle_us.is_some(),
        }),
        ..Default::default()
    }
}

/// The empty response, flagged `triton_final_response`, that marks request `id` of a
/// decoupled model complete.
pub fn completion(model: &str, id: &str) -> ModelInferResponse {
    let mut parameters = HashMap::new();
    parameters.insert(
        "triton_final_response".to_string(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::BoolParam(true)),
        },
    );
    ModelInferResponse {
        model_name: model.into(),
        id: id.into(),
        parameters,
        ..Default::default()
    }
}

/// Serves the KServe v2 service with `model` on `listener` until `shutdown` resolves.
pub async fn serve<M: TritonModel>(
    listener: TcpListener,
    model: M,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let router = options
        .builder()
        .add_service(GrpcInferenceServiceServer::new(Triton(Arc::new(model))));
    super::serve(router, listener, shutdown).await
}

struct Triton<M>(Arc<M>);

#[tonic::async_trait]
impl<M: TritonModel> GrpcInferenceService for Triton<M> {
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
        Ok(Response::new(ServerReadyResponse {
            ready: self.0.ready().is_ok(),
        }))
    }

    async fn model_ready(
        &self,
        r: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        Ok(Response::new(ModelReadyResponse {
            ready: self.0.ready().is_ok() && r.get_ref().name == self.0.config().name,
        }))
    }

    async fn model_config(
        &self,
        r: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        self.0.ready()?;
        let config = self.0.config();
        if r.get_ref().name != config.name {
            return Err(Status::not_found(format!(
                "this test server serves model `{}` only",
                config.name
            )));
        }
        Ok(Response::new(ModelConfigResponse {
            config: Some(config.clone()),
        }))
    }

    async fn model_infer(
        &self,
        r: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        self.0.ready()?;
        self.0.infer(r.into_inner()).await.map(Response::new)
    }

    type ModelStreamInferStream = ResponseStream<ModelStreamInferResponse>;

    async fn model_stream_infer(
        &self,
        r: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        self.0.ready()?;
        self.0.stream(r.into_inner()).await.map(Response::new)
    }
}
