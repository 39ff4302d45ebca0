//! Client tools that speak the gateway's WebSocket contract (v1): the `transcribe`
//! command and the pieces it is built from.
//!
//! | module | role |
//! |---|---|
//! | [`connect`] | opening a `ws://` / `wss://` socket with a bearer token (and a CA file) |
//! | [`wav`] | PCM16 mono WAV reading (and writing, for tests) |
//! | [`events`] | server messages of contract v1, parsed leniently |
//! | [`transcribe`] | streams a WAV file to the gateway, paced, and reports what came back |
//! | [`latency`] | the client-side latency rules and nearest-rank percentiles |
//! | [`render`] | terminal output: the in-place partial line and the latency table |

pub mod connect;
pub mod events;
pub mod latency;
pub mod render;
pub mod transcribe;
pub mod wav;
pub mod wer;
