//! The sim's deterministic "recognition": words derived from the audio's content and
//! position alone, with no protocol types (the dialects in [`super::riva`] and
//! [`super::triton`] put them on the wire).
//!
//! Each chunk is either marker audio (see [`super::marker`]) or anything else:
//! - marker audio: a word `w{k}` per run of samples of marker `k`, complete when a sample of
//!   another marker, other audio or the end of the stream follows it;
//! - other audio: one word per `word_ms` window of the stream, taken in turn from the
//!   vocabulary, unless every sample of the window is quiet (|x| < 64): silence says nothing.
//!
//! A switch between the two closes what the other kind had open (a marker run, or a partial
//! window), so words come out in stream order. Completed words wait in the current
//! utterance; every `final_words` of them make a final, and the end of the stream finalises
//! the rest.

use std::sync::Arc;

use super::marker::marker_name;

/// Samples at or above this magnitude make a window voiced.
const QUIET: u16 = 64;

/// One word, timed in milliseconds of the stream. `end_ms` is the end of the word's last
/// sample (exclusive), so consecutive words tile the audio: a stream reopened at a final's
/// last word end resumes exactly at the next word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// What every recogniser of one process shares.
#[derive(Debug, Clone)]
pub struct RecognizerConfig {
    pub word_ms: u64,
    pub final_words: usize,
    /// Transcript-mode words, used in turn (never empty).
    pub vocabulary: Arc<[String]>,
}

/// A run of samples of one marker.
#[derive(Debug, Clone, Copy)]
struct Run {
    k: u16,
    first: u64,
    last: u64,
}

/// An open transcript-mode window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    voiced: bool,
}

/// The state of one stream (or one Triton sequence).
#[derive(Debug)]
pub struct Recognizer {
    config: Arc<RecognizerConfig>,
    rate: u64,
    word_samples: u64,
    /// Stream position: samples consumed.
    pos: u64,
    /// The last sample of the previous chunk, when that chunk was marker audio (a run may
    /// continue across chunks).
    marker_prev: Option<i16>,
    run: Option<Run>,
    window: Option<Window>,
    next_word: usize,
    /// Completed words not yet finalised: the current utterance.
    pending: Vec<Word>,
}

impl Recognizer {
    pub fn new(config: Arc<RecognizerConfig>, sample_rate_hz: u32) -> Recognizer {
        let rate = u64::from(sample_rate_hz.max(1));
        let word_samples = (config.word_ms * rate / 1000).max(1);
        Recognizer {
            config,
            rate,
            word_samples,
            pos: 0,
            marker_prev: None,
            run: None,
            window: None,
            next_word: 0,
            pending: Vec::new(),
        }
    }

    /// Stream audio consumed so far, in milliseconds.
    pub fn audio_ms(&self) -> u64 {
        self.pos * 1000 / self.rate
    }

    /// The current utterance: completed words that no final has covered yet.
    pub fn pending(&self) -> &[Word] {
        &self.pending
    }

    /// Consumes one chunk of PCM16LE (a trailing odd byte is ignored: the gateway only
    /// sends whole samples). Returns the finals the chunk completed, oldest first.
    /// Marker audio is recognised per chunk, so a chunk needs two samples to be taken for
    /// marker audio unless it continues a marker chunk.
    pub fn push(&mut self, pcm: &[u8]) -> Vec<Vec<Word>> {
        if pcm.len() < 2 {
            return Vec::new();
        }
        let pcm = &pcm[..pcm.len() & !1];
        if is_marker(samples(pcm), self.marker_prev) {
            self.close_window();
            self.decode_markers(pcm);
            self.marker_prev = samples(pcm).last();
        } else {
            self.close_run();
            self.marker_prev = None;
            self.transcribe(pcm);
        }
        self.take_finals(false)
    }

    /// The end of the stream: closes what is open and finalises every pending word.
    pub fn finish(&mut self) -> Vec<Vec<Word>> {
        self.close_run();
        self.close_window();
        self.marker_prev = None;
        self.take_finals(true)
    }

    fn decode_markers(&mut self, pcm: &[u8]) {
        for x in samples(pcm) {
            let k = x.unsigned_abs();
            match &mut self.run {
                Some(run) if run.k == k => run.last = self.pos,
                _ => {
                    self.close_run();
                    self.run = Some(Run {
                        k,
                        first: self.pos,
                        last: self.pos,
                    });
                }
            }
            self.pos += 1;
        }
    }

