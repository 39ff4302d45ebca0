//! Audio bookkeeping of one session: frame validation, the replay buffer, and the log of
//! when each frame arrived (for latency stamps).
//!
//! Session time is counted in samples at the back end's rate from the first accepted
//! sample; refused frames never enter it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prometheus_client::metrics::gauge::Gauge;

use super::{ErrorKind, SessionError};

/// Checks one binary frame against the contract: whole 16-bit samples, and no longer than
/// `max_frame` of audio at `sample_rate`. `frame_no` (1-based) names the frame in the error.
pub fn validate_frame(
    len: usize,
    sample_rate: u32,
    max_frame: Duration,
    frame_no: u64,
) -> Result<(), SessionError> {
    if !len.is_multiple_of(2) {
        return Err(SessionError::new(
            ErrorKind::AudioFormat,
            format!(
                "audio frame {frame_no} rejected: {len} bytes is an odd count; expected 16-bit \
                 little-endian mono PCM at {sample_rate} Hz (2 bytes a sample)"
            ),
        ));
    }
    let max_bytes = max_frame_bytes(sample_rate, max_frame);
    if len > max_bytes {
        return Err(SessionError::new(
            ErrorKind::AudioFormat,
            format!(
                "audio frame {frame_no} rejected: {len} bytes is {} ms of audio at {sample_rate} Hz; \
                 the maximum is {} ms ({max_bytes} bytes). Send 20-500 ms frames",
                bytes_to_ms(len, sample_rate),
                max_frame.as_millis()
            ),
        ));
    }
    Ok(())
}

/// Bytes of PCM16 mono in `d` at `rate`.
pub fn max_frame_bytes(rate: u32, d: Duration) -> usize {
    (u128::from(rate) * d.as_millis() / 1000) as usize * 2
}

/// Milliseconds of PCM16 mono audio in `len` bytes (saturating: any length, even one no
/// WebSocket message can have, gives an answer rather than an overflow). `rate` > 0.
pub fn bytes_to_ms(len: usize, rate: u32) -> u64 {
    (len as u64 / 2).saturating_mul(1000) / u64::from(rate)
}

/// Audio since the last final, kept so that a back-end stream can be reopened (rotation,
/// failover) and fed again without losing anything the client sent.
///
/// It holds the very chunks that were sent upstream (PCM16LE at the back end's rate, each
/// in an allocation of its own size), so keeping audio for replay costs no copy and no
/// memory beyond the audio itself. The bytes it holds are kept in step on a shared gauge
/// (`sgw_replay_buffer_bytes`), to the last byte when it is dropped.
#[derive(Debug)]
pub struct ReplayBuffer {
    /// Session sample index of the first retained sample.
    start: u64,
    chunks: VecDeque<Bytes>,
    /// Samples retained (the sum of the chunks' lengths / 2).
    len: u64,
    capacity: u64,
    /// Samples dropped from the front because the utterance outgrew the buffer; a reopen
    /// cannot replay those and must say so.
    lost: u64,
    /// Bytes held, summed over every live buffer.
    held: Gauge,
}

impl ReplayBuffer {
    pub fn new(capacity_samples: usize, held: Gauge) -> Self {
        ReplayBuffer {
            start: 0,
            chunks: VecDeque::new(),
            len: 0,
            capacity: capacity_samples as u64,
            lost: 0,
            held,
        }
    }

    /// Appends one chunk of PCM16LE (an even number of bytes).
    pub fn push(&mut self, chunk: Bytes) {
        debug_assert!(chunk.len().is_multiple_of(2));
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len() as u64 / 2;
        self.held.inc_by(chunk.len() as i64);
        grow_by_steps(&mut self.chunks);
        self.chunks.push_back(chunk);
        let over = self.len.saturating_sub(self.capacity);
        if over > 0 {
            self.drop_front(over);
            self.lost += over;
        }
    }

    /// Forgets the first `n` (≤ `len`) samples.
    fn drop_front(&mut self, mut n: u64) {
        self.start += n;
        self.len -= n;
        self.held.dec_by((n * 2) as i64);
        while n > 0 {
            let front = self.chunks.front_mut().expect("n <= len");
            let samples = front.len() as u64 / 2;
            if samples <= n {
                self.chunks.pop_front();
                n -= samples;
            } else {
                *front = front.slice((n * 2) as usize..);
                n = 0;
            }
        }
        if self.chunks.is_empty() && self.chunks.capacity() > IDLE_QUEUE_SLOTS {
            // A long utterance grew the queue; a quiet session should not keep its slots.
            self.chunks.shrink_to(IDLE_QUEUE_SLOTS);
        }
    }

    /// Forgets everything before session sample `at` (the end of a final).
    pub fn cut(&mut self, at: u64) {
        if at <= self.start {
            return;
        }
        let n = (at - self.start).min(self.len);
        self.drop_front(n);
        self.lost = 0;
    }

