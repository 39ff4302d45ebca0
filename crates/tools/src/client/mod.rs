//! Client tools that speak the gateway's WebSocket contracts: the `transcribe` command
//! and the pieces it is built from, over v1, the Deepgram-compatible live dialect or the
//! OpenAI realtime one ([`dialect`]: the few things in which they differ; `eval`, `load`
//! and `chaos` share it).
//!
//! | module | role |
//! |---|---|
//! | [`connect`] | opening a `ws://` / `wss://` socket with a bearer token (and a CA file) |
//! | [`wav`] | PCM16 mono WAV reading (and writing, for tests) |
//! | [`dialect`] | v1, Deepgram or OpenAI realtime: the URL, the first and last message, audio on the wire, reading a server message as v1's, when a session is done |
//! | [`deepgram`] | `/v1/listen`: the URL, `CloseStream`, the server messages a client reads |
//! | [`openai_realtime`] | `/v1/realtime`: `session.update`, base64 appends at 24 kHz (the resampler), the commit, the server events a client reads |
//! | [`events`] | server messages of contract v1, parsed leniently |
//! | [`transcribe`] | streams a WAV file to the gateway, paced, and reports what came back |
//! | [`latency`] | the client-side latency rules and nearest-rank percentiles |
//! | [`render`] | terminal output: the in-place partial line and the latency table |

pub mod connect;
pub mod deepgram;
pub mod dialect;
pub mod events;
pub mod latency;
pub mod openai_realtime;
pub mod render;
pub mod transcribe;
pub mod wav;
pub mod wer;