    fn transcribe(&mut self, pcm: &[u8]) {
        let mut rest = pcm;
        while !rest.is_empty() {
            let pos = self.pos;
            let window = self.window.get_or_insert(Window {
                start: pos,
                voiced: false,
            });
            let room = window.start + self.word_samples - pos;
            let take = (rest.len() as u64 / 2).min(room) as usize;
            let (now, later) = rest.split_at(take * 2);
            window.voiced = window.voiced || samples(now).any(|x| x.unsigned_abs() >= QUIET);
            rest = later;
            self.pos += take as u64;
            if take as u64 == room {
                self.close_window();
            }
        }
    }

    fn close_run(&mut self) {
        if let Some(run) = self.run.take() {
            let word = Word {
                text: marker_name(run.k),
                start_ms: self.ms_floor(run.first),
                end_ms: self.ms_ceil(run.last + 1),
            };
            self.pending.push(word);
        }
    }

    fn close_window(&mut self) {
        let Some(window) = self.window.take() else {
            return;
        };
        if window.voiced && self.pos > window.start {
            let vocabulary = &self.config.vocabulary;
            let text = vocabulary[self.next_word % vocabulary.len()].clone();
            self.next_word = self.next_word.wrapping_add(1);
            let word = Word {
                text,
                start_ms: self.ms_floor(window.start),
                end_ms: self.ms_ceil(self.pos),
            };
            self.pending.push(word);
        }
    }

    fn take_finals(&mut self, all: bool) -> Vec<Vec<Word>> {
        let size = self.config.final_words.max(1);
        let mut finals = Vec::new();
        while self.pending.len() >= size {
            let rest = self.pending.split_off(size);
            finals.push(std::mem::replace(&mut self.pending, rest));
        }
        if all && !self.pending.is_empty() {
            finals.push(std::mem::take(&mut self.pending));
        }
        finals
    }

    fn ms_floor(&self, sample: u64) -> u64 {
        sample * 1000 / self.rate
    }

    fn ms_ceil(&self, sample: u64) -> u64 {
        (sample * 1000).div_ceil(self.rate)
    }
}

fn samples(pcm: &[u8]) -> impl Iterator<Item = i16> + '_ {
    pcm.chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
}

