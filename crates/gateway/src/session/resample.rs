//! Streaming sample-rate conversion for PCM16 mono audio.
//!
//! Clients may send 8–48 kHz audio while a back end wants one fixed rate, so the session
//! converts every frame as it arrives. The converter is a band-limited (Kaiser-windowed
//! sinc) interpolator read at an exact rational position: any pair of integer rates
//! works, the read position never drifts, and because the output depends only on the
//! input samples (never on how they were split into calls) chunk boundaries leave no
//! seams.
//!
//! Cost: about `2 * 24 / 0.9 ≈ 53` multiply-adds per output sample, counted at the
//! lower rate's sample spacing, so converting speech is a small fraction of a core.
//! Delay: the filter looks `half` input samples ahead (≈ 1.7 ms at 48 → 16 kHz,
//! ≈ 3.4 ms at 8 → 16 kHz); [`Resampler::flush`] releases that tail at end of stream.

use std::f64::consts::PI;

/// Zero crossings of the sinc on each side of its centre, counted in samples of the
/// lower rate. With [`KAISER_BETA`] this gives a transition band of ≈ 10 % of the lower
/// rate, which ends at the lower Nyquist frequency thanks to [`ROLLOFF`].
const ZERO_CROSSINGS: f64 = 24.0;

/// Cutoff as a fraction of the lower rate's Nyquist frequency. Below 1 so the transition
/// band lies inside the band we keep: content near Nyquist is attenuated rather than
/// folded back (aliases when downsampling, images when upsampling). At 16 kHz output the
/// passband is flat to ≈ 6.4 kHz, far above what speech recognition uses.
const ROLLOFF: f64 = 0.9;

/// Kaiser window shape: β = 8 gives ≈ 80 dB stop-band rejection.
const KAISER_BETA: f64 = 8.0;

/// Most filter phases tabulated. Ratios whose reduced numerator is at most this get one
/// exact phase per output position; others (e.g. 44 100 → 47 999) interpolate linearly
/// between neighbouring phases, an error near −90 dB.
const MAX_PHASES: u64 = 256;

/// Streaming PCM16 mono resampler; keeps state between calls so chunk boundaries leave no seams.
pub struct Resampler {
    from_hz: u32,
    to_hz: u32,
    /// `None` when the rates are equal: samples are copied untouched.
    filter: Option<Filter>,
}

impl Resampler {
    /// Panics never; rates are validated by the caller (8_000..=48_000). Equal rates = passthrough.
    ///
    /// A zero rate (which the caller should have rejected) is treated as 1 Hz so that the
    /// constructor keeps its promise not to panic.
    pub fn new(from_hz: u32, to_hz: u32) -> Self {
        let filter = (from_hz != to_hz).then(|| Filter::new(from_hz.max(1), to_hz.max(1)));
        Self {
            from_hz,
            to_hz,
            filter,
        }
    }

    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    pub fn is_passthrough(&self) -> bool {
        self.filter.is_none()
    }

    /// Appends the converted samples for `input` to `out`.
    ///
    /// Output lags input by the filter's look-ahead; the lagging samples come out of
    /// later calls or of [`Resampler::flush`].
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        match &mut self.filter {
            None => out.extend_from_slice(input),
            Some(filter) => filter.process(input, out),
        }
    }

    /// Emits what is still held back (the filter's look-ahead) at end of stream.
    ///
    /// The stream is treated as followed by silence. Afterwards the resampler is back in
    /// its initial state, ready for an unrelated stream. Over a whole stream of `n` input
    /// samples, `process` + `flush` emit `ceil(n * to / from)` samples: one output for
    /// every output instant that falls before the end of the input.
    pub fn flush(&mut self, out: &mut Vec<i16>) {
        if let Some(filter) = &mut self.filter {
            filter.flush(out);
        }
    }
}

/// A whole buffer converted at once (its look-ahead flushed: nothing lost at the end).
pub fn convert(from_hz: u32, to_hz: u32, input: &[i16]) -> Vec<i16> {
    let mut r = Resampler::new(from_hz, to_hz);
    let mut out = Vec::with_capacity(
        (input.len() as u64 * u64::from(to_hz) / u64::from(from_hz.max(1))) as usize + 64,
    );
    r.process(input, &mut out);
    r.flush(&mut out);
    out
}