    /// Session sample index of the first retained sample.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Session sample index one past the last retained sample.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    /// Samples that outgrew the buffer since the last cut.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// A copy of the retained audio from session sample `from` to `to` (clamped to what
    /// is retained), as PCM16LE.
    pub fn copy_range(&self, from: u64, to: u64) -> Vec<u8> {
        let (from, to) = (from.max(self.start), to.min(self.end()));
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize * 2);
        let mut at = self.start;
        for c in &self.chunks {
            let n = (c.len() / 2) as u64;
            let (lo, hi) = (from.max(at), to.min(at + n));
            if lo < hi {
                out.extend_from_slice(&c[((lo - at) * 2) as usize..((hi - at) * 2) as usize]);
            }
            at += n;
            if at >= to {
                break;
            }
        }
        out
    }

    /// The retained audio as PCM16LE chunks of at most `chunk` samples; small chunks are
    /// joined (a replay after a failover sends fewer, larger messages).
    pub fn chunks(&self, chunk: usize) -> Vec<Bytes> {
        let max = chunk.max(1) * 2;
        let mut out = Vec::new();
        let mut pending = BytesMut::new();
        for c in &self.chunks {
            let mut c = c.clone();
            while !c.is_empty() {
                if pending.is_empty() && c.len() >= max {
                    out.push(c.split_to(max));
                    continue;
                }
                let take = (max - pending.len()).min(c.len());
                pending.extend_from_slice(&c.split_to(take));
                if pending.len() == max {
                    out.push(pending.split().freeze());
                }
            }
        }
        if !pending.is_empty() {
            out.push(pending.freeze());
        }
        out
    }
}

impl Drop for ReplayBuffer {
    fn drop(&mut self) {
        self.held.dec_by((self.len * 2) as i64);
    }
}

/// Slots the replay and frame-log queues keep when a final empties them (enough for a
/// few seconds of 100 ms frames without growing), and the step they grow by.
const IDLE_QUEUE_SLOTS: usize = 64;

/// Makes room for one more entry by [`IDLE_QUEUE_SLOTS`] at a time, not by doubling: a
/// long utterance's queues then hold at most a step of unused slots, not up to as many
/// as they use (a copy of the queue every step is the price: a few KB every 6 s of 100 ms
/// frames).
fn grow_by_steps<T>(q: &mut VecDeque<T>) {
    if q.len() == q.capacity() {
        q.reserve_exact(IDLE_QUEUE_SLOTS);
    }
}

/// When each accepted frame arrived, by the session time (ms) at which it ends. Bounded:
/// only the most recent `horizon_ms` of audio is kept.
///
/// A frame costs 8 bytes: its end and arrival are kept as offsets (ms, µs: u32 each) from
/// a base that moves up when an offset would no longer fit (after 71 minutes of arrivals
/// — a log spans one utterance, at most the horizon). A long utterance of 100 ms frames
/// holds 300 entries a minute.
#[derive(Debug)]
pub struct FrameLog {
    /// (end ms − `base_ms`, arrival µs after `base_at`), oldest first.
    entries: VecDeque<(u32, u32)>,
    base_ms: u64,
    base_at: Option<Instant>,
    horizon_ms: u64,
}

impl FrameLog {
    pub fn new(horizon_ms: u64) -> Self {
        FrameLog {
            entries: VecDeque::new(),
            base_ms: 0,
            base_at: None,
            horizon_ms,
        }
    }

    /// The entry of a frame ending at `end_ms` that arrived `at`, if it fits the base.
    fn offsets(&self, end_ms: u64, at: Instant) -> Option<(u32, u32)> {
        let base_at = self.base_at?;
        let ms = u32::try_from(end_ms.checked_sub(self.base_ms)?).ok()?;
        let us = u32::try_from(at.saturating_duration_since(base_at).as_micros()).ok()?;
        Some((ms, us))
    }

    /// Moves the base up to the oldest entry (dropping entries too old to share a base
    /// with a frame ending at `end_ms` that arrived `at`).
    fn rebase(&mut self, end_ms: u64, at: Instant) {
        while let Some(&(ms, us)) = self.entries.front() {
            let (new_ms, new_at) = (
                self.base_ms + u64::from(ms),
                self.base_at.expect("entries have a base") + Duration::from_micros(u64::from(us)),
            );
            let fits = end_ms
                .checked_sub(new_ms)
                .is_some_and(|d| d <= u64::from(u32::MAX))
                && at.saturating_duration_since(new_at).as_micros() <= u128::from(u32::MAX);
            if !fits {
                self.entries.pop_front();
                continue;
            }
            for e in &mut self.entries {
                *e = (e.0 - ms, e.1 - us);
            }
            self.base_ms = new_ms;
            self.base_at = Some(new_at);
            return;
        }
        self.base_ms = end_ms;
        self.base_at = Some(at);
    }

