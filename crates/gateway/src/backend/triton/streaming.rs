//! Streaming models: one `ModelStreamInfer` stream per session.
//!
//! Every audio chunk becomes one request of one sequence (`sequence_id`, `sequence_start`
//! on the first, `sequence_end` on a last, empty request when the audio ends), each with
//! `triton_enable_empty_final_response` so that its completion is visible. While no
//! audio flows, empty requests keep the sequence inside the model's idle limit. The
//! event stream ends when the `sequence_end` request is complete. A response to request
//! `n` accounts for the audio up to the end of request `n`: events carry that as
//! `audio_processed_ms` (how far behind the model is, for the session's lag signal).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    sample_rate_hz: u32,
    audio: AudioStream,
) -> EventStream {
    let end_id = Arc::new(AtomicU64::new(u64::MAX));
    let ledger = Arc::new(Ledger::default());
    let requests = Requests {
        ledger: ledger.clone(),
        sample_rate_hz: sample_rate_hz.max(1),
        samples: 0,
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
        ledger,
    }
    .boxed()
}

/// Which audio each request in flight ends at: written by the request side, read (and
/// trimmed) by the response side.
#[derive(Debug, Default)]
struct Ledger {
    /// (request id, stream ms at the end of its audio), ids ascending.
    entries: Mutex<VecDeque<(u64, u64)>>,
}

impl Ledger {
    fn record(&self, id: u64, end_ms: u64) {
        self.entries
            .lock()
            .expect("ledger lock")
            .push_back((id, end_ms));
    }

    /// Stream ms at the end of request `id`'s audio; forgets the requests before it (a
    /// decoupled model answers in request order).
    fn processed(&self, id: u64) -> Option<u64> {
        let mut entries = self.entries.lock().expect("ledger lock");
        while entries.front().is_some_and(|&(i, _)| i < id) {
            entries.pop_front();
        }
        entries
            .front()
            .filter(|&&(i, _)| i == id)
            .map(|&(_, ms)| ms)
    }
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
    ledger: Arc<Ledger>,
    sample_rate_hz: u32,
    /// Samples sent so far.
    samples: u64,
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
        self.samples += pcm.len() as u64 / 2;
        self.ledger
            .record(id, self.samples * 1000 / u64::from(self.sample_rate_hz));
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
        ledger: Arc<Ledger>,
    },
    Streaming {
        inner: Box<tonic::Streaming<ModelStreamInferResponse>>,
        end_id: Arc<AtomicU64>,
        ledger: Arc<Ledger>,
    },
    Done,
}

impl Stream for Results {
    type Item = Result<TranscriptEvent, BackendError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match &mut *self {
                Results::Calling {
                    call,
                    end_id,
                    ledger,
                } => match call.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(resp)) => {
                        let (end_id, ledger) = (end_id.clone(), ledger.clone());
                        *self = Results::Streaming {
                            inner: Box::new(resp.into_inner()),
                            end_id,
                            ledger,
                        };
                    }
                    Poll::Ready(Err(status)) => {
                        *self = Results::Done;
                        return Poll::Ready(Some(Err(crate::backend::grpc::map_status(status))));
                    }
                },
                Results::Streaming {
                    inner,
                    end_id,
                    ledger,
                } => {
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
                    let mut step =
                        map_message(&msg, end_id.load(Ordering::Acquire), Instant::now());
                    if let Some(Ok(ev)) = step.item.as_mut() {
                        ev.audio_processed_ms = msg
                            .infer_response
                            .as_ref()
                            .and_then(|r| r.id.parse::<u64>().ok())
                            .and_then(|id| ledger.processed(id));
                    }
                    if step.done {
                        *self = Results::Done;
                    }
                    match step.item {
                        Some(item) => return Poll::Ready(Some(item)),
                        None if step.done => return Poll::Ready(None),
                        None => continue,
                    }
                }
                Results::Done => return Poll::Ready(None),
            }
        }
    }
}

/// What one message of the response stream means for the session's event stream.
#[derive(Debug)]
pub struct Step {
    /// The event to pass on, if the message carries one.
    pub item: Option<Result<TranscriptEvent, BackendError>>,
    /// The stream is over after this message: the model reported an error, or this is
    /// the final response to the `sequence_end` request.
    pub done: bool,
}

