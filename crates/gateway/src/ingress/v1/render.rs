//! The v1 result messages (`partial`, `final`) written straight into the outgoing text.
//!
//! A partial of a long utterance carries every word so far, and one goes out for every
//! back-end result: this is the gateway's hottest encoder. It writes the JSON in one pass
//! into a `String` sized for it up front (no intermediate wire values, no regrowth), with
//! the same bytes `serde_json` gives for the [`super::wire`] types — the tests below hold
//! it to that, field order and number formatting included.

use super::round3;
use crate::session::{Transcript, Word};

/// `{"type":"partial","text":…,"confidence":…,"timestamp_ms":…[,"words":[…]]}`
pub fn partial(t: &Transcript) -> String {
    let mut out = head("partial", t, 0);
    out.push_str(r#","timestamp_ms":"#);
    push_u64(&mut out, t.timestamp_ms);
    push_words(&mut out, t.words.as_deref());
    out.push('}');
    out
}

/// `{"type":"final","text":…,"confidence":…,"is_end_of_utterance":true,"timestamp_ms":…,
/// "duration_ms":…[,"words":[…]]}`
pub fn final_(t: &Transcript) -> String {
    let mut out = head("final", t, 48);
    out.push_str(r#","is_end_of_utterance":true,"timestamp_ms":"#);
    push_u64(&mut out, t.timestamp_ms);
    out.push_str(r#","duration_ms":"#);
    push_u64(&mut out, t.duration_ms);
    push_words(&mut out, t.words.as_deref());
    out.push('}');
    out
}

/// The message sized for `t` (plus `extra` bytes), opened with its type, text and
/// confidence.
fn head(kind: &str, t: &Transcript, extra: usize) -> String {
    let mut out = String::with_capacity(size_hint(t) + extra);
    out.push_str(r#"{"type":""#);
    out.push_str(kind);
    out.push_str(r#"","text":"#);
    push_str(&mut out, &t.text);
    out.push_str(r#","confidence":"#);
    push_f32(&mut out, t.confidence);
    out
}

/// Bytes the message takes when nothing needs escaping (a little over, so that it is
/// written without growing).
fn size_hint(t: &Transcript) -> usize {
    let words = t.words.as_deref().map_or(0, |ws| {
        12 + ws.iter().map(|w| w.word.len() + 64).sum::<usize>()
    });
    96 + t.text.len() + words
}

fn push_words(out: &mut String, words: Option<&[Word]>) {
    let Some(words) = words else {
        return;
    };
    out.push_str(r#","words":["#);
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"word":"#);
        push_str(out, &w.word);
        out.push_str(r#","start":"#);
        push_secs(out, w.start);
        out.push_str(r#","end":"#);
        push_secs(out, w.end);
        out.push_str(r#","confidence":"#);
        push_f32(out, w.confidence);
        out.push('}');
    }
    out.push(']');
}

fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// As serde_json writes an `f32`: shortest round-trip digits, `null` when not finite.
fn push_f32(out: &mut String, x: f32) {
    if x.is_finite() {
        out.push_str(zmij::Buffer::new().format_finite(x));
    } else {
        out.push_str("null");
    }
}

/// Seconds rounded to the millisecond, as serde_json writes `round3(x)`: the decimal of
/// the whole milliseconds with trailing zeros dropped (`1.25`, `2.0`). Written from the
/// integer, which is what the shortest round-trip form of `k / 1000` is for any time
/// below 10^9 s; anything else takes the float path.
fn push_secs(out: &mut String, x: f64) {
    let ms = (x * 1000.0).round();
    if !(ms.is_sign_positive() && ms < 1e12) {
        let r = round3(x);
        if r.is_finite() {
            out.push_str(zmij::Buffer::new().format_finite(r));
        } else {
            out.push_str("null");
        }
        return;
    }
    let ms = ms as u64;
    push_u64(out, ms / 1000);
    let frac = ms % 1000;
    out.push('.');
    if frac == 0 {
        out.push('0');
        return;
    }
    let digits = [
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    let len = if digits[2] != b'0' {
        3
    } else if digits[1] != b'0' {
        2
    } else {
        1
    };
    for &d in &digits[..len] {
        out.push(char::from(d));
    }
}

/// A JSON string literal, escaped as serde_json escapes: `"` and `\`, and the control
/// characters (`\b \t \n \f \r` by name, the rest as `\u00XX`); everything else as is.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte matched above is ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::super::wire::{self, ServerMessage};
    use super::*;

    /// What serde_json makes of the same message through the wire types.
    fn by_serde(t: &Transcript, is_final: bool) -> String {
        let words = t.words.as_ref().map(|ws| {
            ws.iter()
                .map(|w| wire::Word {
                    word: Cow::Borrowed(&w.word),
                    start: round3(w.start),
                    end: round3(w.end),
                    confidence: w.confidence,
                })
                .collect()
        });
        let msg = if is_final {
            ServerMessage::Final(wire::Final {
                text: Cow::Borrowed(&t.text),
                confidence: t.confidence,
                is_end_of_utterance: true,
                timestamp_ms: t.timestamp_ms,
                duration_ms: t.duration_ms,
                words,
            })
        } else {
            ServerMessage::Partial(wire::Partial {
                text: Cow::Borrowed(&t.text),
                confidence: t.confidence,
                timestamp_ms: t.timestamp_ms,
                words,
            })
        };
        serde_json::to_string(&msg).unwrap()
    }

    fn word(word: &str, start: f64, end: f64, confidence: f32) -> Word {
        Word {
            word: word.into(),
            start,
            end,
            confidence,
            speaker: None,
        }
    }

    fn check(t: &Transcript) {
        assert_eq!(partial(t), by_serde(t, false), "partial of {t:?}");
        assert_eq!(final_(t), by_serde(t, true), "final of {t:?}");
        assert!(partial(t).capacity() >= partial(t).len());
    }

    #[test]
    fn the_bytes_are_serde_jsons_for_ordinary_results() {
        let mut t = Transcript {
            text: "hello world".into(),
            confidence: 0.9,
            timestamp_ms: 1_250,
            duration_ms: 1_250,
            words: Some(vec![
                word("hello", 0.1, 0.4, 0.8),
                word("world", 0.5, 1.0, 1.0),
            ]),
            from_finalize: false,
        };
        check(&t);
        t.words = None;
        check(&t);
        t.words = Some(Vec::new());
        t.text.clear();
        t.confidence = 0.0;
        check(&t);
    }

    #[test]
    fn the_bytes_are_serde_jsons_for_awkward_strings_and_numbers() {
        let every_control: String = (0u8..0x20).map(char::from).collect();
        let texts = [
            every_control.as_str(),
            "quote \" backslash \\ slash / del \u{7f}",
            "héllo wörld — 日本語 🎙",
            "",
        ];
        let times = [
            0.0,
            0.001,
            0.01,
            0.1,
            0.12,
            0.123,
            0.1234,
            0.0005,
            1.0,
            2.5,
            59.999,
            60.0,
            123.456,
            3599.9995,
            86_400.0,
            1e8 + 0.25,
            1e9 + 0.5,
            1e12,
            -0.5,
            -1e-9,
            f64::NAN,
            f64::INFINITY,
            0.30000000000000004,
            1.0 / 3.0,
        ];
        let confidences = [
            0.0f32,
            1.0,
            0.5,
            0.9,
            0.123_456_79,
            1e-7,
            3.4e38,
            -0.25,
            f32::NAN,
            f32::INFINITY,
        ];
        for (i, text) in texts.iter().enumerate() {
            let words = times
                .iter()
                .zip(confidences.iter().cycle())
                .map(|(&t, &c)| word(text, t, t + 0.25, c))
                .collect();
            check(&Transcript {
                text: (*text).into(),
                confidence: confidences[i % confidences.len()],
                timestamp_ms: u64::MAX - i as u64,
                duration_ms: i as u64,
                words: Some(words),
                from_finalize: false,
            });
        }
        // Every millisecond of the first minute, as the timeline makes them.
        let words: Vec<Word> = (0..60_000u64)
            .step_by(7)
            .map(|ms| word("w", ms as f64 / 1000.0, (ms + 3) as f64 / 1000.0, 0.5))
            .collect();
        check(&Transcript {
            text: "w".into(),
            confidence: 0.5,
            timestamp_ms: 60_000,
            duration_ms: 60_000,
            words: Some(words),
            from_finalize: false,
        });
    }
}
