//! PCM16LE mono, the one audio format inside the gateway: client frames after validation,
//! and every back-end stream. Shared by the session (resampling, replay) and the back-end
//! adapters (the Triton offline path's VAD), so neither imports the other.

use bytes::Bytes;

/// PCM16LE bytes of samples.
pub fn pcm_bytes(samples: &[i16]) -> Bytes {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.into()
}

/// Samples of PCM16LE bytes (the length is validated even before this is called).
pub fn pcm_samples(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}
