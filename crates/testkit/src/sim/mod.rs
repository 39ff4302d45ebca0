//! A zero-compute back end for tests (the `sim-backend` binary). It is **not** a
//! recogniser. It speaks Riva `StreamingRecognize` (with the gRPC health service) and
//! Triton `ModelStreamInfer` on real gRPC, with the same generated protos ([`sgw_proto`]) the
//! gateway's adapters use, and
//! answers with words derived from the audio alone:
//!
//! - [`marker`] audio (block `k` is `±k`) comes back as one word `w{k}` per block, timed by
//!   its samples, so a chaos test can prove that no audio was lost or duplicated;
//! - any other audio gives one word per `word` of stream time, cycling through a
//!   vocabulary; quiet windows (every |sample| < 64) give none.
//!
//! Every audio request gets an answer (Riva: a partial, or an empty response that serves
//! as a heartbeat; Triton: results, then the empty `triton_final_response`); every
//! `final_words` words make a final, and the end of the stream finalises the rest.
//!
//! A [`Behaviour`] makes the process misbehave for chaos tests. It is fixed per process:
//! to change it, restart the process (there is no run-time control, on purpose).
//!
//! Cost per stream is a little state polled by tonic's own connection task: no task or
//! thread per stream, no lock shared between streams, no timer in normal mode, and no
//! allocation per sample; one HTTP/2 connection takes any number of concurrent streams.
//! Its HTTP/2 connection window is [`CONNECTION_WINDOW`] (32 MiB), not hyper's 1 MiB: with
//! thousands of real-time streams on one connection (32 KB/s each), a 1 MiB window made
//! flow control — not the gateway — the bottleneck (2,000 sessions: partial p50 230 ms,
//! against 3 ms with the large window). Real gRPC servers grow theirs by BDP probing.
//!
//! | module | role |
//! |---|---|
//! | [`marker`] | building and reading marker audio (shared with clients and tests) |
//! | [`recognizer`] | words from audio: marker runs and transcript windows, finals |
//! | [`driver`] | one response stream per call, with the behaviour applied |
//! | [`riva`] | the Riva and health services, [`serve_riva`] |
//! | [`triton`] | the KServe v2 service with one streaming model, [`serve_triton`] |
//! | [`local`] | a sim server in this process on port 0, and the gateway's adapters pointed at it (for tests) |

/// The HTTP/2 connection window the sim advertises (see the module docs).
pub const CONNECTION_WINDOW: u32 = 32 << 20;

pub mod driver;
pub mod local;
pub mod marker;
pub mod recognizer;
pub mod riva;
pub mod triton;

use std::sync::Arc;
use std::time::Duration;

pub use riva::serve_riva;
pub use triton::serve_triton;

use recognizer::RecognizerConfig;

/// How the sim (mis)behaves, for the whole life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers every request.
    Normal,
    /// Every stream and unary call fails with `UNAVAILABLE`; health says not serving
    /// (Riva `NOT_SERVING`, Triton `ServerReady` false).
    Unavailable,
    /// Accepts streams and reads their audio, but never answers; health says serving.
    Hang,
    /// Every stream response leaves this long after its request arrived, in order.
    Slow(Duration),
    /// A stream fails with `UNAVAILABLE` once it has carried this much audio.
    FailAfter(Duration),
}

/// Settings of one sim process.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub behaviour: Behaviour,
    /// Stream time per word of transcript mode.
    pub word: Duration,
    /// Words per final.
    pub final_words: usize,
    /// Transcript-mode words, in turn; empty means [`BUILT_IN_SENTENCE`].
    pub vocabulary: Vec<String>,
    /// The model `GetRivaSpeechRecognitionConfig` lists (a gateway URL may name it).
    pub riva_model: String,
    /// The one Triton model served.
    pub triton_model: String,
    /// Rate of Triton's `AUDIO` tensor (KServe requests do not carry one).
    pub triton_sample_rate_hz: u32,
}

/// Transcript mode's words when no vocabulary is given.
pub const BUILT_IN_SENTENCE: &str = "the quick brown fox jumps over the lazy dog";

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            behaviour: Behaviour::Normal,
            word: Duration::from_millis(400),
            final_words: 6,
            vocabulary: Vec::new(),
            riva_model: "sim-asr".into(),
            triton_model: "asr_stream".into(),
            triton_sample_rate_hz: 16_000,
        }
    }
}

impl SimOptions {
    fn recognizer_config(&self) -> Arc<RecognizerConfig> {
        let vocabulary: Arc<[String]> = if self.vocabulary.is_empty() {
            BUILT_IN_SENTENCE
                .split_whitespace()
                .map(str::to_string)
                .collect()
        } else {
            self.vocabulary.clone().into()
        };
        Arc::new(RecognizerConfig {
            word_ms: (self.word.as_millis() as u64).max(1),
            final_words: self.final_words.max(1),
            vocabulary,
        })
    }
}
