//! Reading v1 client messages: binary frames are audio; text frames are JSON objects
//! with a `type` of `start`, `end` or `ping`. Every wrong field gets its own error code and
//! a message naming it; unknown `start.config` keys are ignored. Pure: nothing here logs
//! or counts.

use axum::extract::ws::Message;
use serde_json::{Map, Value};

use crate::session::{Command, ErrorKind, SessionError, StartConfig};

/// Turns one WebSocket message into a command. Control frames (ping/pong) are handled by
/// the WebSocket layer and yield `None`; so does `Close`, which ends the command stream.
pub fn decode(msg: Message) -> Option<Command> {
    match msg {
        Message::Binary(bytes) => Some(Command::Audio(bytes)),
        Message::Text(text) => Some(decode_text(text.as_str())),
        Message::Ping(_) | Message::Pong(_) | Message::Close(_) => None,
    }
}

fn invalid(message: impl Into<String>) -> Command {
    Command::Reject(SessionError::new(ErrorKind::InvalidRequest, message))
}

fn decode_text(text: &str) -> Command {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) if e.to_string().starts_with("number out of range") => {
            return out_of_range(text);
        }
        Err(_) => {
            return invalid(
                "text frames must be JSON objects with a `type` (start, end, ping); \
                 this one is not JSON and was ignored",
            );
        }
    };
    let Some(obj) = value.as_object() else {
        return invalid("text frames must be JSON objects; this one was ignored");
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("start") => match obj.get("config") {
            None | Some(Value::Null) => Command::Start(StartConfig::default()),
            Some(Value::Object(cfg)) => match start_config(cfg) {
                Ok(cfg) => Command::Start(cfg),
                Err(e) => Command::Reject(e),
            },
            Some(_) => invalid("`start.config` must be an object; the start was ignored"),
        },
        Some("end") => Command::End,
        Some("ping") => Command::Ping(obj.get("timestamp").cloned().unwrap_or(Value::Null)),
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            invalid(format!(
                "unknown message type `{shown}` (expected start, end or ping); it was ignored"
            ))
        }
        None => {
            invalid("text frames need a string `type` (start, end or ping); this one was ignored")
        }
    }
}

/// A message that is JSON but holds a number too large for a double (`1e309`): the
/// refusal names the key that holds it, with that key's error code (`sample_rate` is an
/// audio setting: `AUDIO_FORMAT_ERROR`), as for any other wrong value.
fn out_of_range(text: &str) -> Command {
    use serde_json::value::RawValue;
    type Raw<'a> = std::collections::BTreeMap<String, &'a RawValue>;
    let unreadable = |raw: &RawValue| serde_json::from_str::<Value>(raw.get()).is_err();
    let top: Option<Raw<'_>> = serde_json::from_str(text).ok();
    let start_config: Option<Raw<'_>> = top
        .as_ref()
        .filter(|t| t.get("type").map(|v| v.get()) == Some("\"start\""))
        .and_then(|t| t.get("config"))
        .and_then(|c| serde_json::from_str(c.get()).ok());
    if let Some(cfg) = start_config
        && let Some((key, _)) = cfg.iter().find(|(_, v)| unreadable(v))
    {
        let shown: String = key.chars().take(40).collect();
        return if key == "sample_rate" {
            Command::Reject(SessionError::new(
                ErrorKind::AudioFormat,
                "`start.config.sample_rate` must be an integer number of Hz between 8000 and \
                 48000; the start was ignored",
            ))
        } else {
            invalid(format!(
                "`start.config.{shown}` holds a number out of range; the start was ignored"
            ))
        };
    }
    invalid("this message holds a number out of range and was ignored")
}

/// Most bytes of one `custom_configuration` key and of one value, and of all of them.
pub const CUSTOM_KEY_BYTES: usize = 128;
pub const CUSTOM_VALUE_BYTES: usize = 1024;
pub const CUSTOM_TOTAL_BYTES: usize = 4096;

