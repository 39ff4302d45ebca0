//! Marker audio: PCM whose content names itself, so a test can prove that audio crossing
//! the gateway was neither lost nor duplicated.
//!
//! Block `k` (1..=32767) is `+k, -k, +k, …` — a square wave at half the sample rate whose
//! amplitude is the block's number. The zero-compute back end ([`crate::sim`]) hears such
//! audio as one word `w{k}` per block, timed by the block's first and last sample; the
//! words of a session, in order, must then be exactly the blocks the client sent.
//!
//! Blocks need at least 2 samples (a 1-sample block has no sign flip, so it cannot be told
//! from other audio), and a block length that is a whole number of milliseconds (16
//! samples at 16 kHz) keeps the word times exact.

/// One block of marker `k`: `samples` samples alternating `+k` and `-k`, starting with `+k`.
///
/// # Panics
/// If `k` is 0 (not a marker: silence).
pub fn marker_block(k: u16, samples: usize) -> Vec<i16> {
    assert!(
        (1..=i16::MAX as u16).contains(&k),
        "marker {k} is outside 1..=32767"
    );
    let k = k as i16;
    (0..samples)
        .map(|i| if i % 2 == 0 { k } else { -k })
        .collect()
}

/// `blocks` consecutive blocks `first_k, first_k + 1, …` of `samples_per_block` samples
/// each, as PCM16LE bytes (what a client sends).
///
/// # Panics
/// If a block number would leave 1..=32767.
pub fn marker_audio(first_k: u16, blocks: usize, samples_per_block: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks * samples_per_block * 2);
    for i in 0..blocks {
        let k = u16::try_from(first_k as usize + i)
            .ok()
            .filter(|k| *k <= i16::MAX as u16)
            .unwrap_or_else(|| panic!("marker block {first_k}+{i} is past 32767"));
        for s in marker_block(k, samples_per_block) {
            out.extend_from_slice(&s.to_le_bytes());
        }
    }
    out
}

/// The block numbers a transcript names: `"w1 w2 w3"` → `[1, 2, 3]`. `None` if any
/// whitespace-separated token is not a marker word (a lost marker must not be hidden by
/// skipping what could not be read).
pub fn marker_words(text: &str) -> Option<Vec<u16>> {
    text.split_whitespace().map(marker_word).collect()
}

/// The block number of one word (`"w17"` → 17).
pub fn marker_word(word: &str) -> Option<u16> {
    let digits = word.strip_prefix('w')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse()
        .ok()
        .filter(|k| (1..=i16::MAX as u16).contains(k))
}

/// The word the back end says for block `k`.
pub fn marker_name(k: u16) -> String {
    format!("w{k}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_alternate_sign_and_carry_their_number() {
        assert_eq!(marker_block(7, 5), vec![7, -7, 7, -7, 7]);
        let pcm = marker_audio(3, 2, 2);
        let samples: Vec<i16> = pcm
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(samples, vec![3, -3, 4, -4]);
        assert_eq!(marker_audio(32767, 1, 2).len(), 4);
    }

    #[test]
    #[should_panic(expected = "past 32767")]
    fn blocks_past_the_range_are_refused() {
        marker_audio(32767, 2, 2);
    }

    #[test]
    fn words_parse_back_to_numbers() {
        assert_eq!(marker_words(" w1 w2\tw300 "), Some(vec![1, 2, 300]));
        assert_eq!(marker_words(""), Some(vec![]));
        assert_eq!(marker_words("w1 hello"), None);
        assert_eq!(marker_words("w0"), None);
        assert_eq!(marker_words("w40000"), None);
        assert_eq!(marker_words("w+1"), None);
        assert_eq!(marker_name(12), "w12");
    }
}