/// Polyphase windowed-sinc interpolator plus its streaming state.
///
/// Output sample `n` sits at input time `n * down / up` (input sample `k` at time `k`),
/// kept exactly as `pos + frac / up`. Its value is `Σ x[k]·h(t − k)` over the `taps`
/// input samples `pos − half ..= pos + half`; input before the stream is zero.
struct Filter {
    /// Output rate over the gcd: the denominator of the read position.
    up: u64,
    /// Input rate over the gcd: how far the read position moves per output sample.
    down: u64,
    /// Number of tabulated phases; the table holds `phases + 1` rows so that
    /// interpolation between the last phase and the next input sample needs no wrap.
    phases: u64,
    half: usize,
    taps: usize,
    /// Row `r` holds `h(r / phases − j)` for `j = −half ..= half`, each row normalised
    /// to sum to 1 so DC passes at exactly unit gain.
    table: Vec<f32>,
    /// Input samples from absolute index `start` on (including the leading zeros).
    history: Vec<f32>,
    start: i64,
    /// Integer part of the next output's read position.
    pos: i64,
    /// Fractional part of the next output's read position, in units of `1 / up`.
    frac: u64,
    /// Input samples received since the stream began.
    received: i64,
}

impl Filter {
    fn new(from_hz: u32, to_hz: u32) -> Self {
        let g = gcd(u64::from(from_hz), u64::from(to_hz));
        let up = u64::from(to_hz) / g;
        let down = u64::from(from_hz) / g;
        // Cutoff in cycles per input sample is `cutoff / 2`.
        let cutoff = ROLLOFF * f64::from(from_hz.min(to_hz)) / f64::from(from_hz);
        let half_width = ZERO_CROSSINGS / cutoff;
        let half = half_width.ceil() as usize;
        let taps = 2 * half + 1;
        let phases = up.min(MAX_PHASES);
        let i0_beta = bessel_i0(KAISER_BETA);

        let mut table = Vec::with_capacity((phases as usize + 1) * taps);
        let mut row = vec![0f64; taps];
        for r in 0..=phases {
            let phase = r as f64 / phases as f64;
            for (i, value) in row.iter_mut().enumerate() {
                let tau = phase - (i as f64 - half as f64);
                *value = kernel(tau, cutoff, half_width, i0_beta);
            }
            let sum: f64 = row.iter().sum();
            table.extend(row.iter().map(|v| (v / sum) as f32));
        }

        let mut filter = Self {
            up,
            down,
            phases,
            half,
            taps,
            table,
            history: Vec::new(),
            start: 0,
            pos: 0,
            frac: 0,
            received: 0,
        };
        filter.reset();
        filter
    }

    /// Back to the start of a stream: silence before sample 0, read position at 0.
    fn reset(&mut self) {
        self.history.clear();
        self.history.resize(self.half, 0.0);
        self.start = -(self.half as i64);
        self.pos = 0;
        self.frac = 0;
        self.received = 0;
    }

    fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        self.history.extend(input.iter().map(|&s| f32::from(s)));
        self.received += input.len() as i64;
        // An output needs input up to `pos + half`.
        let limit = self.received - self.half as i64;
        self.emit_while_before(limit, out);
        self.discard_consumed();
    }

    fn flush(&mut self, out: &mut Vec<i16>) {
        // The look-ahead past the end reads silence.
        self.history.resize(self.history.len() + self.half, 0.0);
        self.emit_while_before(self.received, out);
        self.reset();
    }

    /// Emits every output whose read position's integer part is below `limit`.
    fn emit_while_before(&mut self, limit: i64, out: &mut Vec<i16>) {
        while self.pos < limit {
            let first = (self.pos - self.half as i64 - self.start) as usize;
            let window = &self.history[first..first + self.taps];
            let scaled = self.frac * self.phases;
            let row = (scaled / self.up) as usize;
            let rest = scaled % self.up;
            let mut y = dot(window, self.row(row));
            if rest != 0 {
                let mu = rest as f32 / self.up as f32;
                let next = dot(window, self.row(row + 1));
                y += (next - y) * mu;
            }
            out.push(to_i16(y));

            self.frac += self.down;
            self.pos += (self.frac / self.up) as i64;
            self.frac %= self.up;
        }
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.table[r * self.taps..(r + 1) * self.taps]
    }

    /// Drops input the next output can no longer reach. Done in batches so the copy
    /// stays amortised O(1) per sample.
    fn discard_consumed(&mut self) {
        let consumed = (self.pos - self.half as i64 - self.start).max(0) as usize;
        let consumed = consumed.min(self.history.len());
        if consumed >= 4096 || consumed * 2 >= self.history.len() {
            self.history.drain(..consumed);
            self.start += consumed as i64;
        }
    }
}

