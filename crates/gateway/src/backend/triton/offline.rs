//! Offline models (not decoupled, e.g. GLM-ASR-Nano): the gateway endpoints the audio
//! ([`crate::backend::utterances`]) and sends each utterance — and each partial re-decode
//! of the open one — as one unary `ModelInfer`, bounded by `triton.infer_timeout`.

use std::time::{Duration, Instant};

use super::tensors;
use super::{Client, ModelIo};
use crate::backend::scheduler::Scheduler;
use crate::backend::utterances::{self, Decoding, Endpointing};
use crate::backend::{AudioStream, BackendError, BackendErrorKind, EventStream};
use crate::config::TritonSettings;
use crate::error::ErrorClass;

/// The back end's endpointing defaults (partials on; the client may turn them off).
pub fn endpointing(settings: &TritonSettings) -> Endpointing {
    Endpointing {
        silence: settings.endpointing,
        partial_interval: settings.partial_interval,
        max_utterance: settings.max_utterance,
        sample_rate: settings.sample_rate,
        interim_results: true,
    }
}

/// Starts the endpointing task over `audio`; see [`utterances::open`].
pub fn open(
    client: Client,
    model: String,
    io: ModelIo,
    ep: Endpointing,
    timeout: Duration,
    audio: AudioStream,
    queue: Scheduler,
) -> EventStream {
    let decode = move |utterance: &[i16]| infer(&client, &model, &io, utterance, timeout);
    utterances::open(decode, ep, audio, queue)
}

/// One whole utterance as one `ModelInfer` (two-pass recognition's quality pass): no
/// endpointing, the caller's audio is the utterance.
pub fn recognize(
    client: Client,
    model: &str,
    io: &ModelIo,
    pcm: &[i16],
    timeout: Duration,
) -> Decoding {
    infer(&client, model, io, pcm, timeout)
}

fn infer(client: &Client, model: &str, io: &ModelIo, audio: &[i16], timeout: Duration) -> Decoding {
    let mut client = client.clone();
    let pcm = crate::pcm::pcm_bytes(audio);
    let request = tensors::audio_request(model, String::new(), pcm, &io.outputs, io.batched, None);
    Box::pin(async move {
        let resp = tokio::time::timeout(timeout, client.model_infer(request))
            .await
            .map_err(|_| {
                BackendError::new(
                    BackendErrorKind::Timeout,
                    ErrorClass::UpstreamRetryable,
                    format!("ModelInfer took longer than {timeout:?}"),
                )
            })?
            .map_err(crate::backend::grpc::map_status)?;
        tensors::read_result(&resp.into_inner(), Instant::now()).map_err(|e| {
            BackendError::new(
                BackendErrorKind::Protocol,
                ErrorClass::UpstreamFatal,
                e.to_string(),
            )
        })
    })
}
