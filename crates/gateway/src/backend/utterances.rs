//! Gateway-side endpointing for back ends that decode whole utterances (an offline Triton
//! model, an OpenAI-compatible HTTP server): the segmenting and decode loop they share.
//! An adapter supplies only "decode this utterance's PCM" ([`Decode`]); everything else —
//! where utterances start and end, when partials are asked for, how results are placed
//! on the stream's clock — is here.
//!
//! A VAD (earshot, WebRTC-style, pure Rust) marks 20 ms frames as speech or not. An
//! utterance starts at the first speech frame (with 200 ms of audio before it) and ends
//! after `silence`, or when it reaches `max_utterance`; it is then decoded once and its
//! result becomes a final. While an utterance grows, it is re-decoded for a partial at
//! most once per `partial_interval` of audio, and only when no partial request is in
//! flight: partials may be skipped when the back end lags, finals never are. Bursts of
//! "speech" shorter than `MIN_SPEECH` are dropped as noise without a request, so clicks
//! and faint noise cost nothing and produce no text.
//!
//! Requests go through the adapter's [`Scheduler`] (one per back end, shared by its
//! sessions): finals first, a session's partial still waiting there replaced by its newer
//! one (so the loop may ask for a partial while an older one waits, not while one runs),
//! and partials paused while the back end's finals back up — the loop tells its session
//! ([`scheduler::notice`]: `interim_paused`, `interim_resumed`).
//!
//! Each adapter bounds its own requests (its deadline is part of the decode future); a
//! failed decode ends the stream with that error, and the session fails over and replays
//! the audio since its last final. Requests are watched by that deadline alone: the loop
//! says it is alive ([`TranscriptEvent::idle`]) after every chunk and every
//! [`HEARTBEAT`] while a final waits in the queue or is being decoded, so the session's
//! stall detection never cuts a slow but bounded request short (a decode longer than
//! `session.stall_timeout` used to fail the session over and send the utterance to the
//! next back end too).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use earshot::{VoiceActivityDetector, VoiceActivityProfile};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::backend::scheduler::{self, Scheduler};
use crate::backend::{AudioStream, BackendError, EventStream, RecognitionParams, TranscriptEvent};

/// VAD frame length.
const FRAME_MS: u64 = 20;
/// Audio kept before the first speech frame, so word onsets are not clipped.
const PRE_ROLL_MS: u64 = 200;
/// Less speech than this in an utterance is treated as noise.
const MIN_SPEECH: Duration = Duration::from_millis(200);
/// How often the adapter says it is alive while it waits for a final's decode (the
/// session's stall detection must hear something well within its `stall_timeout`).
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Rates the VAD takes (a back end's rate setting must be one of them).
pub const VAD_RATES: [u32; 4] = [8_000, 16_000, 32_000, 48_000];

/// Endpointing settings of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpointing {
    /// Silence that ends an utterance.
    pub silence: Duration,
    /// Audio an utterance grows by between partial re-decodes.
    pub partial_interval: Duration,
    /// An utterance is cut (and finalised) at this length.
    pub max_utterance: Duration,
    pub sample_rate: u32,
    /// Re-decode growing utterances for partials.
    pub interim_results: bool,
}

impl Endpointing {
    /// A session's endpointing: the back end's `defaults`, with the client's own
    /// `endpointing_ms`, and partials only when both the back end and the client want them.
    pub fn new(defaults: Endpointing, params: &RecognitionParams) -> Self {
        Endpointing {
            silence: params
                .endpointing_ms
                .map_or(defaults.silence, |ms| Duration::from_millis(u64::from(ms))),
            interim_results: defaults.interim_results && params.interim_results,
            ..defaults
        }
    }

    fn samples(&self, d: Duration) -> usize {
        (u128::from(self.sample_rate) * d.as_millis() / 1000) as usize
    }
}

/// One decode of one utterance (or of the open utterance so far, for a partial): its
/// result with times from the utterance's start, `None` when there is nothing to say.
/// Whether the result is final, and where it sits in the stream, is decided here.
pub type Decoding = BoxFuture<'static, Result<Option<TranscriptEvent>, BackendError>>;

/// What an adapter supplies: a request for this utterance's PCM (at the endpointing's
/// rate), already bounded by the adapter's deadline.
pub trait Decode: Send + 'static {
    fn decode(&self, utterance: &[i16]) -> Decoding;
}

impl<F> Decode for F
where
    F: Fn(&[i16]) -> Decoding + Send + 'static,
{
    fn decode(&self, utterance: &[i16]) -> Decoding {
        self(utterance)
    }
}

