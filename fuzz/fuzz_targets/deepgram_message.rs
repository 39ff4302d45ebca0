//! The Deepgram adapter's server-message mapping (`backend::deepgram::map_message`):
//! arbitrary bytes as a WebSocket text message from the upstream server.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use speech_gateway::backend::deepgram::{Mapped, map_message};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match map_message(text, std::time::Instant::now()) {
        Ok(Mapped::Event(ev)) => common::check_event(&ev),
        Ok(Mapped::Error(description)) => {
            assert!(
                description.chars().count() <= 200,
                "descriptions are capped"
            )
        }
        Err(e) => assert!(
            e.message.chars().count() <= 200 + 32,
            "parse errors are capped"
        ),
    }
});
