//! Client-side latency, as DESIGN.md ("Latency, as measured by clients") defines it,
//! computed after a session from its log of send and arrival instants.
//!
//! Kept apart from the network code so every rule below is a pure function with tests:
//!
//! - **partial**: arrival of a partial − send time of the frame that ends at (or first
//!   past) the partial's `timestamp_ms` (none when the dialect's results say no audio
//!   position: [`SessionLog::positions`]).
//! - **first partial**: arrival of the first partial with non-empty text − send time of
//!   the first frame holding speech ([`speech_onset_frame`]). At most one per session.
//! - **final**: arrival of a final − the earlier of (a) the send time of the frame
//!   containing the end of the utterance's speech and (b) the send time of `end`, if
//!   `end` was sent before the final arrived. The end of speech is, in order of
//!   preference: the largest word `end` in the final; else where the server said the
//!   speech stopped since the previous final ([`ClientEvent::SpeechEnd`], realtime's
//!   `speech_stopped`); else the largest `timestamp_ms` of the partials received since
//!   the previous final (an upper bound on the end of speech, so the latency is then a
//!   lower bound); else nothing, leaving only (b). A dialect whose results say no audio
//!   position (realtime: [`SessionLog::positions`]) has, after `speech_stopped`, the last
//!   frame holding speech (by the first partial's −35 dB rule) sent before the final
//!   arrived: the end of speech as the audio says it — exact for the last item (the one a
//!   commit closes), a lower bound on the latency when more speech followed.
//!   A final with neither reference gives no sample.
//!
//! A latency that would be negative (a result that seems to arrive before the audio it
//! covers, which only a server clock or timestamp bug can cause) is dropped rather than
//! allowed to pull the percentiles down.

use serde::Serialize;
use tokio::time::Instant;

use super::events::ClientEvent;

/// Level, relative to the file's loudest frame, from which a frame counts as speech.
/// −35 dB sits well above the noise floor of recorded or synthetic speech files and well
/// below the level of any voiced sound, so the onset is found within a frame.
pub const SPEECH_THRESHOLD_DB: f64 = -35.0;

/// A frame's audio may end a fraction of a millisecond before the `timestamp_ms` a server
/// rounded from it; it still counts as the frame that ends there.
const FRAME_MATCH_TOLERANCE_MS: f64 = 0.5;

/// One binary frame as sent.
#[derive(Debug, Clone, Copy)]
pub(super) struct FrameRecord {
    pub sent: Instant,
    /// Audio time at the end of the frame, in ms since session start.
    pub audio_end_ms: f64,
}

/// One server text message as received.
#[derive(Debug, Clone)]
pub(super) struct Arrival {
    pub at: Instant,
    pub event: ClientEvent,
}

/// Everything a session records for the report.
#[derive(Debug, Clone)]
pub(super) struct SessionLog {
    /// When the first frame was due: the origin of `arrival_ms` and wall time.
    pub t0: Instant,
    /// In audio order, which is also send order.
    pub frames: Vec<FrameRecord>,
    pub end_sent: Option<Instant>,
    pub arrivals: Vec<Arrival>,
    pub close_code: Option<u16>,
    pub finished: Instant,
    /// Results carry the audio position they account for ([`crate::client::dialect::
    /// Dialect::positions`]); when not, partials give no latency and a final's end of
    /// speech may come from the audio (see the module docs).
    pub positions: bool,
}

/// Raw latency samples in milliseconds, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencySamples {
    pub partial_ms: Vec<f64>,
    pub first_partial_ms: Vec<f64>,
    pub final_ms: Vec<f64>,
}

/// Count and nearest-rank percentiles of one kind of latency; percentiles are `None`
/// when there are no samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    pub count: usize,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl LatencyStats {
    pub fn from_samples(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Self {
            count: sorted.len(),
            p50_ms: percentile_nearest_rank(&sorted, 50.0),
            p95_ms: percentile_nearest_rank(&sorted, 95.0),
            p99_ms: percentile_nearest_rank(&sorted, 99.0),
        }
    }
}

/// The three latencies of the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub partial: LatencyStats,
    pub first_partial: LatencyStats,
    #[serde(rename = "final")]
    pub final_: LatencyStats,
}

impl LatencySummary {
    pub fn from_samples(samples: &LatencySamples) -> Self {
        Self {
            partial: LatencyStats::from_samples(&samples.partial_ms),
            first_partial: LatencyStats::from_samples(&samples.first_partial_ms),
            final_: LatencyStats::from_samples(&samples.final_ms),
        }
    }
}

