//! The client and operator tools of speech-gateway, behind the `sgw` binary. They speak the
//! gateway's contracts from the outside, as apps do; none of this is in the product.
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`client`] | `transcribe`: the v1 client (WAV reader, pacing, latency figures, WER) |
//! | [`golden`] | `eval`: the golden-fixture WER and latency harness (manifest, runs, reports, chart) |
//! | [`load`] | `load`: the load generator (WebSocket sessions, direct Riva baseline, process sampling) |
//! | [`chaos`] | `chaos`: scenario files, a runner over real processes (the gateway, sim back ends, the test kit's fault proxy), the report |

pub mod chaos;
pub mod client;
pub mod golden;
pub mod load;
