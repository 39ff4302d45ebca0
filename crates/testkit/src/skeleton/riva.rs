//! The Riva server skeleton: `RivaSpeechRecognition` (streaming only; the configuration
//! query lists one model) and `grpc.health.v1` (its status from a watch channel, so a
//! test can flip it). What answers each `StreamingRecognize` call is a [`RivaStreams`].

use std::future::Future;
use std::sync::Arc;

use sgw_proto::grpc::health::v1::health_check_response::ServingStatus;
use sgw_proto::grpc::health::v1::health_server::{Health, HealthServer};
use sgw_proto::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use sgw_proto::nvidia::riva::asr::riva_speech_recognition_config_response::Config;
use sgw_proto::nvidia::riva::asr::riva_speech_recognition_server::{
    RivaSpeechRecognition, RivaSpeechRecognitionServer,
};
use sgw_proto::nvidia::riva::asr::{
    RecognizeRequest, RecognizeResponse, RivaSpeechRecognitionConfigRequest,
    RivaSpeechRecognitionConfigResponse, StreamingRecognizeRequest, StreamingRecognizeResponse,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::{ResponseStream, ServerOptions};

/// What answers `StreamingRecognize` calls: the sim's recognizer, or a test's script.
#[tonic::async_trait]
pub trait RivaStreams: Send + Sync + 'static {
    /// Answers one call.
    async fn stream(
        &self,
        request: Request<Streaming<StreamingRecognizeRequest>>,
    ) -> Result<ResponseStream<StreamingRecognizeResponse>, Status>;

    /// The model `GetRivaSpeechRecognitionConfig` lists, or why the query fails.
    fn model(&self) -> Result<Config, Status>;
}

/// Serves Riva and its health service on `listener` until `shutdown` resolves; `health`
/// is what the health service answers.
pub async fn serve<S: RivaStreams>(
    listener: TcpListener,
    streams: S,
    health: watch::Receiver<ServingStatus>,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let router = options
        .builder()
        .add_service(RivaSpeechRecognitionServer::new(Riva(Arc::new(streams))))
        .add_service(HealthServer::new(HealthService(health)));
    super::serve(router, listener, shutdown).await
}

struct Riva<S>(Arc<S>);

#[tonic::async_trait]
impl<S: RivaStreams> RivaSpeechRecognition for Riva<S> {
    async fn recognize(
        &self,
        _: Request<RecognizeRequest>,
    ) -> Result<Response<RecognizeResponse>, Status> {
        Err(Status::unimplemented("this test server streams only"))
    }

    type StreamingRecognizeStream = ResponseStream<StreamingRecognizeResponse>;

    async fn streaming_recognize(
        &self,
        request: Request<Streaming<StreamingRecognizeRequest>>,
    ) -> Result<Response<Self::StreamingRecognizeStream>, Status> {
        self.0.stream(request).await.map(Response::new)
    }

    async fn get_riva_speech_recognition_config(
        &self,
        _: Request<RivaSpeechRecognitionConfigRequest>,
    ) -> Result<Response<RivaSpeechRecognitionConfigResponse>, Status> {
        Ok(Response::new(RivaSpeechRecognitionConfigResponse {
            model_config: vec![self.0.model()?],
        }))
    }
}

struct HealthService(watch::Receiver<ServingStatus>);

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: *self.0.borrow() as i32,
        }))
    }

    type WatchStream = ResponseStream<HealthCheckResponse>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("health watch"))
    }
}
