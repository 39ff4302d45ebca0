//! Reading (and, for tests, writing) 16-bit PCM mono WAV files for the client tools.
//!
//! The gateway's contract takes raw PCM16 mono, so the client accepts exactly that and
//! says plainly what is wrong with anything else instead of guessing a conversion.
//! The reader walks RIFF chunks (skipping `LIST`, `fact` and the like, honouring pad
//! bytes) and tolerates the placeholder data sizes that writers leave when they cannot
//! seek back to patch the header: 0, 0xFFFFFFFF (ffmpeg and others) and 0x7FFFF000
//! (`sox ... -t wav -` and `espeak-ng --stdout`, seen on Debian's builds).

use std::path::{Path, PathBuf};

/// Decoded audio: mono PCM16 samples at `sample_rate` Hz.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav {
    pub sample_rate: u32,
    pub samples: Vec<i16>,
}

impl Wav {
    /// The same audio at `rate`, converted with the gateway's own resampler (look-ahead
    /// flushed, so nothing is lost at the end).
    pub fn resampled(self, rate: u32) -> Wav {
        Wav {
            samples: speech_gateway::session::resample::convert(
                self.sample_rate,
                rate,
                &self.samples,
            ),
            sample_rate: rate,
        }
    }

    /// Length of the audio in seconds.
    pub fn duration_seconds(&self) -> f64 {
        if self.sample_rate == 0 {
            return 0.0;
        }
        self.samples.len() as f64 / f64::from(self.sample_rate)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a WAV file: no RIFF/WAVE header")]
    NotRiffWave,
    #[error("WAV file has no fmt chunk before its audio data")]
    NoFmtChunk,
    #[error(
        "WAV audio is not integer PCM (format tag {0:#06x}); convert it to 16-bit PCM, e.g. `sox in.wav -e signed -b 16 out.wav`"
    )]
    NotPcm(u16),
    #[error("WAV audio is {0}-bit; 16-bit PCM is required, e.g. `sox in.wav -b 16 out.wav`")]
    NotSixteenBit(u16),
    #[error("WAV audio has {0} channels; mono is required, e.g. `sox in.wav -c 1 out.wav`")]
    NotMono(u16),
    #[error("WAV fmt chunk declares a sample rate of 0 Hz")]
    ZeroSampleRate,
    #[error("WAV file has no data chunk")]
    NoDataChunk,
    #[error("WAV file is truncated: the {what} needs {needed} bytes but only {available} remain")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
}

/// `WAVE_FORMAT_PCM`.
const FORMAT_PCM: u16 = 0x0001;
/// `WAVE_FORMAT_EXTENSIBLE`: the real format is the first two bytes of the sub-format GUID.
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// The fields of a `fmt ` chunk that decide whether we can use the audio.
struct Format {
    tag: u16,
    channels: u16,
    sample_rate: u32,
    bits_per_sample: u16,
}

/// Data sizes at or above this are placeholders, not lengths: streaming writers put
/// 0x7FFFF000 or 0xFFFFFFFF there, and a real 2 GiB speech file is not a client input.
const PLACEHOLDER_MIN: u32 = 0x7FFF_F000;

/// True for a `data` size that means "to end of file" rather than a length.
fn is_placeholder_size(declared: u32) -> bool {
    declared == 0 || declared >= PLACEHOLDER_MIN
}

/// Parses a whole WAV file held in memory.
///
/// A data chunk whose declared size is a placeholder (0, or 0x7FFFF000 and above) runs
/// to the end of the file. A
/// trailing odd byte in the data (half a sample) is ignored. Bytes after the data chunk
/// that do not form a complete chunk are ignored too, since some writers pad files.
pub fn read_wav(bytes: &[u8]) -> Result<Wav, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotRiffWave);
    }
    let mut format: Option<Format> = None;
    let mut data: Option<&[u8]> = None;
    let mut at = 12;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 8 {
            if data.is_some() {
                break;
            }
            return Err(WavError::Truncated {
                what: "chunk header",
                needed: 8,
                available: rest.len(),
            });
        }
        let id = &rest[0..4];
        let declared = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let body = &rest[8..];
        if id == b"data" && is_placeholder_size(declared) {
            data = Some(body);
            break;
        }
        let size = declared as usize;
        if size > body.len() {
            if data.is_some() {
                break;
            }
            let what = match id {
                b"fmt " => "fmt chunk",
                b"data" => "data chunk",
                _ => "chunk",
            };
            return Err(WavError::Truncated {
                what,
                needed: size,
                available: body.len(),
            });
        }
        let body = &body[..size];
        match id {
            b"fmt " => format = Some(parse_format(body)?),
            b"data" => {
                data = Some(body);
            }
            _ => {}
        }
        // Chunks are word-aligned: an odd-sized body is followed by one pad byte.
        at += 8 + size + (size & 1);
    }

    let format = format.ok_or(WavError::NoFmtChunk)?;
    let data = data.ok_or(WavError::NoDataChunk)?;
    if format.tag != FORMAT_PCM {
        return Err(WavError::NotPcm(format.tag));
    }
    if format.bits_per_sample != 16 {
        return Err(WavError::NotSixteenBit(format.bits_per_sample));
    }
    if format.channels != 1 {
        return Err(WavError::NotMono(format.channels));
    }
    if format.sample_rate == 0 {
        return Err(WavError::ZeroSampleRate);
    }
    let samples = data
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    Ok(Wav {
        sample_rate: format.sample_rate,
        samples,
    })
}

