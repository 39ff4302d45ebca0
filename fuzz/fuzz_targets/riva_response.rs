//! The Riva adapter's response mapping (`backend::riva::map_response`): arbitrary bytes
//! decoded as a `StreamingRecognizeResponse` (what tonic hands the adapter), and a gRPC
//! status with an arbitrary code and message.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use speech_gateway::backend::proto::nvidia::riva::asr::StreamingRecognizeResponse;
use speech_gateway::backend::riva::map_response;

fuzz_target!(|data: &[u8]| {
    if let Ok(resp) = StreamingRecognizeResponse::decode(data) {
        let kept = resp.results.iter().filter(|r| r.channel_tag <= 1).count();
        let events = map_response(Ok(resp));
        assert_eq!(
            events.len(),
            kept.max(1),
            "one event per result, or one progress event"
        );
        for ev in &events {
            let ev = ev
                .as_ref()
                .expect("a response message never maps to an error");
            if kept == 0 {
                assert!(ev.is_progress());
            }
            common::check_event(ev);
        }
    }

    if let Some((&code, message)) = data.split_first() {
        let status = tonic::Status::new(
            tonic::Code::from(i32::from(code % 20)),
            String::from_utf8_lossy(message),
        );
        let events = map_response(Err(status));
        assert_eq!(events.len(), 1);
        let e = events[0].as_ref().expect_err("a status maps to an error");
        assert!(
            e.message.chars().count() <= 200 + 32,
            "the server's message is capped"
        );
    }
});
