//! The v1 client-message decoder (`ingress::v1::decode`), as the WebSocket handler calls it.
//!
//! Binary frames are audio, passed on untouched. Text frames (valid UTF-8: the WebSocket
//! layer refuses anything else) always become a command: never a panic, and anything the
//! contract does not allow is a `Reject` with a bounded message that renders as the
//! contract's `error` message.
#![no_main]

use axum::extract::ws::Message;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use speech_gateway::ingress::v1::{decode, encode};
use speech_gateway::session::{Command, ErrorKind, Event};

/// Longest error message the decoder may send back: it names a key or echoes at most 40
/// characters of an unknown type, never the whole message.
const MAX_MESSAGE_BYTES: usize = 256;

fn rendered(ev: &Event) -> Value {
    match encode(ev).expect("v1 renders every event a v1 session sends") {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("events render as JSON"),
        other => panic!("events other than close render as text, got {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let audio = Bytes::copy_from_slice(data);
    assert_eq!(
        decode(Message::Binary(audio.clone())),
        Some(Command::Audio(audio))
    );

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cmd = decode(Message::Text(text.into())).expect("a text frame always yields a command");
    match cmd {
        Command::Start(cfg) => {
            assert!(!cfg.language.is_empty() && cfg.language.len() <= 32);
            assert_eq!(cfg.language, cfg.language.trim());
            if let Some(model) = &cfg.model {
                assert!(!model.is_empty() && model.len() <= 64);
                assert_eq!(*model, model.to_ascii_lowercase());
            }
            if let Some(ms) = cfg.endpointing_ms {
                assert!((10..=10_000).contains(&ms));
            }
            assert!(cfg.custom.len() <= 32);
        }
        Command::End => {}
        Command::Ping(timestamp) => {
            let pong = rendered(&Event::Pong {
                timestamp: timestamp.clone(),
                server_time_ms: 1,
            });
            assert_eq!(pong["type"], "pong");
            assert_eq!(
                pong["timestamp"], timestamp,
                "the timestamp is echoed as sent"
            );
        }
        Command::Reject(e) => {
            assert!(
                matches!(e.kind, ErrorKind::InvalidRequest | ErrorKind::AudioFormat),
                "{e:?}"
            );
            assert!(
                !e.message.is_empty() && e.message.len() <= MAX_MESSAGE_BYTES,
                "{e:?}"
            );
            let wire = rendered(&Event::Error(e.clone()));
            assert_eq!(wire["type"], "error");
            assert_eq!(
                wire["recoverable"], true,
                "a bad message never ends the session"
            );
        }
        Command::Audio(_) => panic!("a text frame decoded as audio"),
        Command::KeepAlive | Command::Finalize | Command::Reply(_) => {
            panic!("v1 has no KeepAlive, Finalize or dialect reply")
        }
    }
});
