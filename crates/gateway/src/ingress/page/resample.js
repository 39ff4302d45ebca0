// Band-limited resampling of mono float samples, streaming: a windowed-sinc (Blackman)
// low-pass evaluated at each output instant, so any input rate (8-192 kHz) becomes the
// contract's 16 kHz without aliasing. Shared by the AudioWorklet (microphone) and the
// WAV path of the page. No dependencies.

export const TARGET_RATE = 16000;

export class Resampler {
  // zeroCrossings: kernel half-width in output periods (quality against CPU).
  constructor(inRate, outRate = TARGET_RATE, zeroCrossings = 16) {
    if (!(inRate > 0) || !(outRate > 0)) throw new Error(`bad sample rates ${inRate} -> ${outRate}`);
    this.identity = inRate === outRate;
    this.step = inRate / outRate; // input samples per output sample
    const scale = Math.max(1, this.step); // downsampling widens the kernel
    // cut-off in cycles per input sample: 92 % of the lower Nyquist (7.36 kHz for 16 kHz out)
    const fc = (0.5 / scale) * 0.92;
    this.half = Math.ceil(zeroCrossings * scale); // half-width, in input samples
    this.res = 64; // table points per input sample (linear interpolation between them)
    const n = this.half * this.res + 2;
    this.table = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const t = i / this.res;
      const x = t / this.half;
      const win = x >= 1 ? 0 : 0.42 + 0.5 * Math.cos(Math.PI * x) + 0.08 * Math.cos(2 * Math.PI * x);
      const a = 2 * Math.PI * fc * t;
      this.table[i] = (a === 0 ? 1 : Math.sin(a) / a) * win;
    }
    this.tail = new Float32Array(this.half); // silence before the first sample
    this.pos = this.half; // where the next output sample sits in tail + input
    this.seenIn = 0;
    this.madeOut = 0;
  }

  weight(distance) {
    const f = distance * this.res;
    const i = f | 0;
    if (i + 1 >= this.table.length) return 0;
    return this.table[i] + (this.table[i + 1] - this.table[i]) * (f - i);
  }

  // The output samples that `input` completes (the last few wait for the next call).
  push(input) {
    this.seenIn += input.length;
    if (this.identity) {
      this.madeOut += input.length;
      return Float32Array.from(input);
    }
    const buf = new Float32Array(this.tail.length + input.length);
    buf.set(this.tail);
    buf.set(input, this.tail.length);
    const half = this.half;
    const out = new Float32Array(Math.max(0, Math.ceil((buf.length - this.pos) / this.step)) + 1);
    let n = 0;
    let pos = this.pos;
    while (pos + half < buf.length) {
      const lo = Math.max(0, Math.ceil(pos - half));
      const hi = Math.floor(pos + half);
      let acc = 0;
      let norm = 0;
      for (let i = lo; i <= hi; i++) {
        const w = this.weight(Math.abs(i - pos));
        acc += buf[i] * w;
        norm += w;
      }
      out[n++] = norm > 0 ? acc / norm : 0;
      pos += this.step;
    }
    const keep = Math.max(0, Math.floor(pos - half) - 1);
    this.tail = buf.slice(keep);
    this.pos = pos - keep;
    this.madeOut += n;
    return out.subarray(0, n);
  }

  // The remaining output samples at the end of the input (exactly ceil(in / step) in all).
  flush() {
    if (this.identity) return new Float32Array(0);
    const owed = Math.ceil(this.seenIn / this.step) - this.madeOut;
    if (owed <= 0) return new Float32Array(0);
    const seen = this.seenIn;
    const made = this.madeOut;
    const rest = this.push(new Float32Array(this.half + Math.ceil(this.step) + 1)).subarray(0, owed);
    this.seenIn = seen;
    this.madeOut = made + rest.length;
    return rest;
  }
}

// Float samples in [-1, 1] to signed 16-bit (clipped).
export function floatToPcm16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff);
  }
  return out;
}
