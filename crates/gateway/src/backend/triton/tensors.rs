//! The tensor contract on the wire: building `ModelInferRequest`s and reading the
//! `TRANSCRIPT` / `IS_FINAL` / `WORDS` / `CONFIDENCE` outputs of a `ModelInferResponse`.
//!
//! Contract (README, "Triton tensor contract"): input `AUDIO` INT16 [-1] (PCM at the
//! model's rate); outputs `TRANSCRIPT` BYTES, `IS_FINAL` BOOL, optional `WORDS` BYTES
//! (JSON list of `{word, start, end, confidence}`, seconds from the sequence start) and
//! optional `CONFIDENCE` FP32.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;

use crate::backend::proto::inference::{
    InferParameter, ModelInferRequest, ModelInferResponse,
    infer_parameter::ParameterChoice,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use crate::backend::{StreamWord, TranscriptEvent};

pub const AUDIO: &str = "AUDIO";
pub const TRANSCRIPT: &str = "TRANSCRIPT";
pub const IS_FINAL: &str = "IS_FINAL";
pub const WORDS: &str = "WORDS";
pub const CONFIDENCE: &str = "CONFIDENCE";

/// Per-request parameters of a sequence (streaming models).
#[derive(Debug, Clone, Copy, Default)]
pub struct SequenceFlags {
    pub sequence_id: i64,
    pub start: bool,
    pub end: bool,
}

fn param_bool(b: bool) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::BoolParam(b)),
    }
}