/// Nearest-rank percentile of ascending `sorted`: the smallest value with at least `p` %
/// of the samples at or below it (rank `⌈p·n/100⌉`, at least 1). No interpolation, so
/// every reported value is one that was measured.
pub fn percentile_nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    // p·n before the division keeps integer percentiles exact (0.95·100 is not 95).
    let rank = (p * n as f64 / 100.0).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Index of the first `frame_len`-sample frame whose RMS is within
/// [`SPEECH_THRESHOLD_DB`] of the loudest frame's; `None` for an all-silent file.
pub fn speech_onset_frame(samples: &[i16], frame_len: usize) -> Option<usize> {
    speech_frames(samples, frame_len).iter().position(|&s| s)
}

/// For each `frame_len`-sample frame, whether its RMS is within [`SPEECH_THRESHOLD_DB`] of
/// the loudest frame's (all false for an all-silent file).
pub fn speech_frames(samples: &[i16], frame_len: usize) -> Vec<bool> {
    let levels: Vec<f64> = samples.chunks(frame_len.max(1)).map(rms).collect();
    let loudest = levels.iter().copied().fold(0.0, f64::max);
    if loudest <= 0.0 {
        return vec![false; levels.len()];
    }
    let threshold = loudest * 10f64.powf(SPEECH_THRESHOLD_DB / 20.0);
    levels.iter().map(|&level| level >= threshold).collect()
}

fn rms(frame: &[i16]) -> f64 {
    let energy: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (energy / frame.len() as f64).sqrt()
}

/// The first frame whose audio reaches `audio_ms`; `None` if none was sent that far.
fn frame_reaching(frames: &[FrameRecord], audio_ms: f64) -> Option<&FrameRecord> {
    let index = frames.partition_point(|f| f.audio_end_ms + FRAME_MATCH_TOLERANCE_MS < audio_ms);
    frames.get(index)
}

fn ms_since(reference: Instant, at: Instant) -> Option<f64> {
    (at >= reference).then(|| (at - reference).as_secs_f64() * 1000.0)
}