/// Reads and parses a WAV file from disk.
pub fn read_wav_file(path: &Path) -> Result<Wav, WavError> {
    let bytes = std::fs::read(path).map_err(|source| WavError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_wav(&bytes)
}

/// Reads the `fmt ` chunk; for `WAVE_FORMAT_EXTENSIBLE` the sub-format's tag replaces
/// the outer one, so extensible PCM is reported as plain PCM.
fn parse_format(body: &[u8]) -> Result<Format, WavError> {
    if body.len() < 16 {
        return Err(WavError::Truncated {
            what: "fmt chunk",
            needed: 16,
            available: body.len(),
        });
    }
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    let mut tag = u16_at(0);
    if tag == FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4) then the 16-byte GUID.
        if body.len() < 26 {
            return Err(WavError::Truncated {
                what: "extensible fmt chunk",
                needed: 26,
                available: body.len(),
            });
        }
        tag = u16_at(24);
    }
    Ok(Format {
        tag,
        channels: u16_at(2),
        sample_rate: u32::from_le_bytes([body[4], body[5], body[6], body[7]]),
        bits_per_sample: u16_at(14),
    })
}

/// Encodes a canonical 44-byte-header PCM16 mono WAV.
pub fn write_wav(sample_rate: u32, samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&FORMAT_PCM.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // channels
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a RIFF/WAVE file from `(id, body, declared size)` chunks, adding pad bytes.
    fn riff(chunks: &[(&[u8; 4], Vec<u8>, Option<u32>)]) -> Vec<u8> {
        let mut out = b"RIFF\0\0\0\0WAVE".to_vec();
        for (id, body, declared) in chunks {
            out.extend_from_slice(*id);
            out.extend_from_slice(&declared.unwrap_or(body.len() as u32).to_le_bytes());
            out.extend_from_slice(body);
            if body.len() % 2 == 1 {
                out.push(0);
            }
        }
        out
    }

    fn fmt(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * u32::from(channels) * u32::from(bits) / 8).to_le_bytes());
        b.extend_from_slice(&(channels * bits / 8).to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b
    }

    fn extensible(sub_tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let mut b = fmt(FORMAT_EXTENSIBLE, channels, rate, bits);
        b.extend_from_slice(&22u16.to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&sub_tag.to_le_bytes());
        b.extend_from_slice(&[
            0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
        ]);
        b
    }

    fn pcm(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn round_trip() {
        let samples: Vec<i16> = (0..1001)
            .map(|i| (i * 37 % 65_536 - 32_768) as i16)
            .collect();
        let bytes = write_wav(22_050, &samples);
        assert_eq!(bytes.len(), 44 + 2 * 1001);
        let wav = read_wav(&bytes).unwrap();
        assert_eq!(
            wav,
            Wav {
                sample_rate: 22_050,
                samples
            }
        );
        assert!((wav.duration_seconds() - 1001.0 / 22_050.0).abs() < 1e-12);
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = std::env::temp_dir().join(format!("sgw-wav-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.wav");
        std::fs::write(&path, write_wav(8_000, &[1, -2, 3])).unwrap();
        let wav = read_wav_file(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(wav.samples, vec![1, -2, 3]);
        let missing = read_wav_file(&dir.join("missing.wav")).unwrap_err();
        assert!(matches!(missing, WavError::Io { .. }));
        assert!(missing.to_string().contains("missing.wav"));
    }

    #[test]
    fn skips_list_chunks_and_honours_pad_bytes() {
        let bytes = riff(&[
            (b"LIST", b"INFOISFT\x03\0\0\0ab\0".to_vec(), None), // 15 bytes: padded
            (b"fmt ", fmt(1, 1, 16_000, 16), None),
            (b"fact", vec![1, 2, 3], None), // odd size again
            (b"data", pcm(&[10, -10, 300]), None),
            (b"LIST", vec![0; 4], None),
        ]);
        let wav = read_wav(&bytes).unwrap();
        assert_eq!(wav.sample_rate, 16_000);
        assert_eq!(wav.samples, vec![10, -10, 300]);
    }

    #[test]
    fn streaming_data_sizes_mean_to_end_of_file() {
        for placeholder in [0u32, u32::MAX, 0x7FFF_F000] {
            let bytes = riff(&[
                (b"fmt ", fmt(1, 1, 11_025, 16), None),
                (b"data", pcm(&[5, 6, 7, 8]), Some(placeholder)),
            ]);
            let wav = read_wav(&bytes).unwrap();
            assert_eq!(
                wav.samples,
                vec![5, 6, 7, 8],
                "placeholder {placeholder:#x}"
            );
        }
    }

    #[test]
    fn extensible_pcm_is_accepted_and_extensible_float_is_not() {
        let ok = riff(&[
            (b"fmt ", extensible(1, 1, 48_000, 16), None),
            (b"data", pcm(&[1, 2]), None),
        ]);
        assert_eq!(read_wav(&ok).unwrap().samples, vec![1, 2]);
        let float = riff(&[
            (b"fmt ", extensible(3, 1, 48_000, 32), None),
            (b"data", vec![0; 8], None),
        ]);
        assert!(matches!(read_wav(&float), Err(WavError::NotPcm(3))));
    }

    #[test]
    fn rejects_what_is_not_riff_wave() {
        assert!(matches!(read_wav(b"RIFF"), Err(WavError::NotRiffWave)));
        let mut bytes = write_wav(16_000, &[1]);
        bytes[8..12].copy_from_slice(b"AVI ");
        assert!(matches!(read_wav(&bytes), Err(WavError::NotRiffWave)));
        assert!(matches!(
            read_wav(b"ID3\x03 mp3 bytes here"),
            Err(WavError::NotRiffWave)
        ));
    }

    #[test]
    fn reports_missing_chunks() {
        let no_fmt = riff(&[(b"data", pcm(&[1]), None)]);
        assert!(matches!(read_wav(&no_fmt), Err(WavError::NoFmtChunk)));
        let no_data = riff(&[(b"fmt ", fmt(1, 1, 16_000, 16), None)]);
        assert!(matches!(read_wav(&no_data), Err(WavError::NoDataChunk)));
    }

    #[test]
    fn reports_wrong_sample_formats() {
        let with = |f: Vec<u8>| riff(&[(b"fmt ", f, None), (b"data", vec![0; 8], None)]);
        assert!(matches!(
            read_wav(&with(fmt(3, 1, 16_000, 32))),
            Err(WavError::NotPcm(3))
        ));
        assert!(matches!(
            read_wav(&with(fmt(1, 1, 16_000, 8))),
            Err(WavError::NotSixteenBit(8))
        ));
        assert!(matches!(
            read_wav(&with(fmt(1, 1, 16_000, 24))),
            Err(WavError::NotSixteenBit(24))
        ));
        let stereo = read_wav(&with(fmt(1, 2, 16_000, 16))).unwrap_err();
        assert!(matches!(stereo, WavError::NotMono(2)));
        assert!(stereo.to_string().contains("2 channels"), "{stereo}");
        assert!(matches!(
            read_wav(&with(fmt(1, 1, 0, 16))),
            Err(WavError::ZeroSampleRate)
        ));
    }

    #[test]
    fn reports_truncation() {
        // Data chunk claims 100 bytes but the file ends after 4.
        let short_data = riff(&[
            (b"fmt ", fmt(1, 1, 16_000, 16), None),
            (b"data", pcm(&[1, 2]), Some(100)),
        ]);
        match read_wav(&short_data) {
            Err(WavError::Truncated {
                what: "data chunk",
                needed: 100,
                available: 4,
            }) => {}
            other => panic!("{other:?}"),
        }
        // fmt chunk cut short.
        let short_fmt = riff(&[
            (b"fmt ", vec![1, 0, 1, 0], None),
            (b"data", pcm(&[1]), None),
        ]);
        assert!(matches!(
            read_wav(&short_fmt),
            Err(WavError::Truncated {
                what: "fmt chunk",
                ..
            })
        ));
        // File ends in the middle of a chunk header before any data.
        let mut cut = riff(&[(b"fmt ", fmt(1, 1, 16_000, 16), None)]);
        cut.extend_from_slice(b"da");
        assert!(matches!(
            read_wav(&cut),
            Err(WavError::Truncated {
                what: "chunk header",
                ..
            })
        ));
    }

    #[test]
    fn tolerates_junk_after_data_and_a_dangling_half_sample() {
        let mut bytes = riff(&[
            (b"fmt ", fmt(1, 1, 16_000, 16), None),
            (b"data", pcm(&[7, 8]), None),
        ]);
        bytes.extend_from_slice(&[0xAB, 0xCD, 0xEF]); // not a whole chunk header
        assert_eq!(read_wav(&bytes).unwrap().samples, vec![7, 8]);
        let mut odd = riff(&[
            (b"fmt ", fmt(1, 1, 16_000, 16), None),
            (b"data", vec![], Some(0)),
        ]);
        odd.extend_from_slice(&[1, 0, 2, 0, 3]);
        assert_eq!(read_wav(&odd).unwrap().samples, vec![1, 2]);
    }

    #[test]
    fn reads_the_header_sox_writes_to_a_pipe() {
        // Bytes as written by `sox -n -r 16000 -b 16 -c 1 -t wav - synth ...`.
        let mut bytes = b"RIFF\x24\xf0\xff\x7fWAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0\x02\0\x10\0data\x00\xf0\xff\x7f".to_vec();
        bytes.extend_from_slice(&pcm(&[0x0183, 0x0f41, -1]));
        let wav = read_wav(&bytes).unwrap();
        assert_eq!(
            wav,
            Wav {
                sample_rate: 16_000,
                samples: vec![0x0183, 0x0f41, -1]
            }
        );
    }
}