/// One inference request carrying `pcm` (PCM16LE bytes) as the `AUDIO` tensor. A model
/// with `max_batch_size > 0` (`batched`) takes a batch dimension: the request is a batch
/// of one, shape [1, samples].
pub fn audio_request(
    model: &str,
    id: String,
    pcm: Bytes,
    outputs: &[String],
    batched: bool,
    sequence: Option<SequenceFlags>,
) -> ModelInferRequest {
    let mut parameters = HashMap::new();
    if let Some(seq) = sequence {
        parameters.insert(
            "sequence_id".to_string(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(seq.sequence_id)),
            },
        );
        if seq.start {
            parameters.insert("sequence_start".to_string(), param_bool(true));
        }
        if seq.end {
            parameters.insert("sequence_end".to_string(), param_bool(true));
        }
        // Every request then ends with a response flagged `triton_final_response`,
        // even when the model has nothing to say: that is how completion is seen.
        parameters.insert(
            "triton_enable_empty_final_response".to_string(),
            param_bool(true),
        );
    }
    let samples = (pcm.len() / 2) as i64;
    ModelInferRequest {
        model_name: model.to_string(),
        id,
        parameters,
        inputs: vec![InferInputTensor {
            name: AUDIO.into(),
            datatype: "INT16".into(),
            shape: if batched {
                vec![1, samples]
            } else {
                vec![samples]
            },
            ..Default::default()
        }],
        outputs: outputs
            .iter()
            .map(|name| InferRequestedOutputTensor {
                name: name.clone(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: vec![pcm],
        ..Default::default()
    }
}

/// Whether a streamed response is the last one for its request.
pub fn is_final_response(r: &ModelInferResponse) -> bool {
    matches!(
        r.parameters
            .get("triton_final_response")
            .and_then(|p| p.parameter_choice.as_ref()),
        Some(ParameterChoice::BoolParam(true))
    )
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("output {0} is missing")]
    Missing(&'static str),
    #[error("output {0} is malformed: {1}")]
    Malformed(&'static str, String),
}

#[derive(Deserialize)]
struct JsonWord {
    word: String,
    start: f64,
    end: f64,
    #[serde(default)]
    confidence: Option<f32>,
}

/// Reads a transcript result from a response. `None` for a response without outputs
/// (the empty final response that only marks completion).
pub fn read_result(
    r: &ModelInferResponse,
    received_at: Instant,
) -> Result<Option<TranscriptEvent>, TensorError> {
    if r.outputs.is_empty() {
        return Ok(None);
    }
    let raw = |name: &'static str| -> Option<&[u8]> {
        let idx = r.outputs.iter().position(|o| o.name == name)?;
        r.raw_output_contents.get(idx).map(|b| b.as_ref())
    };
    let typed = |name: &'static str| {
        r.outputs
            .iter()
            .find(|o| o.name == name)
            .and_then(|o| o.contents.as_ref())
    };

    let text = match raw(TRANSCRIPT) {
        Some(bytes) => {
            first_bytes_element(bytes).map_err(|e| TensorError::Malformed(TRANSCRIPT, e))?
        }
        None => typed(TRANSCRIPT)
            .and_then(|c| c.bytes_contents.first().cloned())
            .map(|b| b.to_vec())
            .ok_or(TensorError::Missing(TRANSCRIPT))?,
    };
    let is_final = match raw(IS_FINAL) {
        Some(bytes) => {
            *bytes
                .first()
                .ok_or_else(|| TensorError::Malformed(IS_FINAL, "empty".into()))?
                != 0
        }
        None => typed(IS_FINAL)
            .and_then(|c| c.bool_contents.first().copied())
            .ok_or(TensorError::Missing(IS_FINAL))?,
    };
    let confidence = match raw(CONFIDENCE) {
        Some(b) if b.len() >= 4 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        Some(_) => {
            return Err(TensorError::Malformed(
                CONFIDENCE,
                "shorter than 4 bytes".into(),
            ));
        }
        None => typed(CONFIDENCE)
            .and_then(|c| c.fp32_contents.first().copied())
            .unwrap_or(0.0),
    };
    let words = match raw(WORDS) {
        Some(bytes) => {
            let json = first_bytes_element(bytes).map_err(|e| TensorError::Malformed(WORDS, e))?;
            parse_words(&json)?
        }
        None => match typed(WORDS).and_then(|c| c.bytes_contents.first()) {
            Some(json) => parse_words(json)?,
            None => Vec::new(),
        },
    };
    Ok(Some(TranscriptEvent {
        is_final,
        text: String::from_utf8_lossy(&text).trim().to_string(),
        confidence,
        stability: 0.0,
        audio_processed_ms: None,
        words,
        received_at,
        local: false,
        notice: None,
    }))
}

fn parse_words(json: &[u8]) -> Result<Vec<StreamWord>, TensorError> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let words: Vec<JsonWord> =
        serde_json::from_slice(json).map_err(|e| TensorError::Malformed(WORDS, e.to_string()))?;
    Ok(words
        .into_iter()
        .map(|w| {
            let start = (w.start.max(0.0) * 1000.0).round() as u64;
            StreamWord {
                word: w.word.trim().to_string(),
                start_ms: start,
                end_ms: ((w.end.max(0.0) * 1000.0).round() as u64).max(start),
                confidence: w.confidence.unwrap_or(0.0),
                speaker: None,
            }
        })
        .collect())
}

/// The first element of a raw BYTES tensor: a 4-byte little-endian length, then the bytes.
fn first_bytes_element(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.len() < 4 {
        return Err(format!(
            "{} bytes, shorter than the 4-byte length prefix",
            raw.len()
        ));
    }
    let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
    raw.get(4..4 + len).map(<[u8]>::to_vec).ok_or_else(|| {
        format!(
            "length prefix {len} exceeds the {} bytes present",
            raw.len() - 4
        )
    })
}

