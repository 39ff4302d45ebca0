//! Audio files to PCM16, for the endpoints that take a whole file (`POST /v1/listen`).
//!
//! Containers and codecs are recognised from the bytes (clients send
//! `application/octet-stream`): WAV (PCM, A-law, µ-law, ADPCM), FLAC, MP3, Ogg with Vorbis
//! or Opus, and MP4/M4A with AAC — decoded in Rust (symphonia; Opus by `opus-decoder`),
//! no external program. Each channel comes out as its own PCM16 plane at the file's rate
//! (Opus at 16 kHz: its decoder renders any rate, and the back ends take 16 kHz).
//!
//! Decoding is bounded: the audio may last at most `max_seconds` (checked as it decodes,
//! so a small file that claims hours cannot make the gateway allocate them), at most
//! [`MAX_CHANNELS`] channels. It is CPU work: callers run it on the blocking pool.

use std::io::Cursor;

use bytes::Bytes;
use symphonia::core::codecs::audio::{AudioDecoderOptions, well_known::CODEC_ID_OPUS};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

/// Most channels a file may have.
pub const MAX_CHANNELS: usize = 8;

/// The rate Opus is decoded at.
const OPUS_RATE: u32 = 16_000;

/// Decoded audio: one PCM16 plane per channel, all of the same length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcm {
    pub sample_rate: u32,
    pub channels: Vec<Vec<i16>>,
}

impl Pcm {
    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// Seconds of audio.
    pub fn seconds(&self) -> f64 {
        self.frames() as f64 / f64::from(self.sample_rate.max(1))
    }

    /// The channels averaged into one.
    pub fn mixed(&self) -> Vec<i16> {
        let n = self.channels.len().max(1) as i32;
        (0..self.frames())
            .map(|i| {
                let sum: i32 = self.channels.iter().map(|c| i32::from(c[i])).sum();
                (sum / n) as i16
            })
            .collect()
    }
}

/// Why a file could not be decoded. The message is for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// Not a container or stream the decoder recognises.
    #[error(
        "the body is not audio in a supported format (WAV, FLAC, MP3, Ogg Vorbis/Opus, MP4/M4A AAC): {0}"
    )]
    NotAudio(String),
    /// Recognised, but a codec or feature this gateway does not decode.
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// The audio is damaged or cut short before any sound could be decoded.
    #[error("the audio could not be decoded: {0}")]
    Corrupt(String),
    #[error(
        "the audio lasts more than {limit_seconds} s, the most this gateway takes in one request"
    )]
    TooLong { limit_seconds: u64 },
    #[error("the audio has {0} channels; at most {MAX_CHANNELS} are taken")]
    TooManyChannels(usize),
    #[error("the body holds no audio samples")]
    Empty,
}

/// Decodes a whole file.
pub fn decode(bytes: Bytes, max_seconds: f64) -> Result<Pcm, MediaError> {
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &Hint::new(),
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| MediaError::NotAudio(describe(&e)))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| MediaError::NotAudio("the file has no audio track".into()))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .cloned()
        .ok_or_else(|| MediaError::NotAudio("the file has no audio track".into()))?;
    let mut out = Output::new(max_seconds);
    if params.codec == CODEC_ID_OPUS {
        let mut opus = OpusStream::new(params.extra_data.as_deref())?;
        loop {
            match format.next_packet() {
                Ok(Some(packet)) if packet.track_id == track_id => {
                    opus.decode(&packet.data, &mut out)?;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    out.damaged(&e)?;
                    break;
                }
            }
        }
        return out.finish();
    }
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| MediaError::Unsupported(describe(&e)))?;
    let mut interleaved: Vec<i16> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                out.damaged(&e)?;
                break;
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buf) => {
                let rate = buf.spec().rate();
                let channels = buf.spec().channels().count();
                buf.copy_to_vec_interleaved(&mut interleaved);
                out.push_interleaved(rate, channels, &interleaved)?;
            }
            // A damaged packet is skipped, as players do; a file that is all damage ends
            // up with no samples and is refused.
            Err(SymphoniaError::DecodeError(_)) => {}
            Err(e) => {
                out.damaged(&e)?;
                break;
            }
        }
    }
    out.finish()
}

/// Raw PCM16LE (the `encoding=linear16` of a request without a container), one or more
/// interleaved channels.
pub fn linear16(
    bytes: &[u8],
    sample_rate: u32,
    channels: usize,
    max_seconds: f64,
) -> Result<Pcm, MediaError> {
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(MediaError::TooManyChannels(channels));
    }
    let samples: Vec<i16> = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let mut out = Output::new(max_seconds);
    out.push_interleaved(sample_rate, channels, &samples)?;
    out.finish()
}

