//! The gateway's resampler (crates/gateway/src/session/resample.rs, compiled in as it is)
//! against rubato's synchronous FFT resampler and its sinc resampler, each wrapped to
//! stream like the gateway's (any frame size in, output independent of the frame sizes):
//! CPU per output sample over 60 s of noise in 100 ms frames (best of 5), passband gain
//! (1 kHz, 3.4 kHz — the top of telephone speech — 6 and 7 kHz), stop-band rejection of a
//! tone 10 % above the lower Nyquist frequency, and the delay each adds.

#[path = "../../../../crates/gateway/src/session/resample.rs"]
#[allow(dead_code)]
mod gateway;

use std::time::Instant;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, Fft, FixedAsync, FixedSync, Indexing, Resampler, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};

/// A rubato resampler fed fixed 10 ms chunks from a buffer, its delay skipped.
struct Streamed {
    r: Box<dyn Resampler<f32>>,
    chunk: usize,
    pending: Vec<f32>,
    out: Vec<f32>,
    skip: usize,
    fed: u64,
    emitted: u64,
    ratio: (u64, u64),
}

impl Streamed {
    fn new(kind: Kind, from: usize, to: usize) -> Self {
        let chunk = from / 100;
        let r: Box<dyn Resampler<f32>> = match kind {
            Kind::Fft => Box::new(Fft::<f32>::new(from, to, chunk, 1, FixedSync::Input).unwrap()),
            Kind::Sinc(len) => {
                let p = SincInterpolationParameters::new(len, WindowFunction::BlackmanHarris2)
                    .oversampling_factor(256)
                    .interpolation(SincInterpolationType::Linear);
                let ratio = to as f64 / from as f64;
                Box::new(Async::<f32>::new_sinc(ratio, 1.0, &p, chunk, 1, FixedAsync::Input).unwrap())
            }
            Kind::Gateway => unreachable!(),
        };
        let skip = r.output_delay();
        let out = vec![0.0; r.output_frames_max()];
        Streamed { r, chunk, pending: Vec::new(), out, skip, fed: 0, emitted: 0, ratio: (from as u64, to as u64) }
    }

    fn run(&mut self, partial: Option<usize>, out: &mut Vec<i16>) {
        let input = InterleavedSlice::new(&self.pending[..self.chunk], 1, self.chunk).unwrap();
        let max = self.out.len();
        let mut output = InterleavedSlice::new_mut(&mut self.out, 1, max).unwrap();
        let indexing = partial.map(|n| Indexing::new().partial_len(n));
        let (_, written) = self.r.process_into_buffer(&input, &mut output, indexing.as_ref()).unwrap();
        for &y in &self.out[..written] {
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            out.push((y * 32768.0).round().clamp(-32768.0, 32767.0) as i16);
            self.emitted += 1;
        }
    }

    fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        self.fed += input.len() as u64;
        self.pending.extend(input.iter().map(|&s| f32::from(s) / 32768.0));
        while self.pending.len() >= self.chunk {
            self.run(None, out);
            self.pending.drain(..self.chunk);
        }
    }

    fn flush(&mut self, out: &mut Vec<i16>) {
        let want = self.fed * self.ratio.1 / self.ratio.0;
        let mut left = self.pending.len();
        while self.emitted < want {
            self.pending.resize(self.chunk, 0.0);
            self.run(Some(left), out);
            self.pending.clear();
            left = 0;
        }
        out.truncate(out.len() - (self.emitted - want) as usize);
        self.emitted = want;
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Gateway,
    Fft,
    Sinc(usize),
}

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::Gateway => "gateway (hand-written)".into(),
            Kind::Fft => "rubato Fft, 10 ms chunks".into(),
            Kind::Sinc(n) => format!("rubato sinc {n}, 10 ms chunks"),
        }
    }

    fn convert(self, from: u32, to: u32, input: &[i16]) -> Vec<i16> {
        let frame = from as usize / 10;
        let mut out = Vec::with_capacity(input.len() * to as usize / from as usize + 16);
        match self {
            Kind::Gateway => {
                let mut r = gateway::Resampler::new(from, to);
                for c in input.chunks(frame) {
                    r.process(c, &mut out);
                }
                r.flush(&mut out);
            }
            _ => {
                let mut r = Streamed::new(self, from as usize, to as usize);
                for c in input.chunks(frame) {
                    r.process(c, &mut out);
                }
                r.flush(&mut out);
            }
        }
        out
    }

    /// Audio held back at the end of a frame that is a multiple of 10 ms, in ms.
    fn delay_ms(self, from: u32, to: u32) -> f64 {
        // An impulse in the middle of a frame; the frame's output ends `delay` before it.
        let mut x = vec![0i16; from as usize / 10];
        let frame = x.len();
        x[frame - 1] = 20_000;
        let mut out = Vec::new();
        match self {
            Kind::Gateway => gateway::Resampler::new(from, to).process(&x, &mut out),
            _ => Streamed::new(self, from as usize, to as usize).process(&x, &mut out),
        }
        (frame as f64 / f64::from(from) - out.len() as f64 / f64::from(to)) * 1000.0
    }
}

fn sine(rate: u32, freq: f64, amplitude: f64, seconds: f64) -> Vec<i16> {
    (0..(f64::from(rate) * seconds) as usize)
        .map(|i| (amplitude * (std::f64::consts::TAU * freq * i as f64 / f64::from(rate)).sin()) as i16)
        .collect()
}

fn goertzel(samples: &[i16], rate: u32, freq: f64) -> f64 {
    let w = std::f64::consts::TAU * freq / f64::from(rate);
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s0 = f64::from(x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    2.0 * (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2).sqrt() / samples.len() as f64
}

fn middle(x: &[i16]) -> &[i16] {
    &x[x.len() / 4..3 * x.len() / 4]
}

fn noise(n: usize) -> Vec<i16> {
    let mut x: u64 = 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 48) as i16) / 4
        })
        .collect()
}

fn main() {
    let kinds = [Kind::Gateway, Kind::Fft, Kind::Sinc(128)];
    println!("| from → to | resampler | ns / output sample | gain 1 kHz | 3.4 kHz | 6 kHz | 7 kHz | stop band (dB) | delay (ms) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (from, to) in [(48_000u32, 16_000u32), (44_100, 16_000), (22_050, 16_000), (8_000, 16_000)] {
        let input = noise(from as usize * 60);
        for kind in kinds {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                let out = kind.convert(from, to, &input);
                best = best.min(t.elapsed().as_nanos() as f64 / out.len() as f64);
            }
            let nyquist = f64::from(from.min(to)) / 2.0;
            let gain = |f: f64| {
                if f >= nyquist {
                    return "–".to_string();
                }
                let out = kind.convert(from, to, &sine(from, f, 10_000.0, 2.0));
                format!("{:.3}", goertzel(middle(&out), to, f) / 10_000.0)
            };
            let stop = nyquist * 1.1;
            let rejection = if f64::from(from) / 2.0 > stop {
                let out = kind.convert(from, to, &sine(from, stop, 10_000.0, 2.0));
                let m = middle(&out);
                let rms = (m.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / m.len() as f64).sqrt();
                // Below half an LSB the output is rounding noise: the measurement's floor.
                format!("{:.0}", 20.0 * (rms.max(0.5) / (10_000.0 / 2f64.sqrt())).log10())
            } else {
                "–".into()
            };
            println!(
                "| {from} → {to} | {} | {best:.1} | {} | {} | {} | {} | {rejection} | {:.1} |",
                kind.name(),
                gain(1_000.0),
                gain(3_400.0),
                gain(6_000.0),
                gain(7_000.0),
                kind.delay_ms(from, to)
            );
        }
    }
}
