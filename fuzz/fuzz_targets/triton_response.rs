//! The Triton adapter's response mapping: arbitrary bytes decoded as a
//! `ModelStreamInferResponse` and fed to `streaming::map_message` (which reads the tensor
//! contract with `tensors::read_result`, as the offline path does), and decoded as a
//! `ModelConfigResponse` and fed to `shape_of`.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use speech_gateway::backend::BackendErrorKind;
use speech_gateway::backend::proto::inference::{ModelConfigResponse, ModelStreamInferResponse};
use speech_gateway::backend::triton::shape_of;
use speech_gateway::backend::triton::streaming::map_message;

fuzz_target!(|data: &[u8]| {
    // The first byte is the id of the `sequence_end` request, so that the fuzzer can
    // reach the end of a stream (ids are decimal strings in the response).
    let Some((&end_id, msg)) = data.split_first() else {
        return;
    };
    if let Ok(msg) = ModelStreamInferResponse::decode(msg) {
        let step = map_message(&msg, u64::from(end_id), std::time::Instant::now());
        if !msg.error_message.is_empty() {
            assert!(step.done, "a model error ends the stream");
            let e = step.item.as_ref().unwrap().as_ref().unwrap_err();
            assert_eq!(e.kind, BackendErrorKind::ServerError);
            assert!(
                e.message.chars().count() <= 200 + 16,
                "the model's message is capped"
            );
        } else if msg.infer_response.is_none() {
            assert!(!step.done && step.item.is_none());
        }
        match &step.item {
            Some(Ok(ev)) => common::check_event(ev),
            Some(Err(e)) => assert!(matches!(
                e.kind,
                BackendErrorKind::ServerError | BackendErrorKind::Protocol
            )),
            None => {}
        }
    }

    if let Ok(resp) = ModelConfigResponse::decode(data) {
        let _ = shape_of(&resp.config.unwrap_or_default());
    }
});