    pub fn push(&mut self, end_ms: u64, at: Instant) {
        if self.entries.is_empty() {
            self.base_ms = end_ms;
            self.base_at = Some(at);
        }
        let entry = match self.offsets(end_ms, at) {
            Some(e) => e,
            None => {
                self.rebase(end_ms, at);
                self.offsets(end_ms, at).unwrap_or((0, 0))
            }
        };
        grow_by_steps(&mut self.entries);
        self.entries.push_back(entry);
        while let Some(&(first, _)) = self.entries.front() {
            if end_ms.saturating_sub(self.base_ms + u64::from(first)) > self.horizon_ms {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }

    /// Forgets frames that end before session time `ms` (the end of a final: later
    /// results never ask about earlier audio), so the log holds one utterance, not the
    /// whole horizon.
    pub fn cut(&mut self, ms: u64) {
        while self.entries.len() > 1
            && self
                .entries
                .front()
                .is_some_and(|&(end, _)| self.base_ms + u64::from(end) < ms)
        {
            self.entries.pop_front();
        }
        if self.entries.len() <= 1 && self.entries.capacity() > IDLE_QUEUE_SLOTS {
            self.entries.shrink_to(IDLE_QUEUE_SLOTS);
        }
    }

    /// Arrival of the first frame that reaches `ms` (the frame holding that instant), or
    /// of the last frame if `ms` lies beyond everything received.
    pub fn arrival_of(&self, ms: u64) -> Option<Instant> {
        let rel = ms.saturating_sub(self.base_ms);
        let idx = self
            .entries
            .partition_point(|&(end, _)| u64::from(end) < rel);
        let &(_, us) = self.entries.get(idx).or_else(|| self.entries.back())?;
        Some(self.base_at? + Duration::from_micros(u64::from(us)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcm::{pcm_bytes, pcm_samples};

    #[test]
    fn odd_and_oversized_frames_are_refused_with_their_number() {
        let max = Duration::from_secs(1);
        let e = validate_frame(3201, 16_000, max, 7).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AudioFormat);
        assert!(
            e.message.contains("frame 7") && e.message.contains("odd"),
            "{}",
            e.message
        );
        assert!(
            validate_frame(32_000, 16_000, max, 1).is_ok(),
            "exactly 1 s is allowed"
        );
        let e = validate_frame(32_002, 16_000, max, 2).unwrap_err();
        assert!(e.message.contains("1000 ms"), "{}", e.message);
        assert!(
            validate_frame(320, 16_000, max, 3).is_ok(),
            "10 ms WebRTC frames are fine"
        );
        assert!(validate_frame(96_000, 48_000, max, 4).is_ok());
        assert!(validate_frame(16_002, 8_000, max, 5).is_err());
    }

    #[test]
    fn absurd_lengths_are_refused_not_overflowed() {
        // Found by the audio_frame fuzz target: `len / 2 * 1000` overflowed u64.
        let e = validate_frame(usize::MAX - 1, 8_000, Duration::from_secs(1), 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AudioFormat);
        assert_eq!(bytes_to_ms(usize::MAX, 1_000), u64::MAX / 1_000);
        assert_eq!(bytes_to_ms(32_000, 16_000), 1_000);
    }

    #[test]
    fn replay_keeps_audio_since_the_cut_and_counts_losses() {
        let held = Gauge::default();
        let mut r = ReplayBuffer::new(10, held.clone());
        r.push(pcm_bytes(&[1, 2, 3]));
        r.push(pcm_bytes(&[4, 5, 6]));
        r.cut(4);
        assert_eq!((r.start(), r.end()), (4, 6));
        assert_eq!(held.get(), 4, "the gauge holds the bytes kept");
        assert_eq!(r.chunks(10)[0].as_ref(), pcm_bytes(&[5, 6]).as_ref());
        r.push(pcm_bytes(&[7, 8, 9, 10, 11, 12, 13]));
        r.push(pcm_bytes(&[14, 15, 16]));
        assert_eq!(r.lost(), 2, "two samples fell off the front");
        assert_eq!(r.start(), 6);
        assert_eq!(held.get(), 20);
        let chunks = r.chunks(4);
        assert_eq!(chunks.len(), 3);
        assert_eq!(pcm_samples(&chunks[0]), vec![7, 8, 9, 10]);
        assert_eq!(pcm_samples(&chunks[1]), vec![11, 12, 13, 14]);
        assert_eq!(pcm_samples(&chunks[2]), vec![15, 16]);
        r.cut(100);
        assert_eq!((r.start(), r.end(), r.lost()), (16, 16, 0));
        r.cut(3);
        assert_eq!(r.start(), 16, "a cut in the past changes nothing");
        assert_eq!(held.get(), 0);
        r.push(pcm_bytes(&[17, 18]));
        drop(r);
        assert_eq!(held.get(), 0, "a dropped buffer leaves the gauge");
    }

    #[test]
    fn replay_chunks_join_small_frames_and_split_large_ones() {
        let mut r = ReplayBuffer::new(1_000, Gauge::default());
        let all: Vec<i16> = (0..50).collect();
        // 10 ms-like small frames, then one large frame
        for piece in all[..20].chunks(3) {
            r.push(pcm_bytes(piece));
        }
        r.push(pcm_bytes(&all[20..]));
        r.cut(1);
        let chunks = r.chunks(8);
        assert!(chunks.iter().all(|c| c.len() <= 16));
        assert!(chunks[..chunks.len() - 1].iter().all(|c| c.len() == 16));
        let replayed: Vec<i16> = chunks.iter().flat_map(|c| pcm_samples(c)).collect();
        assert_eq!(
            replayed,
            all[1..].to_vec(),
            "every sample since the cut, in order"
        );
        assert_eq!((r.start(), r.end()), (1, 50));
        r.push(Bytes::new());
        assert_eq!(r.end(), 50, "an empty chunk changes nothing");
    }

    #[test]
    fn frame_log_finds_the_frame_holding_an_instant() {
        let t0 = Instant::now();
        let mut log = FrameLog::new(1_000);
        for i in 1..=30u64 {
            log.push(i * 100, t0 + Duration::from_millis(i * 100));
        }
        assert_eq!(
            log.arrival_of(2_550),
            Some(t0 + Duration::from_millis(2_600))
        );
        assert_eq!(
            log.arrival_of(2_600),
            Some(t0 + Duration::from_millis(2_600))
        );
        assert_eq!(
            log.arrival_of(9_999),
            Some(t0 + Duration::from_millis(3_000))
        );
        // older than the horizon: answered by the oldest frame kept
        assert_eq!(log.arrival_of(0), Some(t0 + Duration::from_millis(2_000)));
        log.cut(2_650);
        assert_eq!(
            log.arrival_of(2_650),
            Some(t0 + Duration::from_millis(2_700)),
            "the frame holding the cut stays"
        );
        assert_eq!(log.arrival_of(0), Some(t0 + Duration::from_millis(2_700)));
        log.cut(99_999);
        assert_eq!(
            log.arrival_of(99_999),
            Some(t0 + Duration::from_millis(3_000)),
            "the last frame is never forgotten"
        );
    }

    #[test]
    fn frame_log_entries_outlive_their_base() {
        // Arrivals 71+ minutes apart (a session that paused for an hour and more) and
        // session times past u32 ms: the base moves, answers stay exact to the µs.
        let t0 = Instant::now();
        let hour = Duration::from_secs(3_600);
        let mut log = FrameLog::new(u64::MAX);
        log.push(100, t0 + Duration::from_micros(7));
        log.push(200, t0 + hour);
        log.push(300, t0 + 2 * hour + Duration::from_micros(3));
        assert_eq!(
            log.arrival_of(250),
            Some(t0 + 2 * hour + Duration::from_micros(3))
        );
        assert_eq!(log.arrival_of(150), Some(t0 + hour));
        // the first frame could not share a base with the third: it went
        assert_eq!(log.arrival_of(0), Some(t0 + hour));
        let far = 5 * u64::from(u32::MAX);
        log.push(far, t0 + 2 * hour + Duration::from_millis(1));
        assert_eq!(
            log.arrival_of(far),
            Some(t0 + 2 * hour + Duration::from_millis(1))
        );
        assert_eq!(log.arrival_of(far - 1), log.arrival_of(far));
        log.cut(far);
        assert_eq!(log.entries.len(), 1);
    }

    #[test]
    fn queues_grow_by_steps_not_by_doubling() {
        let mut log = FrameLog::new(u64::MAX);
        let t0 = Instant::now();
        for i in 1..=350u64 {
            log.push(i * 100, t0 + Duration::from_millis(i * 100));
        }
        assert!(
            log.entries.capacity() < 350 + IDLE_QUEUE_SLOTS,
            "{}",
            log.entries.capacity()
        );
        let mut r = ReplayBuffer::new(16_000 * 60, Gauge::default());
        for _ in 0..350 {
            r.push(Bytes::from(vec![0u8; 3_200]));
        }
        assert!(
            r.chunks.capacity() < 350 + IDLE_QUEUE_SLOTS,
            "{}",
            r.chunks.capacity()
        );
    }

    #[test]
    fn pcm_round_trip() {
        let s = [0i16, -1, i16::MAX, i16::MIN, 1234];
        assert_eq!(pcm_samples(&pcm_bytes(&s)), s.to_vec());
    }
}
