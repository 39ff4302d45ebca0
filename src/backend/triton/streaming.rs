//! Streaming models: one `ModelStreamInfer` stream per session.
//!
//! Every audio chunk becomes one request of one sequence (`sequence_id`, `sequence_start`
//! on the first, `sequence_end` on a last, empty request when the audio ends), each with
//! `triton_enable_empty_final_response` so that its completion is visible. While no
//! audio flows, empty requests keep the sequence inside the model's idle limit. The
//! event stream ends when the `sequence_end` request is complete.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tonic::Status;

use super::tensors::{self, SequenceFlags};
use super::{Client, ModelIo};
use crate::backend::proto::inference::{ModelInferRequest, ModelStreamInferResponse};
use crate::backend::{AudioStream, BackendError, BackendErrorKind, EventStream, TranscriptEvent};
use crate::error::ErrorClass;

/// Opens the stream. Nothing waits for response headers: Triton sends them with its
/// first response, which needs audio.
pub fn open(
    client: Client,
    model: String,
    io: ModelIo,
    keepalive: Duration,
    audio: AudioStream,
) -> EventStream {
    let end_id = Arc::new(AtomicU64::new(u64::MAX));
    let requests = Requests {
        model,
        io,
        audio,
        sequence_id: new_sequence_id(),
        next_id: 0,
        started: false,
        ended: false,
        keepalive_every: keepalive,
        keepalive: Box::pin(tokio::time::sleep(keepalive)),
        end_id: end_id.clone(),
    };
    Results::Calling {
        call: Box::pin(call(client, requests)),
        end_id,
    }
    .boxed()
}

/// A positive, practically unique id per sequence (Triton keys sequence state by it).
fn new_sequence_id() -> i64 {
    let id = (uuid::Uuid::new_v4().as_u128() as u64 >> 1) as i64;
    id.max(1)
}

async fn call(
    mut client: Client,
    requests: Requests,
) -> Result<tonic::Response<tonic::Streaming<ModelStreamInferResponse>>, Status> {
    client.model_stream_infer(requests).await
}

/// The request side, as a named state machine (combinators here make the open future's
/// `Send` bound unprovable for the compiler).
struct Requests {
    model: String,
    io: ModelIo,
    audio: AudioStream,
    sequence_id: i64,
    next_id: u64,
    started: bool,
    ended: bool,
    keepalive_every: Duration,
    keepalive: Pin<Box<tokio::time::Sleep>>,
    /// Shared with the response side: the id of the `sequence_end` request.
    end_id: Arc<AtomicU64>,
}

impl Requests {
    fn request(&mut self, pcm: Bytes, end: bool) -> ModelInferRequest {
        let id = self.next_id;
        self.next_id += 1;
        let flags = SequenceFlags {
            sequence_id: self.sequence_id,
            start: !self.started,
            end,
        };
        self.started = true;
        if end {
            self.end_id.store(id, Ordering::Release);
        }
        let deadline = tokio::time::Instant::now() + self.keepalive_every;
        self.keepalive.as_mut().reset(deadline);
        tensors::audio_request(
            &self.model,
            id.to_string(),
            pcm,
            &self.io.outputs,
            self.io.batched,
            Some(flags),
        )
    }
}

impl Stream for Requests {
    type Item = ModelInferRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.audio.poll_next_unpin(cx) {
            Poll::Ready(Some(pcm)) => Poll::Ready(Some(self.request(pcm, false))),
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(self.request(Bytes::new(), true)))
            }
            Poll::Pending => {
                if self.started && self.keepalive.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(self.request(Bytes::new(), false)));
                }
                Poll::Pending
            }
        }
    }
}

type Call = Pin<
    Box<
        dyn Future<
                Output = Result<
                    tonic::Response<tonic::Streaming<ModelStreamInferResponse>>,
                    Status,
                >,
            > + Send,
    >,
>;

enum Results {
    Calling {
        call: Call,
        end_id: Arc<AtomicU64>,
    },
    Streaming {
        inner: Box<tonic::Streaming<ModelStreamInferResponse>>,
        end_id: Arc<AtomicU64>,
    },
    Done,
}

impl Stream for Results {
    type Item = Result<TranscriptEvent, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match &mut *self {
                Results::Calling { call, end_id } => match call.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(resp)) => {
                        let end_id = end_id.clone();
                        *self = Results::Streaming {
                            inner: Box::new(resp.into_inner()),
                            end_id,
                        };
                    }
                    Poll::Ready(Err(status)) => {
                        *self = Results::Done;
                        return Poll::Ready(Some(Err(crate::backend::grpc::map_status(status))));
                    }
                },
                Results::Streaming { inner, end_id } => {
                    let msg = match inner.poll_next_unpin(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(None) => {
                            *self = Results::Done;
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Some(Err(status))) => {
                            *self = Results::Done;
                            return Poll::Ready(Some(Err(crate::backend::grpc::map_status(
                                status,
                            ))));
                        }
                        Poll::Ready(Some(Ok(msg))) => msg,
                    };
                    if !msg.error_message.is_empty() {
                        let m: String = msg.error_message.chars().take(200).collect();
                        *self = Results::Done;
                        return Poll::Ready(Some(Err(BackendError::new(
                            BackendErrorKind::ServerError,
                            ErrorClass::UpstreamRetryable,
                            format!("model error: {m}"),
                        ))));
                    }
                    let Some(resp) = msg.infer_response else {
                        continue;
                    };
                    let last = tensors::is_final_response(&resp)
                        && resp.id.parse::<u64>().ok() == Some(end_id.load(Ordering::Acquire));
                    let item = match tensors::read_result(&resp, Instant::now()) {
                        Ok(Some(ev)) => Some(Ok(ev)),
                        // A request's completion: the model is keeping up (stall detection).
                        Ok(None) if !last => Some(Ok(TranscriptEvent::progress(Instant::now()))),
                        Ok(None) => None,
                        Err(e) => Some(Err(BackendError::new(
                            BackendErrorKind::Protocol,
                            ErrorClass::UpstreamFatal,
                            e.to_string(),
                        ))),
                    };
                    if last {
                        *self = Results::Done;
                    }
                    match item {
                        Some(item) => return Poll::Ready(Some(item)),
                        None if last => return Poll::Ready(None),
                        None => continue,
                    }
                }
                Results::Done => return Poll::Ready(None),
            }
        }
    }
}
