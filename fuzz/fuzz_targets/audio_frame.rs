//! The audio path of one binary frame, as the session runs it: `validate_frame` (odd
//! length, too long for `session.max_frame`), then PCM16LE decoding, then resampling to
//! the back end's rate.
//!
//! Input: 8 bytes of settings (client rate, back-end rate, `max_frame`, where to split
//! the frame between two resampler calls), then the frame. Rates and `max_frame` are
//! drawn from what the session lets through (`SAMPLE_RATES`, config validation).
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use speech_gateway::pcm::{pcm_bytes, pcm_samples};
use speech_gateway::session::SAMPLE_RATES;
use speech_gateway::session::audio::{bytes_to_ms, max_frame_bytes, validate_frame};
use speech_gateway::session::resample::Resampler;
use speech_gateway::session::{ErrorKind, Event};

/// Back-end rates: Triton's allowed set plus common Riva settings.
const BACKEND_RATES: [u32; 6] = [8_000, 16_000, 22_050, 32_000, 44_100, 48_000];

thread_local! {
    /// Building a resampler's filter table costs far more than running it on one frame;
    /// kept per rate pair (a few at a time) so that runs measure the conversion.
    static RESAMPLERS: RefCell<HashMap<(u32, u32), Resampler>> = RefCell::new(HashMap::new());
}

fn pick_rate(raw: u16) -> u32 {
    let span = SAMPLE_RATES.end() - SAMPLE_RATES.start() + 1;
    SAMPLE_RATES.start() + u32::from(raw) % span
}

fuzz_target!(|data: &[u8]| {
    let Some((head, frame)) = data.split_first_chunk::<8>() else {
        return;
    };
    let rate = pick_rate(u16::from_le_bytes([head[0], head[1]]));
    let backend_rate = BACKEND_RATES[usize::from(head[2]) % BACKEND_RATES.len()];
    let max_frame =
        Duration::from_millis(10 + u64::from(u16::from_le_bytes([head[3], head[4]])) % 9_991);
    let split = usize::from(u16::from_le_bytes([head[5], head[6]]));
    let frame_no = u64::from(head[7]) + 1;

    // The length check alone, for lengths no test sends (up to the WebSocket limit and beyond).
    let wide = u64::from_le_bytes(*data.first_chunk::<8>().unwrap());
    if let Err(e) = validate_frame(wide as usize, rate, max_frame, frame_no) {
        assert_eq!(e.kind, ErrorKind::AudioFormat);
    }

    match validate_frame(frame.len(), rate, max_frame, frame_no) {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::AudioFormat);
            assert!(frame.len() % 2 == 1 || frame.len() > max_frame_bytes(rate, max_frame));
            assert!(
                e.message.contains(&format!("audio frame {frame_no} ")),
                "{}",
                e.message
            );
            let _ = speech_gateway::ingress::v1::encode(&Event::Error(e));
        }
        Ok(()) => {
            assert_eq!(frame.len() % 2, 0);
            assert!(bytes_to_ms(frame.len(), rate) <= max_frame.as_millis() as u64);
            let samples = pcm_samples(frame);
            assert_eq!(samples.len() * 2, frame.len(), "one sample per two bytes");
            assert_eq!(pcm_bytes(&samples).as_ref(), frame, "PCM16LE round trip");

            // One call or two: the resampler's output must not depend on the split. The
            // second stream reuses the resampler after `flush`, which must have reset it.
            RESAMPLERS.with_borrow_mut(|cache| {
                if cache.len() > 32 {
                    cache.clear();
                }
                let r = cache
                    .entry((rate, backend_rate))
                    .or_insert_with(|| Resampler::new(rate, backend_rate));
                let mut whole = Vec::new();
                r.process(&samples, &mut whole);
                r.flush(&mut whole);
                let mut parts = Vec::new();
                let at = split.min(samples.len());
                r.process(&samples[..at], &mut parts);
                r.process(&samples[at..], &mut parts);
                r.flush(&mut parts);
                assert_eq!(whole, parts, "chunk boundaries leave no seams");
                // A whole stream of n samples resamples to ceil(n * to / from).
                let n = samples.len() as u64;
                let expected = (n * u64::from(backend_rate)).div_ceil(u64::from(rate));
                assert_eq!(
                    whole.len() as u64,
                    expected,
                    "{rate} -> {backend_rate} Hz, {n} samples"
                );
            });
        }
    }
});