/// Maps one `ModelStreamInferResponse`. `end_id` is the id of the `sequence_end` request
/// (`u64::MAX` until it is sent). A model error ends the stream with a retryable
/// server error; a result that breaks the tensor contract is a fatal protocol error; an
/// empty final response is a progress event (the model keeps up), or the end of the
/// stream if it completes `sequence_end`. Pure: public so that the fuzz targets (`fuzz/`)
/// drive the same code as the adapter.
pub fn map_message(msg: &ModelStreamInferResponse, end_id: u64, received_at: Instant) -> Step {
    if !msg.error_message.is_empty() {
        let m: String = msg.error_message.chars().take(200).collect();
        return Step {
            item: Some(Err(BackendError::new(
                BackendErrorKind::ServerError,
                ErrorClass::UpstreamRetryable,
                format!("model error: {m}"),
            ))),
            done: true,
        };
    }
    let Some(resp) = msg.infer_response.as_ref() else {
        return Step {
            item: None,
            done: false,
        };
    };
    let last = tensors::is_final_response(resp) && resp.id.parse::<u64>().ok() == Some(end_id);
    let item = match tensors::read_result(resp, received_at) {
        Ok(Some(ev)) => Some(Ok(ev)),
        // A request's completion: the model is keeping up (stall detection).
        Ok(None) if !last => Some(Ok(TranscriptEvent::progress(received_at))),
        Ok(None) => None,
        Err(e) => Some(Err(BackendError::new(
            BackendErrorKind::Protocol,
            ErrorClass::UpstreamFatal,
            e.to_string(),
        ))),
    };
    Step { item, done: last }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backend::proto::inference::infer_parameter::ParameterChoice;
    use crate::backend::proto::inference::model_infer_response::InferOutputTensor;
    use crate::backend::proto::inference::{InferParameter, ModelInferResponse};

    #[test]
    fn the_ledger_answers_in_request_order_and_forgets_what_is_answered() {
        let l = Ledger::default();
        l.record(0, 100);
        l.record(1, 200);
        l.record(2, 200); // a keep-alive: no audio
        l.record(3, 300);
        assert_eq!(l.processed(1), Some(200));
        assert_eq!(
            l.processed(1),
            Some(200),
            "a request may have several responses"
        );
        assert_eq!(
            l.processed(0),
            None,
            "forgotten once a later one was answered"
        );
        assert_eq!(l.processed(3), Some(300));
        assert_eq!(l.processed(9), None);
    }

    fn completion(id: &str) -> ModelStreamInferResponse {
        let mut r = ModelInferResponse {
            id: id.into(),
            ..Default::default()
        };
        r.parameters.insert(
            "triton_final_response".into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::BoolParam(true)),
            },
        );
        ModelStreamInferResponse {
            error_message: String::new(),
            infer_response: Some(r),
        }
    }

    #[test]
    fn completions_are_progress_until_the_end_request_completes() {
        let now = Instant::now();
        let step = map_message(&completion("3"), 7, now);
        assert!(!step.done);
        assert!(matches!(step.item, Some(Ok(ref e)) if e.is_progress()));
        let step = map_message(&completion("7"), 7, now);
        assert!(step.done && step.item.is_none());
        let empty = ModelStreamInferResponse::default();
        let step = map_message(&empty, 7, now);
        assert!(
            !step.done && step.item.is_none(),
            "nothing to say, not the end"
        );
    }

    #[test]
    fn model_errors_end_the_stream_and_contract_breaches_are_protocol_errors() {
        let now = Instant::now();
        let failed = ModelStreamInferResponse {
            error_message: "x".repeat(1_000),
            infer_response: None,
        };
        let step = map_message(&failed, u64::MAX, now);
        assert!(step.done);
        let e = step.item.unwrap().unwrap_err();
        assert_eq!(e.kind, BackendErrorKind::ServerError);
        assert!(e.message.len() < 250, "the model's message is capped");
        let broken = ModelStreamInferResponse {
            error_message: String::new(),
            infer_response: Some(ModelInferResponse {
                outputs: vec![InferOutputTensor {
                    name: tensors::TRANSCRIPT.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let step = map_message(&broken, u64::MAX, now);
        assert!(!step.done);
        assert_eq!(
            step.item.unwrap().unwrap_err().kind,
            BackendErrorKind::Protocol
        );
    }
}