fn describe(e: &SymphoniaError) -> String {
    match e {
        SymphoniaError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the data ends early".into()
        }
        other => other.to_string(),
    }
}

/// The planes being filled, with the duration bound.
struct Output {
    rate: u32,
    channels: Vec<Vec<i16>>,
    max_frames: Option<usize>,
    max_seconds: f64,
}

impl Output {
    fn new(max_seconds: f64) -> Self {
        Output {
            rate: 0,
            channels: Vec::new(),
            max_frames: None,
            max_seconds,
        }
    }

    fn push_interleaved(
        &mut self,
        rate: u32,
        channels: usize,
        samples: &[i16],
    ) -> Result<(), MediaError> {
        if channels == 0 {
            return Ok(());
        }
        if channels > MAX_CHANNELS {
            return Err(MediaError::TooManyChannels(channels));
        }
        if self.channels.is_empty() {
            if rate == 0 {
                return Err(MediaError::Corrupt("the stream has no sample rate".into()));
            }
            self.rate = rate;
            self.channels = vec![Vec::new(); channels];
            self.max_frames = Some((self.max_seconds * f64::from(rate)) as usize);
        } else if rate != self.rate || channels != self.channels.len() {
            return Err(MediaError::Unsupported(
                "the sample rate or the channel count changes within the file".into(),
            ));
        }
        let frames = samples.len() / channels;
        let have = self.channels[0].len();
        if have + frames > self.max_frames.unwrap_or(usize::MAX) {
            return Err(MediaError::TooLong {
                limit_seconds: self.max_seconds as u64,
            });
        }
        for (c, plane) in self.channels.iter_mut().enumerate() {
            plane.extend(samples.chunks_exact(channels).map(|frame| frame[c]));
        }
        Ok(())
    }

    /// A read error part-way: a file cut short keeps what was decoded (as players do); one
    /// that yielded nothing is refused with the reason.
    fn damaged(&self, e: &SymphoniaError) -> Result<(), MediaError> {
        if self.channels.first().is_some_and(|c| !c.is_empty()) {
            return Ok(());
        }
        match e {
            SymphoniaError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(MediaError::Corrupt("the data ends before any audio".into()))
            }
            other => Err(MediaError::Corrupt(describe(other))),
        }
    }

    fn finish(self) -> Result<Pcm, MediaError> {
        if self.channels.first().is_none_or(Vec::is_empty) {
            return Err(MediaError::Empty);
        }
        Ok(Pcm {
            sample_rate: self.rate,
            channels: self.channels,
        })
    }
}

/// An Ogg Opus stream (RFC 7845): the `OpusHead` gives the channels and the samples to
/// skip at the start; packets decode at [`OPUS_RATE`].
struct OpusStream {
    decoder: opus_decoder::OpusDecoder,
    channels: usize,
    /// Samples (at the output rate) still to drop from the start.
    skip: usize,
    pcm: Vec<i16>,
}

impl OpusStream {
    fn new(head: Option<&[u8]>) -> Result<Self, MediaError> {
        let head = head
            .filter(|h| h.len() >= 19 && h.starts_with(b"OpusHead"))
            .ok_or_else(|| MediaError::Corrupt("the Opus stream has no OpusHead".into()))?;
        let channels = usize::from(head[9]);
        let pre_skip = usize::from(u16::from_le_bytes([head[10], head[11]]));
        let mapping_family = head[18];
        if mapping_family != 0 || !(1..=2).contains(&channels) {
            return Err(MediaError::Unsupported(
                "Opus with more than two channels (multistream) is not decoded".into(),
            ));
        }
        let decoder = opus_decoder::OpusDecoder::new(OPUS_RATE, channels)
            .map_err(|e| MediaError::Unsupported(format!("Opus: {e}")))?;
        let pcm = vec![0; decoder.max_frame_size_per_channel() * channels];
        Ok(OpusStream {
            decoder,
            channels,
            // pre-skip counts 48 kHz samples.
            skip: pre_skip * OPUS_RATE as usize / 48_000,
            pcm,
        })
    }