/// Starts the endpointing task, its requests ordered by `queue`; the returned stream ends
/// when the audio has ended and the last utterance is final. Dropping it stops the task.
pub fn open(
    decoder: impl Decode,
    ep: Endpointing,
    audio: AudioStream,
    queue: Scheduler,
) -> EventStream {
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(run(decoder, ep, audio, queue, tx));
    ReceiverStream::new(rx).boxed()
}

type Sender = mpsc::Sender<Result<TranscriptEvent, BackendError>>;

/// Tracks speech and silence over VAD frames and cuts utterances.
struct Segmenter {
    vad: VoiceActivityDetector,
    frame: Vec<i16>,
    frame_len: usize,
    pre_roll: VecDeque<i16>,
    pre_roll_len: usize,
    /// Stream sample index of `utterance[0]`, while in speech.
    start: Option<u64>,
    utterance: Vec<i16>,
    speech_samples: usize,
    silence_run: usize,
    /// Stream samples consumed.
    position: u64,
}

/// What a VAD frame did to the current utterance.
enum Cut {
    None,
    /// The utterance ended; holds (start sample, audio).
    Utterance(u64, Vec<i16>),
}

impl Segmenter {
    fn new(ep: &Endpointing) -> Self {
        Segmenter {
            vad: VoiceActivityDetector::new(VoiceActivityProfile::AGGRESSIVE),
            frame: Vec::new(),
            frame_len: ep.samples(Duration::from_millis(FRAME_MS)),
            pre_roll: VecDeque::new(),
            pre_roll_len: ep.samples(Duration::from_millis(PRE_ROLL_MS)),
            start: None,
            utterance: Vec::new(),
            speech_samples: 0,
            silence_run: 0,
            position: 0,
        }
    }

    fn is_speech(&mut self, rate: u32, frame: &[i16]) -> bool {
        crate::session::engine::cues::is_speech(&mut self.vad, rate, frame)
    }

    /// Feeds samples; returns every utterance that ended inside them.
    fn push(&mut self, ep: &Endpointing, samples: &[i16]) -> Vec<Cut> {
        let mut cuts = Vec::new();
        for &s in samples {
            self.frame.push(s);
            if self.frame.len() < self.frame_len {
                continue;
            }
            let frame = std::mem::take(&mut self.frame);
            let speech = self.is_speech(ep.sample_rate, &frame);
            self.position += frame.len() as u64;
            match (self.start, speech) {
                (None, false) => {
                    self.pre_roll.extend(frame.iter().copied());
                    let over = self.pre_roll.len().saturating_sub(self.pre_roll_len);
                    self.pre_roll.drain(..over);
                }
                (None, true) => {
                    let pre: Vec<i16> = self.pre_roll.drain(..).collect();
                    self.start = Some(self.position - (frame.len() + pre.len()) as u64);
                    self.utterance = pre;
                    self.utterance.extend_from_slice(&frame);
                    self.speech_samples = frame.len();
                    self.silence_run = 0;
                }
                (Some(_), is) => {
                    self.utterance.extend_from_slice(&frame);
                    if is {
                        self.speech_samples += frame.len();
                        self.silence_run = 0;
                    } else {
                        self.silence_run += frame.len();
                    }
                    if self.silence_run >= ep.samples(ep.silence)
                        || self.utterance.len() >= ep.samples(ep.max_utterance)
                    {
                        cuts.push(self.finish(ep));
                    }
                }
            }
        }
        cuts
    }

    /// Ends the current utterance (at end of audio, or by [`push`]).
    fn finish(&mut self, ep: &Endpointing) -> Cut {
        let Some(start) = self.start.take() else {
            return Cut::None;
        };
        let audio = std::mem::take(&mut self.utterance);
        let speech = std::mem::take(&mut self.speech_samples);
        self.silence_run = 0;
        if speech < ep.samples(MIN_SPEECH) {
            return Cut::None;
        }
        Cut::Utterance(start, audio)
    }
}

/// Shifts a result from utterance time to stream time and fixes its kind.
fn place(
    mut ev: TranscriptEvent,
    ep: &Endpointing,
    start: u64,
    end: u64,
    is_final: bool,
) -> TranscriptEvent {
    let ms = |samples: u64| samples * 1000 / u64::from(ep.sample_rate);
    let offset = ms(start);
    for w in &mut ev.words {
        w.start_ms += offset;
        w.end_ms += offset;
    }
    ev.is_final = is_final;
    ev.audio_processed_ms = Some(ms(end));
    ev
}

/// A partial re-decode: (utterance start, end, request, whether its turn came).
type Pending = (u64, u64, Decoding, Arc<AtomicBool>);

