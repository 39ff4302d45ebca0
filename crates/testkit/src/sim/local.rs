//! The zero-compute back end (`sgw_testkit::sim`) in-process on 127.0.0.1:0, and the
//! gateway's own adapters pointed at it.

use std::net::SocketAddr;
use std::time::Duration;

use super::{SimOptions, serve_riva, serve_triton};
use bytes::Bytes;
use futures::StreamExt;
use speech_gateway::backend::riva::RivaBackend;
use speech_gateway::backend::triton::TritonBackend;
use speech_gateway::backend::{
    AudioStream, BackendError, EventStream, RecognitionParams, SpeechBackend, StreamWord,
    TranscriptEvent,
};
use speech_gateway::config::{BackendProtocol, BackendUrl, RivaSettings, TritonSettings};
use tokio::sync::mpsc;

use crate::skeleton::Running;

/// A sim server running in this process; dropping it stops it.
pub type SimServer = Running;

/// Starts a sim server speaking `protocol` on 127.0.0.1:0.
pub async fn start(protocol: BackendProtocol, options: SimOptions) -> SimServer {
    Running::spawn(move |listener, stop| async move {
        match protocol {
            BackendProtocol::Riva => serve_riva(listener, options, stop).await,
            BackendProtocol::Triton => serve_triton(listener, options, stop).await,
            BackendProtocol::Deepgram => panic!("the sim speaks Riva and Triton, not Deepgram"),
            BackendProtocol::OpenAi => panic!("the sim speaks riva and triton, not openai"),
        }
    })
    .await
}

pub fn riva_backend(addr: SocketAddr) -> RivaBackend {
    let url = BackendUrl::parse(&format!("riva://{addr}")).unwrap();
    RivaBackend::new(
        &url,
        &RivaSettings {
            sample_rate: 16_000,
            auto_language: "en-US".into(),
            max_stream_age: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
            open_timeout: Duration::from_secs(2),
            health_timeout: Duration::from_secs(2),
            connections: 1,
        },
    )
    .unwrap()
}

pub fn triton_backend(addr: SocketAddr) -> TritonBackend {
    let url = BackendUrl::parse(&format!("triton://{addr}/asr_stream")).unwrap();
    TritonBackend::new(
        &url,
        &TritonSettings {
            sample_rate: 16_000,
            connect_timeout: Duration::from_secs(2),
            open_timeout: Duration::from_secs(2),
            endpointing: Duration::from_millis(500),
            partial_interval: Duration::from_secs(1),
            max_utterance: Duration::from_secs(25),
            infer_timeout: Duration::from_secs(10),
            health_timeout: Duration::from_secs(2),
            connections: 1,
            max_inflight: 4,
            queue: Default::default(),
        },
    )
    .unwrap()
}

/// The gateway's adapter for `protocol`, pointed at a sim at `addr`.
pub fn backend(protocol: BackendProtocol, addr: SocketAddr) -> Box<dyn SpeechBackend> {
    match protocol {
        BackendProtocol::Riva => Box::new(riva_backend(addr)),
        BackendProtocol::Triton => Box::new(triton_backend(addr)),
        BackendProtocol::Deepgram => panic!("the sim speaks Riva and Triton, not Deepgram"),
        BackendProtocol::OpenAi => panic!("the sim speaks riva and triton, not openai"),
    }
}

pub fn params() -> RecognitionParams {
    RecognitionParams {
        language: "en-US".into(),
        sample_rate_hz: 16_000,
        punctuate: false,
        profanity_filter: false,
        interim_results: true,
        endpointing_ms: None,
        custom: Vec::new(),
        phrases: Vec::new(),
        diarize: false,
    }
}

/// `pcm` in 100 ms chunks (16 kHz), then the end of the audio (the half-close).
pub fn chunks(pcm: &[u8]) -> AudioStream {
    let chunks: Vec<Bytes> = pcm.chunks(3_200).map(Bytes::copy_from_slice).collect();
    futures::stream::iter(chunks).boxed()
}

/// An audio stream the test feeds by hand; dropping the sender half-closes it.
pub fn fed() -> (mpsc::UnboundedSender<Bytes>, AudioStream) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        tx,
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed(),
    )
}

/// Every event until the stream ends, and the error that ended it if one did.
pub async fn collect(mut events: EventStream) -> (Vec<TranscriptEvent>, Option<BackendError>) {
    let mut got = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("the event stream moves within 20 s");
        match next {
            None => return (got, None),
            Some(Ok(ev)) => got.push(ev),
            Some(Err(e)) => return (got, Some(e)),
        }
    }
}

/// The words of the finals, in order.
pub fn final_words(events: &[TranscriptEvent]) -> Vec<StreamWord> {
    events
        .iter()
        .filter(|e| e.is_final)
        .flat_map(|e| e.words.clone())
        .collect()
}