/// Whether a chunk is marker audio: no zero (nor -32768), no two neighbours equal, and at
/// least half of the neighbours (counting the previous marker chunk's last sample) flip
/// sign at equal magnitude. Speech, tones and silence fail at once; marker blocks of two or
/// more samples pass, however the chunks cut them.
fn is_marker(chunk: impl Iterator<Item = i16>, mut prev: Option<i16>) -> bool {
    let (mut pairs, mut flips) = (0usize, 0usize);
    for x in chunk {
        if x == 0 || x == i16::MIN {
            return false;
        }
        if let Some(p) = prev {
            pairs += 1;
            if x == -p {
                flips += 1;
            } else if x == p {
                return false;
            }
        }
        prev = Some(x);
    }
    pairs > 0 && flips * 2 >= pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::marker::{marker_audio, marker_words};

    fn config(word_ms: u64, final_words: usize, words: &[&str]) -> Arc<RecognizerConfig> {
        Arc::new(RecognizerConfig {
            word_ms,
            final_words,
            vocabulary: words.iter().map(|w| w.to_string()).collect(),
        })
    }

    fn text(words: &[Word]) -> String {
        words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn run(r: &mut Recognizer, pcm: &[u8], chunk_bytes: usize) -> Vec<Vec<Word>> {
        let mut finals = Vec::new();
        for chunk in pcm.chunks(chunk_bytes) {
            finals.extend(r.push(chunk));
        }
        finals.extend(r.finish());
        finals
    }

    fn pcm_of(samples: impl IntoIterator<Item = i16>) -> Vec<u8> {
        samples.into_iter().flat_map(i16::to_le_bytes).collect()
    }

    #[test]
    fn marker_blocks_become_words_timed_by_their_samples_however_chunked() {
        // 20 blocks of 800 samples (50 ms), cut into chunks that split samples' runs oddly
        let pcm = marker_audio(1, 20, 800);
        for chunk_bytes in [3200, 1234, 4, 6, 64_000] {
            let mut r = Recognizer::new(config(400, 6, &["x"]), 16_000);
            let finals = run(&mut r, &pcm, chunk_bytes);
            let sizes: Vec<usize> = finals.iter().map(Vec::len).collect();
            assert_eq!(sizes, vec![6, 6, 6, 2], "chunks of {chunk_bytes} bytes");
            let words: Vec<Word> = finals.concat();
            assert_eq!(
                marker_words(&text(&words)),
                Some((1..=20).collect()),
                "chunks of {chunk_bytes} bytes"
            );
            for (i, w) in words.iter().enumerate() {
                assert_eq!((w.start_ms, w.end_ms), (i as u64 * 50, i as u64 * 50 + 50));
            }
            assert_eq!(r.audio_ms(), 1000);
        }
    }

    #[test]
    fn a_marker_word_is_pending_until_another_block_starts() {
        let mut r = Recognizer::new(config(400, 6, &["x"]), 16_000);
        assert!(r.push(&marker_audio(5, 1, 1600)).is_empty());
        assert!(r.pending().is_empty(), "block 5 may still go on");
        r.push(&marker_audio(6, 1, 16));
        assert_eq!(text(r.pending()), "w5");
        assert_eq!(r.finish().concat().len(), 2);
    }

    #[test]
    fn other_audio_gives_one_word_per_window_and_silence_none() {
        let tone: Vec<i16> = (0..16_000 * 2)
            .map(|i| ((i as f64 / 16.0 * 0.44 * std::f64::consts::TAU).sin() * 8000.0) as i16)
            .collect();
        let mut r = Recognizer::new(config(400, 3, &["alpha", "beta"]), 16_000);
        let finals = run(&mut r, &pcm_of(tone.iter().copied()), 3200);
        assert_eq!(
            finals.iter().map(|f| text(f)).collect::<Vec<_>>(),
            vec!["alpha beta alpha", "beta alpha"]
        );
        let last = finals.concat().pop().unwrap();
        assert_eq!((last.start_ms, last.end_ms), (1600, 2000));

        let mut r = Recognizer::new(config(400, 3, &["alpha"]), 16_000);
        let quiet = pcm_of((0..32_000).map(|i| if i % 3 == 0 { 63 } else { -20 }));
        assert!(
            run(&mut r, &quiet, 3200).is_empty(),
            "quiet audio says nothing"
        );
        assert!(run(&mut r, &pcm_of([0; 16_000]), 3200).is_empty());
    }

    #[test]
    fn a_partial_window_at_the_end_is_a_word_up_to_the_last_sample() {
        let mut r = Recognizer::new(config(400, 6, &["alpha"]), 16_000);
        let buzz = pcm_of((0..8_000).map(|i| (i % 50) as i16 * 100 + 1));
        let words = run(&mut r, &buzz, 3200).concat();
        let times: Vec<(u64, u64)> = words.iter().map(|w| (w.start_ms, w.end_ms)).collect();
        assert_eq!(times, vec![(0, 400), (400, 500)]);
    }

    #[test]
    fn switching_kinds_closes_what_was_open_in_stream_order() {
        let mut r = Recognizer::new(config(400, 10, &["talk"]), 16_000);
        let buzz = pcm_of((0..1_600).map(|i| (i % 50) as i16 * 100 + 1));
        r.push(&buzz); // 100 ms: a window opens
        r.push(&marker_audio(9, 1, 1_600)); // closes the window; block 9 runs
        r.push(&buzz); // closes block 9
        let words = r.finish().concat();
        assert_eq!(text(&words), "talk w9 talk");
        let times: Vec<(u64, u64)> = words.iter().map(|w| (w.start_ms, w.end_ms)).collect();
        assert_eq!(times, vec![(0, 100), (100, 200), (200, 300)]);
    }

    #[test]
    fn only_marker_shaped_chunks_are_markers() {
        let s = |v: &'static [i16]| v.iter().copied();
        assert!(is_marker(s(&[3, -3, 3, -3]), None));
        assert!(is_marker(s(&[3, -3, 4, -4, 4]), None), "a block boundary");
        assert!(is_marker(s(&[-3]), Some(3)), "a run across chunks");
        assert!(!is_marker(s(&[3]), None), "one sample says nothing");
        assert!(!is_marker(s(&[3, -3, 0, 0]), None), "silence");
        assert!(!is_marker(s(&[3, 3, -3]), None), "equal neighbours");
        assert!(!is_marker(s(&[100, 120, 135, 150, -150]), None), "a tone");
        assert!(!is_marker(s(&[i16::MIN, i16::MAX]), None));
    }
}