/// Windowed sinc at `tau` input samples from the centre, for a cutoff of `cutoff / 2`
/// cycles per input sample.
fn kernel(tau: f64, cutoff: f64, half_width: f64, i0_beta: f64) -> f64 {
    let x = tau / half_width;
    if x.abs() >= 1.0 {
        return 0.0;
    }
    let window = bessel_i0(KAISER_BETA * (1.0 - x * x).sqrt()) / i0_beta;
    let arg = PI * cutoff * tau;
    let sinc = if arg.abs() < 1e-12 {
        1.0
    } else {
        arg.sin() / arg
    };
    cutoff * sinc * window
}

/// Modified Bessel function of the first kind, order 0 (power series; converges fast
/// for the small arguments a Kaiser window uses).
fn bessel_i0(x: f64) -> f64 {
    let quarter_sq = x * x / 4.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut k = 1.0;
    while term > sum * 1e-17 {
        term *= quarter_sq / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

/// Dot product with eight independent accumulators so the compiler can vectorise it.
/// The summation order depends only on tap positions, so results are identical however
/// the input was chunked.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Rounds and saturates: filter overshoot on full-scale input must clip, not wrap.
fn to_i16(y: f32) -> i16 {
    y.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [u32; 9] = [
        8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
    ];

    fn sine(rate: u32, freq: f64, amplitude: f64, seconds: f64) -> Vec<i16> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (amplitude * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()).round() as i16
            })
            .collect()
    }

    /// Amplitude of the `freq` component (Goertzel), for a whole number of cycles.
    fn goertzel_amplitude(samples: &[i16], rate: u32, freq: f64) -> f64 {
        let w = 2.0 * PI * freq / f64::from(rate);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in samples {
            let s0 = f64::from(x) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        2.0 * power.sqrt() / samples.len() as f64
    }

    fn rms(samples: &[i16]) -> f64 {
        let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        (sum / samples.len() as f64).sqrt()
    }

    /// Tiny deterministic generator so tests need no `rand`.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    #[test]
    fn output_length_matches_rate_ratio_for_all_pairs() {
        for &from in &RATES {
            for &to in &RATES {
                for n in [0usize, 1, 7, 160, 4_410, 12_345] {
                    let input = vec![1000i16; n];
                    let out = convert(from, to, &input);
                    let expected = (n as f64 * f64::from(to) / f64::from(from)).round() as i64;
                    let diff = out.len() as i64 - expected;
                    assert!(
                        diff.abs() <= 1,
                        "{from}->{to} n={n}: got {} expected {expected}",
                        out.len()
                    );
                }
            }
        }
    }

    #[test]
    fn chunking_does_not_change_output() {
        let mut lcg = Lcg(42);
        let signal: Vec<i16> = (0..20_000)
            .map(|_| (lcg.next() % 20_000) as i16 - 10_000)
            .collect();
        for (from, to) in [
            (48_000, 16_000),
            (8_000, 16_000),
            (44_100, 16_000),
            (11_025, 16_000),
            (16_000, 47_999),
        ] {
            let whole = convert(from, to, &signal);
            for pattern in ["ones", "160", "random"] {
                let mut r = Resampler::new(from, to);
                let mut out = Vec::new();
                let mut i = 0;
                while i < signal.len() {
                    let len = match pattern {
                        "ones" => 1,
                        "160" => 160,
                        _ => 1 + (lcg.next() % 700) as usize,
                    };
                    let end = (i + len).min(signal.len());
                    r.process(&signal[i..end], &mut out);
                    i = end;
                }
                r.flush(&mut out);
                assert_eq!(out, whole, "{from}->{to} chunked as {pattern}");
            }
        }
    }

    #[test]
    fn flush_resets_for_a_new_stream() {
        let signal = sine(44_100, 440.0, 8000.0, 0.25);
        let first = convert(44_100, 16_000, &signal);
        let mut r = Resampler::new(44_100, 16_000);
        let mut out = Vec::new();
        r.process(&signal, &mut out);
        r.flush(&mut out);
        out.clear();
        r.process(&signal, &mut out);
        r.flush(&mut out);
        assert_eq!(out, first);
    }

    #[test]
    fn one_khz_keeps_frequency_and_amplitude_48k_to_16k() {
        let amplitude = 10_000.0;
        let out = convert(48_000, 16_000, &sine(48_000, 1000.0, amplitude, 1.0));
        // Skip the edges where the filter sees the silence around the stream.
        let steady = &out[800..15_200];
        let crossings = steady
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
        // 14 400 samples at 16 kHz = 0.9 s of 1 kHz = 1800 crossings.
        assert!((1798..=1802).contains(&crossings), "crossings {crossings}");
        let measured = goertzel_amplitude(steady, 16_000, 1000.0);
        let db = 20.0 * (measured / amplitude).log10();
        assert!(db.abs() < 1.0, "gain {db:.3} dB");
        // Nearly all energy is at 1 kHz: a sine's RMS is amplitude/√2.
        assert!((rms(steady) - measured / 2f64.sqrt()).abs() < 0.01 * measured);
    }

    #[test]
    fn upsampling_keeps_amplitude_8k_to_16k() {
        let amplitude = 12_000.0;
        let out = convert(8_000, 16_000, &sine(8_000, 1000.0, amplitude, 1.0));
        let steady = &out[800..15_200];
        let db = 20.0 * (goertzel_amplitude(steady, 16_000, 1000.0) / amplitude).log10();
        assert!(db.abs() < 1.0, "gain {db:.3} dB");
        // No image of 1 kHz at 8 − 1 = 7 kHz above the filter's rejection.
        let image = goertzel_amplitude(steady, 16_000, 7000.0);
        assert!(20.0 * (image / amplitude).log10() < -40.0, "image {image}");
    }

    #[test]
    fn seven_khz_is_rejected_when_downsampling_to_8k() {
        let amplitude = 10_000.0;
        let out = convert(48_000, 8_000, &sine(48_000, 7000.0, amplitude, 1.0));
        let steady = &out[400..7_600];
        let input_rms = amplitude / 2f64.sqrt();
        let attenuation = 20.0 * (rms(steady) / input_rms).log10();
        assert!(
            attenuation <= -30.0,
            "7 kHz only attenuated by {attenuation:.1} dB"
        );
        // And specifically its alias at 1 kHz.
        let alias = goertzel_amplitude(steady, 8_000, 1000.0);
        assert!(20.0 * (alias / amplitude).log10() <= -30.0);
    }

    #[test]
    fn passthrough_is_identity() {
        let mut lcg = Lcg(7);
        let signal: Vec<i16> = (0..1000).map(|_| lcg.next() as i16).collect();
        let mut r = Resampler::new(16_000, 16_000);
        assert!(r.is_passthrough());
        assert_eq!((r.from_hz(), r.to_hz()), (16_000, 16_000));
        let mut out = vec![5];
        r.process(&signal, &mut out);
        r.flush(&mut out);
        assert_eq!(out[0], 5, "process appends");
        assert_eq!(&out[1..], &signal[..]);
        assert!(!Resampler::new(8_000, 16_000).is_passthrough());
    }

    #[test]
    fn full_scale_square_wave_saturates_instead_of_wrapping() {
        // A full-scale square wave overshoots (Gibbs) after filtering; wrapping would turn
        // +32767 + overshoot into a large negative value right after a positive edge.
        let square: Vec<i16> = (0..9_600)
            .map(|i| {
                if (i / 24) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let out = convert(48_000, 16_000, &square);
        let out_period = 16; // 48 samples at 48 kHz = 16 at 16 kHz
        let mut clipped = 0;
        for (i, &s) in out.iter().enumerate().skip(200).take(2_800) {
            let phase = i % out_period;
            // Middle of each half-period: must keep the half-period's sign.
            if phase == 4 {
                assert!(s > 20_000, "sample {i} = {s} in a positive half");
            } else if phase == 12 {
                assert!(s < -20_000, "sample {i} = {s} in a negative half");
            }
            if s == i16::MAX || s == i16::MIN {
                clipped += 1;
            }
        }
        assert!(clipped > 0, "overshoot should reach the rails");
    }

    #[test]
    fn dc_passes_at_unit_gain() {
        for (from, to) in [
            (48_000, 16_000),
            (8_000, 16_000),
            (22_050, 16_000),
            (16_000, 47_999),
        ] {
            let out = convert(from, to, &vec![-12_345i16; 30_000]);
            let mid = &out[out.len() / 4..out.len() * 3 / 4];
            assert!(mid.iter().all(|&s| (s + 12_345).abs() <= 1), "{from}->{to}");
        }
    }

    /// Throughput report, not an assertion: `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput_report() {
        let seconds = 60.0;
        for (from, to) in [
            (48_000, 16_000),
            (44_100, 16_000),
            (8_000, 16_000),
            (44_100, 47_999),
        ] {
            let signal = sine(from, 440.0, 9000.0, seconds);
            let mut r = Resampler::new(from, to);
            let mut out = Vec::with_capacity((f64::from(to) * (seconds + 1.0)) as usize);
            let t = std::time::Instant::now();
            for chunk in signal.chunks(from as usize / 10) {
                r.process(chunk, &mut out);
            }
            r.flush(&mut out);
            let cpu = t.elapsed().as_secs_f64();
            println!(
                "{from}->{to}: {:.0} s of audio per CPU second",
                seconds / cpu
            );
            assert_eq!(out.len(), (f64::from(to) * seconds) as usize);
        }
    }
}