async fn run(
    decoder: impl Decode,
    ep: Endpointing,
    mut audio: AudioStream,
    queue: Scheduler,
    tx: Sender,
) {
    let mut seg = Segmenter::new(&ep);
    let session = queue.session();
    let mut paused = queue.paused();
    let mut told_paused = false;
    let mut partial: Option<Pending> = None;
    let mut last_partial_at = 0usize;
    let mut audio_open = true;
    loop {
        let partial_done = async {
            match partial.as_mut() {
                Some((_, _, fut, _)) => fut.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tx.closed() => return,
            Ok(()) = paused.changed() => {
                let now = *paused.borrow_and_update();
                if ep.interim_results && now != told_paused {
                    told_paused = now;
                    if tx.send(Ok(scheduler::notice(now))).await.is_err() {
                        return;
                    }
                }
            }
            result = partial_done => {
                let (start, end, _, _) = partial.take().expect("a partial was in flight");
                match result {
                    // A partial for an utterance that has since ended is stale.
                    Ok(Some(ev)) if seg.start == Some(start) && !ev.text.is_empty() => {
                        if tx.send(Ok(place(ev, &ep, start, end, false))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            chunk = audio.next(), if audio_open => {
                let cuts = match chunk {
                    Some(pcm) => seg.push(&ep, &crate::pcm::pcm_samples(&pcm)),
                    None => {
                        audio_open = false;
                        vec![seg.finish(&ep)]
                    }
                };
                for cut in cuts {
                    let Cut::Utterance(start, utterance) = cut else { continue };
                    partial = None;
                    last_partial_at = 0;
                    let end = start + utterance.len() as u64;
                    let decoding = queue.run_final(decoder.decode(&utterance));
                    tokio::pin!(decoding);
                    let mut beat = tokio::time::interval_at(
                        tokio::time::Instant::now() + HEARTBEAT,
                        HEARTBEAT,
                    );
                    let result = loop {
                        tokio::select! {
                            _ = tx.closed() => return,
                            r = &mut decoding => break r,
                            // the request is bounded by its deadline: stall detection
                            // must not cut it short
                            _ = beat.tick() => {
                                let _ = tx.try_send(Ok(TranscriptEvent::idle(Instant::now())));
                            }
                        }
                    };
                    let item = match result {
                        Ok(Some(ev)) => Ok(place(ev, &ep, start, end, true)),
                        Ok(None) => continue,
                        Err(e) => Err(e),
                    };
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
                if !audio_open {
                    return; // the last utterance is final: dropping `tx` ends the stream
                }
                // Alive (stall detection), as the adapter's own news, not the server's.
                // Skipped when the session is behind; the next chunk says it again.
                let _ = tx.try_send(Ok(TranscriptEvent::idle(Instant::now())));
                if let Some(start) = seg.start {
                    let grown = seg.utterance.len();
                    // one partial running at a time; one still waiting for its turn is
                    // replaced by this newer one (coalescing)
                    let running = partial
                        .as_ref()
                        .is_some_and(|(.., started)| started.load(Ordering::Relaxed));
                    if ep.interim_results
                        && !running
                        && grown >= last_partial_at + ep.samples(ep.partial_interval)
                    {
                        last_partial_at = grown;
                        let end = start + grown as u64;
                        let started = Arc::new(AtomicBool::new(false));
                        let flag = started.clone();
                        let decode = decoder.decode(&seg.utterance);
                        let request: Decoding = Box::pin(async move {
                            flag.store(true, Ordering::Relaxed);
                            decode.await
                        });
                        let request = queue.run_partial(session, request);
                        partial = Some((start, end, request, started));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpointing {
        Endpointing {
            silence: Duration::from_millis(500),
            partial_interval: Duration::from_secs(1),
            max_utterance: Duration::from_secs(5),
            sample_rate: 16_000,
            interim_results: true,
        }
    }

    /// A voiced, speech-like signal: a 140 Hz buzz with harmonics, amplitude-modulated.
    fn voice(ms: u64) -> Vec<i16> {
        (0..16 * ms)
            .map(|i| {
                let t = i as f64 / 16_000.0;
                let f0 = 140.0;
                let buzz: f64 = (1..12)
                    .map(|h| (t * f0 * h as f64 * std::f64::consts::TAU).sin() / h as f64)
                    .sum();
                let env = 0.6 + 0.4 * (t * 4.0 * std::f64::consts::TAU).sin();
                (buzz * env * 6000.0) as i16
            })
            .collect()
    }

    fn silence(ms: u64) -> Vec<i16> {
        vec![0; (16 * ms) as usize]
    }

    fn utterances(cuts: Vec<Cut>) -> Vec<(u64, usize)> {
        cuts.into_iter()
            .filter_map(|c| match c {
                Cut::Utterance(s, a) => Some((s, a.len())),
                Cut::None => None,
            })
            .collect()
    }

    #[test]
    fn silence_ends_an_utterance_and_pre_roll_is_kept() {
        let e = ep();
        let mut seg = Segmenter::new(&e);
        let mut cuts = seg.push(&e, &silence(1_000));
        cuts.extend(seg.push(&e, &voice(1_500)));
        assert!(
            utterances(std::mem::take(&mut cuts)).is_empty(),
            "still speaking"
        );
        cuts.extend(seg.push(&e, &silence(800)));
        let u = utterances(cuts);
        assert_eq!(u.len(), 1, "{u:?}");
        let (start, len) = u[0];
        // starts about 200 ms before the voice (pre-roll; the VAD may need a frame or two)
        assert!((12_000..=16_000).contains(&start), "start {start}");
        // holds the voice plus the trailing silence that ended it
        assert!(
            (16 * 1_500 + 16 * 500..=16 * 2_300).contains(&len),
            "len {len}"
        );
    }

    #[test]
    fn silence_and_clicks_make_no_utterance() {
        let e = ep();
        let mut seg = Segmenter::new(&e);
        let mut cuts = seg.push(&e, &silence(3_000));
        cuts.extend(seg.push(&e, &voice(60)));
        cuts.extend(seg.push(&e, &silence(1_000)));
        cuts.push(seg.finish(&e));
        assert!(utterances(cuts).is_empty());
    }

    #[test]
    fn long_speech_is_cut_at_the_window_and_end_of_audio_finishes() {
        let e = ep();
        let mut seg = Segmenter::new(&e);
        let cuts = seg.push(&e, &voice(12_000));
        let u = utterances(cuts);
        assert_eq!(u.len(), 2, "{u:?}");
        assert!(u.iter().all(|(_, len)| *len <= 16 * 5_000));
        let tail = utterances(vec![seg.finish(&e)]);
        assert_eq!(tail.len(), 1, "the rest is finalised at end of audio");
        let total: usize = u.iter().chain(tail.iter()).map(|x| x.1).sum();
        assert!(total >= 16 * 12_000 - 16 * 40, "no speech lost: {total}");
    }

    /// The loop over a scripted decoder: every decode answers one word at 0.1–0.3 s of
    /// its utterance; the final lands on the stream's clock, partials come while the
    /// utterance grows, and the stream ends after the last final.
    #[tokio::test]
    async fn the_loop_places_finals_on_the_stream_clock() {
        use crate::backend::StreamWord;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let decode = move |utterance: &[i16]| -> Decoding {
            seen.fetch_add(1, Ordering::Relaxed);
            let len = utterance.len();
            Box::pin(async move {
                let mut ev = TranscriptEvent::progress(Instant::now());
                ev.text = format!("{len} samples");
                ev.words = vec![StreamWord {
                    word: "w".into(),
                    start_ms: 100,
                    end_ms: 300,
                    confidence: 1.0,
                    speaker: None,
                }];
                Ok(Some(ev))
            })
        };
        let mut pcm = silence(1_000);
        pcm.extend(voice(3_000));
        pcm.extend(silence(1_000));
        let chunks: Vec<bytes::Bytes> = pcm.chunks(1_600).map(crate::pcm::pcm_bytes).collect();
        let audio = futures::stream::iter(chunks).boxed();
        let queue = Scheduler::new(
            4,
            crate::config::QueueOrder::FinalsFirst,
            Default::default(),
        );
        let events: Vec<TranscriptEvent> = open(decode, ep(), audio, queue)
            .map(|r| r.expect("no error"))
            .filter(|e| futures::future::ready(!e.is_progress()))
            .collect()
            .await;
        let finals: Vec<&TranscriptEvent> = events.iter().filter(|e| e.is_final).collect();
        assert_eq!(finals.len(), 1, "{events:?}");
        let f = finals[0];
        assert!(events.last().unwrap().is_final, "the final comes last");
        // the utterance starts ~200 ms before the voice at 1 s: the word is ~0.9 s later
        let w = &f.words[0];
        assert!((900..=1_100).contains(&w.start_ms), "{w:?}");
        assert_eq!(w.end_ms - w.start_ms, 200);
        let processed = f.audio_processed_ms.unwrap();
        assert!((4_300..=4_600).contains(&processed), "{processed}");
        let partials = events.iter().filter(|e| !e.is_final).count();
        assert!(
            partials >= 1,
            "partials while the utterance grows: {events:?}"
        );
        assert_eq!(calls.load(Ordering::Relaxed), partials + 1);
    }
}
