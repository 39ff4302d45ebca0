//! Session time. A session's audio is one timeline counted in samples at the back end's
//! rate; each back-end stream starts somewhere on it (after a reopen, where the replayed
//! audio begins) and reports times relative to its own start. [`Timeline`] places those
//! reports on the session's timeline and keeps the one invariant of finals: each covers
//! audio after the previous one's last word, so finals are append-only across streams.
//!
//! Pure arithmetic: no I/O, no clock; unit-tested below.

use super::super::{Transcript, Word};
use crate::backend::TranscriptEvent;

/// Where the session's audio stands and where the last final cut it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Timeline {
    /// The back end's sample rate: session time is counted in its samples.
    rate: u32,
    /// Session samples accepted so far.
    total: u64,
    /// Session ms where the last final's speech ended: finals never reach before it.
    last_cut_ms: u64,
}

/// A back-end result placed on the session's timeline.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Placed {
    /// `duration_ms` is 0 until [`Timeline::cut_final`] sets it.
    pub transcript: Transcript,
    /// Session ms of the first word's start, if the result has words.
    pub speech_start_ms: Option<u64>,
    /// Session ms of the last word's end, if the result has words.
    pub speech_end_ms: Option<u64>,
}

impl Timeline {
    pub fn new(rate: u32) -> Self {
        Timeline {
            rate,
            total: 0,
            last_cut_ms: 0,
        }
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn ms(&self, samples: u64) -> u64 {
        samples * 1000 / u64::from(self.rate)
    }

    pub fn samples(&self, ms: u64) -> u64 {
        ms * u64::from(self.rate) / 1000
    }

    pub fn total_ms(&self) -> u64 {
        self.ms(self.total)
    }

    pub fn last_cut_ms(&self) -> u64 {
        self.last_cut_ms
    }

    /// Appends `samples` of accepted audio; returns the session ms where they end.
    pub fn advance(&mut self, samples: u64) -> u64 {
        self.total += samples;
        self.total_ms()
    }

    /// Places a result of the stream that began at session sample `offset` and has been
    /// sent `sent` samples. The result accounts for audio up to what the back end says it
    /// processed (else all that was sent), never beyond the audio the session has.
    pub fn place(
        &self,
        ev: TranscriptEvent,
        offset: u64,
        sent: u64,
        word_timestamps: bool,
    ) -> Placed {
        let offset_ms = self.ms(offset);
        let stream_ms = ev.audio_processed_ms.unwrap_or_else(|| self.ms(sent));
        let timestamp_ms = (offset_ms + stream_ms).min(self.total_ms().max(offset_ms));
        let speech_end_ms = ev.words.last().map(|w| offset_ms + w.end_ms);
        let speech_start_ms = ev.words.first().map(|w| offset_ms + w.start_ms);
        // The words' strings move (no copy per result of what a long utterance holds)
        // into a vector of exactly their number: the engine keeps the open partial, and
        // collecting in place would keep the decoder's larger, doubled allocation.
        let words = word_timestamps.then(|| {
            let mut words = Vec::with_capacity(ev.words.len());
            words.extend(ev.words.into_iter().map(|w| Word {
                word: w.word,
                start: (offset_ms + w.start_ms) as f64 / 1000.0,
                end: (offset_ms + w.end_ms) as f64 / 1000.0,
                confidence: w.confidence,
                speaker: w.speaker,
            }));
            words
        });
        Placed {
            transcript: Transcript {
                text: ev.text,
                confidence: ev.confidence,
                timestamp_ms,
                duration_ms: 0,
                words,
                from_finalize: false,
            },
            speech_start_ms,
            speech_end_ms,
        }
    }

    /// A final covers audio up to its last word (or all the back end processed), and
    /// never before the previous final's cut. Moves the cut there; returns the new cut
    /// and sets the transcript's `duration_ms` to the audio it covers.
    pub fn cut_final(&mut self, placed: &mut Placed) -> u64 {
        let cut_ms = placed
            .speech_end_ms
            .unwrap_or(placed.transcript.timestamp_ms)
            .max(self.last_cut_ms);
        placed.transcript.duration_ms = cut_ms - self.last_cut_ms;
        self.last_cut_ms = cut_ms;
        cut_ms
    }

    /// A partial the back end never finalised becomes the last final: it covers audio from
    /// the previous cut to its timestamp.
    pub fn promote(&mut self, partial: &mut Transcript) {
        partial.duration_ms = partial.timestamp_ms.saturating_sub(self.last_cut_ms);
        self.last_cut_ms = self.last_cut_ms.max(partial.timestamp_ms);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::backend::StreamWord;

    fn result(text: &str, words: &[(u64, u64)], processed: Option<u64>) -> TranscriptEvent {
        TranscriptEvent {
            is_final: true,
            text: text.into(),
            confidence: 0.9,
            stability: 1.0,
            audio_processed_ms: processed,
            words: words
                .iter()
                .map(|&(start_ms, end_ms)| StreamWord {
                    word: "w".into(),
                    start_ms,
                    end_ms,
                    confidence: 0.9,
                    speaker: None,
                })
                .collect(),
            received_at: Instant::now(),
            local: false,
            notice: None,
        }
    }

    #[test]
    fn a_reopened_streams_times_are_shifted_by_where_it_began() {
        let mut t = Timeline::new(16_000);
        t.advance(16_000 * 5); // 5 s of audio
        // The stream began at 2 s (replay from the last final), its word at 0.5-1.0 s.
        let p = t.place(result("x", &[(500, 1_000)], Some(1_200)), 32_000, 0, true);
        assert_eq!(p.speech_start_ms, Some(2_500));
        assert_eq!(p.speech_end_ms, Some(3_000));
        assert_eq!(p.transcript.timestamp_ms, 3_200);
        let w = &p.transcript.words.as_ref().unwrap()[0];
        assert_eq!((w.start, w.end), (2.5, 3.0));
    }

    #[test]
    fn a_result_never_accounts_for_audio_the_session_does_not_have() {
        let mut t = Timeline::new(8_000);
        t.advance(8_000); // 1 s
        let p = t.place(result("x", &[], Some(5_000)), 0, 0, false);
        assert_eq!(p.transcript.timestamp_ms, 1_000);
        assert_eq!(p.transcript.words, None);
        // Without a processed figure, what was sent on the stream counts.
        let p = t.place(result("x", &[], None), 0, 4_000, false);
        assert_eq!(p.transcript.timestamp_ms, 500);
    }

    #[test]
    fn finals_are_append_only_and_their_durations_tile_the_audio() {
        let mut t = Timeline::new(16_000);
        t.advance(16_000 * 10);
        let mut a = t.place(result("a", &[(0, 2_000)], None), 0, 0, true);
        assert_eq!(t.cut_final(&mut a), 2_000);
        assert_eq!(a.transcript.duration_ms, 2_000);
        // A late result whose words end before the cut cannot move it back.
        let mut late = t.place(result("b", &[(500, 1_500)], None), 0, 0, true);
        assert_eq!(t.cut_final(&mut late), 2_000);
        assert_eq!(late.transcript.duration_ms, 0);
        // A final without words covers what the back end processed.
        let mut c = t.place(result("c", &[], Some(3_000)), 16_000 * 2, 0, true);
        assert_eq!(t.cut_final(&mut c), 5_000);
        assert_eq!(c.transcript.duration_ms, 3_000);
        assert_eq!(t.last_cut_ms(), 5_000);
    }

    #[test]
    fn a_promoted_partial_covers_the_audio_since_the_last_cut() {
        let mut t = Timeline::new(16_000);
        t.advance(16_000 * 4);
        let mut a = t.place(result("a", &[(0, 1_000)], None), 0, 0, true);
        t.cut_final(&mut a);
        let mut partial = t
            .place(result("b", &[], Some(3_500)), 0, 0, true)
            .transcript;
        t.promote(&mut partial);
        assert_eq!(partial.duration_ms, 2_500);
        assert_eq!(t.last_cut_ms(), 3_500);
    }

    #[test]
    fn samples_and_milliseconds_convert_at_the_back_ends_rate() {
        let t = Timeline::new(8_000);
        assert_eq!(t.ms(8_000), 1_000);
        assert_eq!(t.samples(250), 2_000);
    }
}