/// Reads `start.config`. Unknown keys are ignored; a known key of the wrong type refuses
/// the whole start (audio keys with `AUDIO_FORMAT_ERROR`, others with `INVALID_REQUEST`).
fn start_config(cfg: &Map<String, Value>) -> Result<StartConfig, SessionError> {
    let mut out = StartConfig::default();
    let bad = |kind, key: &str, want: &str| {
        SessionError::new(
            kind,
            format!("`start.config.{key}` must be {want}; the start was ignored"),
        )
    };
    let flag = |key: &str, slot: &mut bool| -> Result<(), SessionError> {
        match cfg.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Bool(b)) => {
                *slot = *b;
                Ok(())
            }
            Some(_) => Err(bad(ErrorKind::InvalidRequest, key, "true or false")),
        }
    };
    flag("interim_results", &mut out.interim_results)?;
    flag("punctuate", &mut out.punctuate)?;
    flag("profanity_filter", &mut out.profanity_filter)?;
    flag("word_timestamps", &mut out.word_timestamps)?;
    match cfg.get("language") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 32 => {
            out.language = s.trim().to_string()
        }
        Some(_) => {
            return Err(bad(
                ErrorKind::InvalidRequest,
                "language",
                "a language code such as en-US, or auto",
            ));
        }
    }
    match cfg.get("sample_rate") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => out.sample_rate = n,
            None => {
                return Err(bad(
                    ErrorKind::AudioFormat,
                    "sample_rate",
                    "an integer number of Hz between 8000 and 48000",
                ));
            }
        },
    }
    match cfg.get("encoding") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.eq_ignore_ascii_case("pcm_s16le") => {}
        Some(_) => {
            return Err(bad(
                ErrorKind::AudioFormat,
                "encoding",
                "\"pcm_s16le\" (16-bit little-endian mono PCM)",
            ));
        }
    }
    match cfg.get("model") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => {
            out.model = Some(s.to_ascii_lowercase())
        }
        Some(_) => {
            return Err(bad(
                ErrorKind::InvalidRequest,
                "model",
                "a route name such as default",
            ));
        }
    }
    match cfg.get("endpointing_ms") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64().filter(|n| (10..=10_000).contains(n)) {
            Some(n) => out.endpointing_ms = Some(n as u32),
            None => {
                return Err(bad(
                    ErrorKind::InvalidRequest,
                    "endpointing_ms",
                    "an integer between 10 and 10000",
                ));
            }
        },
    }
    match cfg.get("custom_configuration") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) if map.len() <= 32 => {
            for (k, v) in map {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(bad(
                            ErrorKind::InvalidRequest,
                            "custom_configuration",
                            "an object of string values",
                        ));
                    }
                };
                if k.len() > CUSTOM_KEY_BYTES || v.len() > CUSTOM_VALUE_BYTES {
                    return Err(bad(
                        ErrorKind::InvalidRequest,
                        "custom_configuration",
                        "an object of keys up to 128 bytes and values up to 1024 bytes",
                    ));
                }
                out.custom.push((k.clone(), v));
            }
            let total: usize = out.custom.iter().map(|(k, v)| k.len() + v.len()).sum();
            if total > CUSTOM_TOTAL_BYTES {
                return Err(bad(
                    ErrorKind::InvalidRequest,
                    "custom_configuration",
                    "at most 4096 bytes of keys and values in all",
                ));
            }
        }
        Some(_) => {
            return Err(bad(
                ErrorKind::InvalidRequest,
                "custom_configuration",
                "an object of at most 32 string values",
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(s: &str) -> Command {
        decode(Message::Text(s.into())).unwrap()
    }

    fn rejected(cmd: Command) -> SessionError {
        match cmd {
            Command::Reject(e) => e,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn start_with_the_contract_example() {
        let cmd = text(
            r#"{"type":"start","config":{"language":"auto","interim_results":true,"punctuate":true,"profanity_filter":false}}"#,
        );
        assert_eq!(cmd, Command::Start(StartConfig::default()));
    }

    #[test]
    fn start_reads_every_optional_key_and_ignores_unknown_ones() {
        let cmd = text(
            r#"{"type":"start","config":{"sample_rate":8000,"encoding":"pcm_s16le","word_timestamps":false,
            "model":"Offline","endpointing_ms":700,"language":"de-DE","custom_configuration":{"a":"b","n":3},"shiny":1}}"#,
        );
        let Command::Start(c) = cmd else { panic!() };
        assert_eq!(c.sample_rate, 8000);
        assert!(!c.word_timestamps);
        assert_eq!(c.model.as_deref(), Some("offline"));
        assert_eq!(c.endpointing_ms, Some(700));
        assert_eq!(c.language, "de-DE");
        assert_eq!(
            c.custom,
            vec![("a".into(), "b".into()), ("n".into(), "3".into())]
        );
        assert_eq!(
            text(r#"{"type":"start"}"#),
            Command::Start(StartConfig::default())
        );
    }

    #[test]
    fn wrong_types_name_the_key_and_the_code() {
        let e = rejected(text(r#"{"type":"start","config":{"sample_rate":"16k"}}"#));
        assert_eq!(e.kind, ErrorKind::AudioFormat);
        assert!(e.message.contains("sample_rate"));
        let e = rejected(text(r#"{"type":"start","config":{"encoding":"opus"}}"#));
        assert_eq!(e.kind, ErrorKind::AudioFormat);
        let e = rejected(text(r#"{"type":"start","config":{"punctuate":"yes"}}"#));
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert!(e.message.contains("punctuate"));
        let e = rejected(text(r#"{"type":"start","config":{"endpointing_ms":5}}"#));
        assert!(e.message.contains("endpointing_ms"));
        assert_eq!(
            rejected(text(r#"{"type":"start","config":[1]}"#)).kind,
            ErrorKind::InvalidRequest
        );
    }

    #[test]
    fn out_of_range_numbers_name_their_key_and_code() {
        let e = rejected(text(r#"{"type":"start","config":{"sample_rate":1e309}}"#));
        assert_eq!(e.kind, ErrorKind::AudioFormat);
        assert!(e.message.contains("sample_rate"), "{}", e.message);
        let e = rejected(text(
            r#"{"type":"start","config":{"endpointing_ms":-1e999}}"#,
        ));
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert!(e.message.contains("endpointing_ms"), "{}", e.message);
        let e = rejected(text(r#"{"type":"ping","timestamp":1e400}"#));
        assert_eq!(e.kind, ErrorKind::InvalidRequest);
        assert!(e.message.contains("out of range"), "{}", e.message);
    }

    #[test]
    fn custom_configuration_is_bounded() {
        let cfg = |map: Value| {
            text(&json!({"type":"start","config":{"custom_configuration":map}}).to_string())
        };
        let Command::Start(c) = cfg(json!({"k": "v".repeat(1024)})) else {
            panic!()
        };
        assert_eq!(c.custom[0].1.len(), 1024);
        for too_much in [
            json!({"k": "v".repeat(1025)}),
            json!({"k".repeat(129): "v"}),
            Value::Object(
                (0..5)
                    .map(|i| (format!("k{i}"), json!("v".repeat(1000))))
                    .collect(),
            ),
        ] {
            let e = rejected(cfg(too_much));
            assert_eq!(e.kind, ErrorKind::InvalidRequest);
            assert!(e.message.contains("custom_configuration"), "{}", e.message);
        }
    }

    #[test]
    fn junk_is_an_invalid_request() {
        for junk in [
            "hello",
            "[1,2]",
            r#"{"type":"dance"}"#,
            r#"{"kind":"start"}"#,
            r#"{"type":5}"#,
        ] {
            assert_eq!(
                rejected(text(junk)).kind,
                ErrorKind::InvalidRequest,
                "{junk}"
            );
        }
        let e = rejected(text(&format!(r#"{{"type":"{}"}}"#, "x".repeat(500))));
        assert!(e.message.len() < 200, "echoed type is truncated");
    }

    #[test]
    fn end_ping_and_binary() {
        assert_eq!(text(r#"{"type":"end"}"#), Command::End);
        assert_eq!(
            text(r#"{"type":"ping","timestamp":1702483200000}"#),
            Command::Ping(serde_json::json!(1702483200000u64))
        );
        assert_eq!(
            decode(Message::Binary(vec![1u8, 2].into())),
            Some(Command::Audio(vec![1u8, 2].into()))
        );
        assert_eq!(decode(Message::Close(None)), None);
    }
}