/// All latency samples of a session, plus each final's latency in arrival order.
/// `speech[k]`: frame `k` holds speech ([`speech_frames`]).
pub(super) fn measure(log: &SessionLog, speech: &[bool]) -> (LatencySamples, Vec<Option<f64>>) {
    let mut samples = LatencySamples::default();
    let mut per_final = Vec::new();
    let speech_sent = speech
        .iter()
        .position(|&s| s)
        .and_then(|i| log.frames.get(i))
        .map(|f| f.sent);
    let mut seen_first_partial = false;
    // Largest partial timestamp of the current utterance: the fallback end of speech.
    let mut utterance_audio_ms: Option<f64> = None;
    // Where the server said the current utterance's speech stopped.
    let mut speech_stopped_ms: Option<f64> = None;

    for arrival in &log.arrivals {
        match &arrival.event {
            ClientEvent::Partial(partial) => {
                let ts = partial.timestamp_ms as f64;
                if log.positions {
                    if let Some(frame) = frame_reaching(&log.frames, ts) {
                        samples.partial_ms.extend(ms_since(frame.sent, arrival.at));
                    }
                    utterance_audio_ms = Some(utterance_audio_ms.map_or(ts, |u| u.max(ts)));
                }
                if !seen_first_partial && !partial.text.trim().is_empty() {
                    seen_first_partial = true;
                    if let Some(sent) = speech_sent {
                        samples.first_partial_ms.extend(ms_since(sent, arrival.at));
                    }
                }
            }
            ClientEvent::Final(fin) => {
                let speech_end_ms = fin
                    .words
                    .iter()
                    .flatten()
                    .map(|w| w.end * 1000.0)
                    .reduce(f64::max)
                    .or(speech_stopped_ms)
                    .or(utterance_audio_ms);
                let frame_sent = speech_end_ms
                    .and_then(|t| frame_reaching(&log.frames, t))
                    .map(|f| f.sent)
                    .or_else(|| {
                        // No position on the wire: the last speech sent before it came.
                        let sent = log.frames.iter().zip(speech).rev();
                        let mut spoken = sent.filter(|(f, s)| **s && f.sent <= arrival.at);
                        spoken
                            .next()
                            .filter(|_| !log.positions)
                            .map(|(f, _)| f.sent)
                    });
                let end_sent = log.end_sent.filter(|&sent| sent <= arrival.at);
                let reference = match (frame_sent, end_sent) {
                    (Some(frame), Some(end)) => Some(frame.min(end)),
                    (frame, end) => frame.or(end),
                };
                let latency = reference.and_then(|r| ms_since(r, arrival.at));
                samples.final_ms.extend(latency);
                per_final.push(latency);
                utterance_audio_ms = None;
                speech_stopped_ms = None;
            }
            ClientEvent::SpeechEnd { audio_ms } => speech_stopped_ms = Some(*audio_ms as f64),
            ClientEvent::Error(_)
            | ClientEvent::Pong(_)
            | ClientEvent::Status(_)
            | ClientEvent::Metadata
            | ClientEvent::Other(_) => {}
        }
    }
    (samples, per_final)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::events::{Final, Partial, Word};
    use std::time::Duration;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn partial(text: &str, ts: u64) -> ClientEvent {
        ClientEvent::Partial(Partial {
            text: text.to_string().into(),
            confidence: 0.9,
            timestamp_ms: ts,
            words: None,
        })
    }

    fn final_without_words() -> ClientEvent {
        ClientEvent::Final(Final {
            text: "t".into(),
            confidence: 0.9,
            is_end_of_utterance: true,
            timestamp_ms: 0,
            duration_ms: 0,
            words: None,
        })
    }

    fn final_with_words(ends: &[f64]) -> ClientEvent {
        let words = ends
            .iter()
            .map(|&end| Word {
                word: "w".into(),
                start: end - 0.1,
                end,
                confidence: 0.9,
            })
            .collect();
        ClientEvent::Final(Final {
            text: "t".into(),
            confidence: 0.9,
            is_end_of_utterance: true,
            timestamp_ms: 0,
            duration_ms: 0,
            words: Some(words),
        })
    }

    /// Ten 100 ms frames, frame k sent at t0 + k·100 ms; `end` at t0 + 1000 ms.
    fn log(t0: Instant, arrivals: Vec<(u64, ClientEvent)>) -> SessionLog {
        SessionLog {
            t0,
            frames: (0..10)
                .map(|k| FrameRecord {
                    sent: at(t0, k * 100),
                    audio_end_ms: (k + 1) as f64 * 100.0,
                })
                .collect(),
            end_sent: Some(at(t0, 1000)),
            arrivals: arrivals
                .into_iter()
                .map(|(ms, event)| Arrival {
                    at: at(t0, ms),
                    event,
                })
                .collect(),
            close_code: Some(1000),
            finished: at(t0, 1500),
            positions: true,
        }
    }

    /// Frames `first..` of the ten hold speech.
    fn speech_from(first: usize) -> Vec<bool> {
        (0..10).map(|k| k >= first).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_nearest_rank(&hundred, 50.0), Some(50.0));
        assert_eq!(percentile_nearest_rank(&hundred, 95.0), Some(95.0));
        assert_eq!(percentile_nearest_rank(&hundred, 99.0), Some(99.0));
        assert_eq!(percentile_nearest_rank(&hundred, 100.0), Some(100.0));
        assert_eq!(percentile_nearest_rank(&hundred, 0.0), Some(1.0));
        assert_eq!(percentile_nearest_rank(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile_nearest_rank(&[1.0, 2.0, 3.0], 50.0), Some(2.0));
        assert_eq!(
            percentile_nearest_rank(&[1.0, 2.0, 3.0, 4.0], 50.0),
            Some(2.0)
        );
        assert_eq!(percentile_nearest_rank(&[], 50.0), None);
    }

    #[test]
    fn stats_sort_their_samples() {
        let stats = LatencyStats::from_samples(&[300.0, 100.0, 200.0]);
        assert_eq!(
            stats,
            LatencyStats {
                count: 3,
                p50_ms: Some(200.0),
                p95_ms: Some(300.0),
                p99_ms: Some(300.0)
            }
        );
        assert_eq!(LatencyStats::from_samples(&[]), LatencyStats::default());
    }

    #[test]
    fn speech_onset_is_relative_to_the_loudest_frame() {
        let frame = 160;
        let mut samples = vec![0i16; frame * 3];
        // Frame 1: −50 dB relative noise (too quiet); frame 3: −30 dB (speech); frame 5: peak.
        samples[frame..2 * frame].iter_mut().for_each(|s| *s = 30);
        samples.extend(std::iter::repeat_n(316, frame));
        samples.extend(std::iter::repeat_n(0, frame));
        samples.extend(std::iter::repeat_n(10_000, frame));
        assert_eq!(speech_onset_frame(&samples, frame), Some(3));
        assert_eq!(speech_onset_frame(&[0; 1000], frame), None);
        assert_eq!(speech_onset_frame(&[], frame), None);
    }

    #[test]
    fn partial_latency_uses_the_frame_reaching_the_timestamp() {
        let t0 = Instant::now();
        let log = log(
            t0,
            vec![
                (350, partial("", 200)),     // frame 1 (sent 100) → 250
                (420, partial("hi", 250)),   // frame 2 (sent 200) → 220
                (430, partial("hi", 300)),   // exactly frame 2's end → 230
                (450, partial("hi", 5_000)), // beyond the audio: no sample
            ],
        );
        let (samples, _) = measure(&log, &[]);
        assert_eq!(samples.partial_ms.len(), 3);
        assert!(
            close(samples.partial_ms[0], 250.0)
                && close(samples.partial_ms[1], 220.0)
                && close(samples.partial_ms[2], 230.0)
        );
    }

    #[test]
    fn first_partial_needs_text_and_counts_from_speech_onset() {
        let t0 = Instant::now();
        let log = log(
            t0,
            vec![
                (300, partial("  ", 100)),
                (500, partial("hello", 300)),
                (600, partial("hello there", 400)),
            ],
        );
        let (samples, _) = measure(&log, &speech_from(2)); // speech frame sent at 200
        assert_eq!(samples.first_partial_ms.len(), 1);
        assert!(close(samples.first_partial_ms[0], 300.0));
        let (silent, _) = measure(&log, &[]);
        assert!(silent.first_partial_ms.is_empty());
    }

    #[test]
    fn final_latency_prefers_word_ends_then_partials_then_end() {
        let t0 = Instant::now();
        let no_words = final_without_words();
        let log = log(
            t0,
            vec![
                // Last word ends at 0.45 s → frame 4 (sent 400); end not yet sent → 500.
                (900, final_with_words(&[0.2, 0.45])),
                // Partials since that final reach 700 ms → frame 6 (sent 600) → 450.
                (950, partial("x", 650)),
                (960, partial("x y", 700)),
                (1050, no_words.clone()),
                // Nothing since: only `end` (sent 1000) → 200.
                (1200, no_words.clone()),
                // Word end 0.95 s → frame 9 (sent 900), earlier than end → 400.
                (1300, final_with_words(&[0.95])),
            ],
        );
        let (samples, per_final) = measure(&log, &[]);
        let expected = [500.0, 450.0, 200.0, 400.0];
        assert_eq!(per_final.len(), 4);
        for (got, want) in per_final.iter().zip(expected) {
            assert!(close(got.unwrap(), want), "{got:?} vs {want}");
        }
        assert_eq!(samples.final_ms.len(), 4);
    }

    /// Realtime: deltas without positions give no partial latency (the first still
    /// counts); a final's end of speech is `speech_stopped`, else the last speech frame
    /// sent before it arrived.
    #[test]
    fn realtime_deltas_and_speech_ends() {
        let t0 = Instant::now();
        let mut log = log(
            t0,
            vec![
                (300, partial("hi", 0)),
                (350, partial("hi there", 0)),
                // Speech stopped at 0.45 s → frame 4 (sent 400) → 500.
                (880, ClientEvent::SpeechEnd { audio_ms: 450 }),
                (900, final_without_words()),
                // No speech end since: the last speech frame sent by then, 6 (600) → 350.
                (950, final_without_words()),
                // After `end` (1000), still frame 6 (sent 600), earlier than `end` → 550.
                (1150, final_without_words()),
            ],
        );
        log.positions = false;
        // Speech in frames 1..=6 (sent 100 to 600).
        let speech: Vec<bool> = (0..10).map(|k| (1..=6).contains(&k)).collect();
        let (samples, per_final) = measure(&log, &speech);
        assert!(samples.partial_ms.is_empty());
        assert_eq!(samples.first_partial_ms, vec![200.0]);
        let want = [500.0, 350.0, 550.0];
        assert_eq!(per_final.len(), 3);
        for (got, want) in per_final.iter().zip(want) {
            assert!(close(got.unwrap(), want), "{per_final:?}");
        }
        // Without speech in the audio: only `end` is left (before it, nothing).
        let (_, per_final) = measure(&log, &[false; 10]);
        assert_eq!(per_final[1], None);
        assert!(close(per_final[2].unwrap(), 150.0), "{per_final:?}");
    }

    #[test]
    fn final_without_any_reference_gives_no_sample() {
        let t0 = Instant::now();
        let no_words = final_without_words();
        // Arrives before `end` with no words and no partials: nothing to measure from.
        let (samples, per_final) = measure(&log(t0, vec![(500, no_words)]), &[]);
        assert_eq!(per_final, vec![None]);
        assert!(samples.final_ms.is_empty());
        // A word end after the audio sent so far and before `end`: negative, dropped.
        let (samples, per_final) = measure(&log(t0, vec![(50, final_with_words(&[0.3]))]), &[]);
        assert_eq!(per_final, vec![None]);
        assert!(samples.final_ms.is_empty());
    }
}
