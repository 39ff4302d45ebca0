//! Speech cues a client may ask for besides transcripts (Deepgram's `vad_events` and
//! `utterance_end_ms`), computed by the session from what it already has:
//!
//! - **speech started**: the gateway's own VAD (earshot, the one the offline Triton adapter
//!   segments with) over the audio as it arrives. Speech starts at the first of
//!   [`ONSET_FRAMES`] consecutive 20 ms speech frames after at least [`RESET`] of non-speech
//!   (or at the session's start), so pauses between words do not each start speech.
//! - **utterance end**: once words were transcribed, the first moment the session's audio
//!   runs `utterance_end_ms` past the end of the last word while the back end holds no open
//!   partial with words — a gap in the words, measured in audio time. Sent once per gap.
//!
//! Both are off unless asked for; a session that asks for neither pays nothing per frame.

use earshot::{VoiceActivityDetector, VoiceActivityProfile};

/// VAD frame length.
const FRAME_MS: u64 = 20;
/// Consecutive speech frames that start speech.
const ONSET_FRAMES: u32 = 3;
/// Non-speech that ends it (the next speech starts anew).
const RESET: u64 = 500;

/// Whether a 20 ms frame at `rate` is speech (rates earshot does not take count as speech).
pub(crate) fn is_speech(vad: &mut VoiceActivityDetector, rate: u32, frame: &[i16]) -> bool {
    let r = match rate {
        8_000 => vad.predict_8khz(frame),
        16_000 => vad.predict_16khz(frame),
        32_000 => vad.predict_32khz(frame),
        48_000 => vad.predict_48khz(frame),
        _ => Ok(true),
    };
    r.unwrap_or(true)
}

/// Speech onsets over a stream of samples.
pub(super) struct SpeechDetector {
    vad: VoiceActivityDetector,
    rate: u32,
    frame: Vec<i16>,
    frame_len: usize,
    /// Samples consumed (whole frames).
    position: u64,
    in_speech: bool,
    /// Consecutive speech frames, and the sample where the run began.
    run: u32,
    run_start: u64,
    /// Consecutive non-speech samples while in speech.
    quiet: u64,
}

impl SpeechDetector {
    pub fn new(rate: u32) -> Self {
        let frame_len = (u64::from(rate) * FRAME_MS / 1000) as usize;
        SpeechDetector {
            vad: VoiceActivityDetector::new(VoiceActivityProfile::VERY_AGGRESSIVE),
            rate,
            frame: Vec::with_capacity(frame_len),
            frame_len,
            position: 0,
            in_speech: false,
            run: 0,
            run_start: 0,
            quiet: 0,
        }
    }

    /// Feeds PCM16LE samples; the session time (ms) of a speech onset inside them, if any.
    pub fn push(&mut self, pcm: &[u8]) -> Option<u64> {
        let mut onset = None;
        for pair in pcm.chunks_exact(2) {
            self.frame.push(i16::from_le_bytes([pair[0], pair[1]]));
            if self.frame.len() < self.frame_len {
                continue;
            }
            let speech = is_speech(&mut self.vad, self.rate, &self.frame);
            let start = self.position;
            self.position += self.frame.len() as u64;
            self.frame.clear();
            if speech {
                self.quiet = 0;
                if self.run == 0 {
                    self.run_start = start;
                }
                self.run += 1;
                if !self.in_speech && self.run >= ONSET_FRAMES {
                    self.in_speech = true;
                    onset.get_or_insert(self.run_start * 1000 / u64::from(self.rate));
                }
            } else {
                self.run = 0;
                if self.in_speech {
                    self.quiet += self.frame_len as u64;
                    if self.quiet * 1000 >= RESET * u64::from(self.rate) {
                        self.in_speech = false;
                    }
                }
            }
        }
        onset
    }
}

/// Gaps in the words, for utterance ends.
#[derive(Debug, Default)]
pub(super) struct WordGaps {
    /// End (session ms) of the last word seen, while no utterance end has been sent for it.
    pending: Option<u64>,
}

impl WordGaps {
    /// A result's words end at `end_ms` (the latest word seen so far, or later).
    pub fn words_until(&mut self, end_ms: u64) {
        if self.pending.is_none_or(|p| end_ms > p) {
            self.pending = Some(end_ms);
        }
    }

    /// At `audio_ms` of session audio, with or without an open partial holding words: the
    /// end of the last word if the gap after it reached `gap_ms` (then it is not sent
    /// again until new words come).
    pub fn check(&mut self, audio_ms: u64, gap_ms: u64, open_words: bool) -> Option<u64> {
        let last = self.pending?;
        if open_words || audio_ms < last + gap_ms {
            return None;
        }
        self.pending = None;
        Some(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcm(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn speech_clip() -> Vec<i16> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/hello.wav");
        let bytes = std::fs::read(path).unwrap();
        bytes[44..]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect()
    }

    #[test]
    fn speech_after_silence_starts_once_per_utterance() {
        let speech = speech_clip();
        let mut audio = vec![0i16; 16_000]; // 1 s of silence
        audio.extend_from_slice(&speech);
        audio.extend(std::iter::repeat_n(0i16, 16_000));
        audio.extend_from_slice(&speech);
        let mut d = SpeechDetector::new(16_000);
        let mut onsets = Vec::new();
        // Fed in uneven chunks, as frames arrive.
        for chunk in pcm(&audio).chunks(1_234) {
            onsets.extend(d.push(chunk));
        }
        assert_eq!(onsets.len(), 2, "{onsets:?}");
        let first_speech_ms =
            1_000 + speech.iter().position(|s| s.abs() > 500).unwrap() as u64 / 16;
        assert!(
            onsets[0] >= 1_000 && onsets[0] <= first_speech_ms + 200,
            "{onsets:?} vs speech at {first_speech_ms}"
        );
        let second = 1_000 + speech.len() as u64 / 16 + 1_000;
        assert!(
            onsets[1] >= second && onsets[1] <= second + 700,
            "{onsets:?}"
        );
    }

    #[test]
    fn silence_never_starts_speech() {
        let mut d = SpeechDetector::new(16_000);
        assert_eq!(d.push(&pcm(&vec![0i16; 48_000])), None);
    }

    #[test]
    fn an_utterance_end_comes_once_per_gap_and_not_while_words_are_open() {
        let mut g = WordGaps::default();
        assert_eq!(g.check(5_000, 1_000, false), None, "no words yet");
        g.words_until(1_200);
        assert_eq!(g.check(2_100, 1_000, false), None, "gap too short");
        assert_eq!(
            g.check(2_300, 1_000, true),
            None,
            "a partial still holds words"
        );
        assert_eq!(g.check(2_300, 1_000, false), Some(1_200));
        assert_eq!(g.check(9_000, 1_000, false), None, "sent once");
        g.words_until(3_000);
        g.words_until(2_500);
        assert_eq!(g.check(4_000, 1_000, false), Some(3_000));
    }
}