    fn decode(&mut self, packet: &[u8], out: &mut Output) -> Result<(), MediaError> {
        if packet.is_empty() {
            return Ok(());
        }
        let frames = match self.decoder.decode(packet, &mut self.pcm, false) {
            Ok(n) => n,
            // A damaged packet is skipped, like the other codecs' damaged packets.
            Err(_) => return Ok(()),
        };
        let drop = self.skip.min(frames);
        self.skip -= drop;
        let samples = &self.pcm[drop * self.channels..frames * self.channels];
        out.push_interleaved(OPUS_RATE, self.channels, samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Bytes {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../samples")
            .join(name);
        Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    /// The reference: `samples/hello.wav` as decoded by the WAV reader.
    fn reference() -> Vec<i16> {
        let pcm = decode(sample("hello.wav"), 60.0).unwrap();
        assert_eq!(pcm.sample_rate, 16_000);
        assert_eq!(pcm.channels.len(), 1);
        assert_eq!(pcm.frames(), 65_502);
        pcm.channels[0].clone()
    }

    /// The loudness contour: RMS of each 20 ms (320 samples at 16 kHz).
    fn contour(pcm: &[i16]) -> Vec<f64> {
        pcm.chunks(320)
            .map(|c| (c.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / c.len() as f64).sqrt())
            .collect()
    }

    /// Correlation of two loudness contours at the best delay of `b` within 0..=`max_lag`
    /// blocks (decoders delay, never advance). Lossy codecs keep the contour, not the
    /// waveform.
    fn similarity(a: &[f64], b: &[f64], max_lag: usize) -> f64 {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        (0..=max_lag)
            .map(|lag| {
                let n = a.len().min(b.len().saturating_sub(lag));
                let (x, y) = (&a[..n], &b[lag..lag + n]);
                let (mx, my) = (mean(x), mean(y));
                let cov: f64 = x.iter().zip(y).map(|(p, q)| (p - mx) * (q - my)).sum();
                let vx: f64 = x.iter().map(|p| (p - mx).powi(2)).sum();
                let vy: f64 = y.iter().map(|q| (q - my).powi(2)).sum();
                cov / (vx * vy).sqrt().max(1e-9)
            })
            .fold(f64::MIN, f64::max)
    }

    #[test]
    fn every_format_decodes_to_the_same_speech() {
        let wav = reference();
        // Lossless formats are exact; lossy ones must keep the loudness contour (their
        // decoders add a delay of up to 200 ms, found by the search).
        assert_eq!(
            decode(sample("formats/hello.flac"), 60.0).unwrap().channels[0],
            wav
        );
        let reference = contour(&wav);
        for file in [
            "formats/hello.mp3",
            "formats/hello.ogg",
            "formats/hello-vorbis.ogg",
            "formats/hello.m4a",
        ] {
            let pcm = decode(sample(file), 60.0).unwrap();
            assert_eq!(pcm.channels.len(), 1, "{file}");
            let seconds = pcm.seconds();
            assert!((seconds - 4.094).abs() < 0.1, "{file}: {seconds} s");
            let ours = if pcm.sample_rate == 16_000 {
                pcm.channels[0].clone()
            } else {
                panic!("{file}: decoded at {} Hz", pcm.sample_rate)
            };
            let score = similarity(&reference, &contour(&ours), 10);
            assert!(
                score > 0.95,
                "{file}: loudness contour correlation {score:.3}"
            );
            // And silence is not speech: the contour of another signal does not match.
            assert!(similarity(&reference, &contour(&ours[16_000..]), 10) < 0.8);
        }
    }

    #[test]
    fn stereo_keeps_its_channels_apart() {
        let pcm = decode(sample("formats/call-stereo.flac"), 60.0).unwrap();
        assert_eq!(pcm.channels.len(), 2);
        assert_eq!(pcm.channels[0], reference());
        assert_ne!(pcm.channels[0], pcm.channels[1]);
        assert_eq!(pcm.mixed().len(), pcm.frames());
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert!(matches!(
            decode(
                Bytes::from_static(b"this is not audio at all, just text"),
                60.0
            ),
            Err(MediaError::NotAudio(_))
        ));
        assert!(matches!(
            decode(Bytes::new(), 60.0),
            Err(MediaError::NotAudio(_))
        ));
        // Cut inside the header: nothing can be decoded.
        let mp3 = sample("formats/hello.mp3");
        assert!(decode(mp3.slice(..40), 60.0).is_err());
        // Cut half-way: what was there is kept.
        let half = decode(mp3.slice(..mp3.len() / 2), 60.0).unwrap();
        assert!(
            half.seconds() > 1.0 && half.seconds() < 3.0,
            "{}",
            half.seconds()
        );
        // Longer than allowed.
        assert_eq!(
            decode(sample("formats/hello.flac"), 2.0),
            Err(MediaError::TooLong { limit_seconds: 2 })
        );
    }

    #[test]
    fn raw_linear16_is_split_into_channels() {
        let bytes: Vec<u8> = [1i16, -1, 2, -2, 3, -3]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let pcm = linear16(&bytes, 8_000, 2, 60.0).unwrap();
        assert_eq!(pcm.channels, vec![vec![1, 2, 3], vec![-1, -2, -3]]);
        assert_eq!(linear16(&[], 8_000, 1, 60.0), Err(MediaError::Empty));
        assert_eq!(
            linear16(&bytes, 8_000, 9, 60.0),
            Err(MediaError::TooManyChannels(9))
        );
    }
}