/// Encodes strings as a raw BYTES tensor (test doubles and the zero-compute back end).
pub fn bytes_tensor(items: &[&[u8]]) -> Bytes {
    let mut out = Vec::new();
    for item in items {
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend_from_slice(item);
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::proto::inference::model_infer_response::InferOutputTensor;

    fn response(outputs: &[(&str, &str, Bytes)]) -> ModelInferResponse {
        ModelInferResponse {
            outputs: outputs
                .iter()
                .map(|(n, t, _)| InferOutputTensor {
                    name: (*n).into(),
                    datatype: (*t).into(),
                    shape: vec![1],
                    ..Default::default()
                })
                .collect(),
            raw_output_contents: outputs.iter().map(|o| o.2.clone()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn reads_every_output_of_the_contract() {
        let words = br#"[{"word":"hello","start":0.12,"end":0.5,"confidence":0.9},{"word":" world","start":0.6,"end":0.55}]"#;
        let r = response(&[
            (WORDS, "BYTES", bytes_tensor(&[words])),
            (TRANSCRIPT, "BYTES", bytes_tensor(&[b" hello world "])),
            (IS_FINAL, "BOOL", Bytes::from_static(&[1])),
            (
                CONFIDENCE,
                "FP32",
                Bytes::copy_from_slice(&0.75f32.to_le_bytes()),
            ),
        ]);
        let e = read_result(&r, Instant::now()).unwrap().unwrap();
        assert!(e.is_final);
        assert_eq!(e.text, "hello world");
        assert_eq!(e.confidence, 0.75);
        assert_eq!(e.words.len(), 2);
        assert_eq!((e.words[0].start_ms, e.words[0].end_ms), (120, 500));
        assert_eq!(e.words[1].word, "world");
        assert_eq!(e.words[1].end_ms, 600, "an end before the start is clamped");
    }

    #[test]
    fn optional_outputs_may_be_absent_and_empty_responses_mark_completion() {
        let r = response(&[
            (TRANSCRIPT, "BYTES", bytes_tensor(&[b"partial"])),
            (IS_FINAL, "BOOL", Bytes::from_static(&[0])),
        ]);
        let e = read_result(&r, Instant::now()).unwrap().unwrap();
        assert!(!e.is_final);
        assert!(e.words.is_empty());
        assert_eq!(
            read_result(&ModelInferResponse::default(), Instant::now()).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_outputs_are_named() {
        let r = response(&[(TRANSCRIPT, "BYTES", Bytes::from_static(&[9, 0, 0, 0, b'a']))]);
        assert!(matches!(
            read_result(&r, Instant::now()),
            Err(TensorError::Malformed(TRANSCRIPT, _))
        ));
        let r = response(&[(TRANSCRIPT, "BYTES", bytes_tensor(&[b"x"]))]);
        assert_eq!(
            read_result(&r, Instant::now()),
            Err(TensorError::Missing(IS_FINAL))
        );
        let r = response(&[
            (TRANSCRIPT, "BYTES", bytes_tensor(&[b"x"])),
            (IS_FINAL, "BOOL", Bytes::from_static(&[1])),
            (WORDS, "BYTES", bytes_tensor(&[b"{not json"])),
        ]);
        assert!(matches!(
            read_result(&r, Instant::now()),
            Err(TensorError::Malformed(WORDS, _))
        ));
    }

    #[test]
    fn requests_carry_the_sequence_flags() {
        let req = audio_request(
            "asr_stream",
            "7".into(),
            Bytes::from_static(&[1, 0, 2, 0]),
            &[TRANSCRIPT.to_string(), IS_FINAL.to_string()],
            false,
            Some(SequenceFlags {
                sequence_id: 42,
                start: true,
                end: false,
            }),
        );
        assert_eq!(req.inputs[0].shape, vec![2]);
        assert_eq!(req.inputs[0].datatype, "INT16");
        assert_eq!(req.raw_input_contents[0].as_ref(), &[1, 0, 2, 0]);
        let p = |k: &str| {
            req.parameters
                .get(k)
                .and_then(|p| p.parameter_choice.clone())
        };
        assert_eq!(p("sequence_id"), Some(ParameterChoice::Int64Param(42)));
        assert_eq!(p("sequence_start"), Some(ParameterChoice::BoolParam(true)));
        assert_eq!(p("sequence_end"), None);
        assert_eq!(
            p("triton_enable_empty_final_response"),
            Some(ParameterChoice::BoolParam(true))
        );
        assert_eq!(req.outputs.len(), 2);
        let unary = audio_request("asr_offline", "1".into(), Bytes::new(), &[], false, None);
        assert!(unary.parameters.is_empty());
        assert_eq!(unary.inputs[0].shape, vec![0]);
        let batched = audio_request(
            "m",
            "2".into(),
            Bytes::from_static(&[0; 6]),
            &[],
            true,
            None,
        );
        assert_eq!(batched.inputs[0].shape, vec![1, 3], "a batch of one");
    }
}
