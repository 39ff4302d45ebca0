// The microphone's AudioWorklet: mixes the input to mono, resamples it from the audio
// context's rate (usually 48 kHz) to 16 kHz, converts to PCM16 and posts one 100 ms
// frame (1600 samples, 3200 bytes) at a time to the page, with the frame's level (RMS).
// "stop" posts the partly filled last frame, then the processor ends.

import { Resampler, TARGET_RATE, floatToPcm16 } from './resample.js';

class Pcm16Frames extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.frameSamples = o.frameSamples || TARGET_RATE / 10;
    // `sampleRate` is the rendering rate of the AudioWorkletGlobalScope
    this.resampler = new Resampler(sampleRate, TARGET_RATE);
    this.frame = new Float32Array(this.frameSamples);
    this.fill = 0;
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data === 'stop' && this.running) {
        this.take(this.resampler.flush());
        if (this.fill > 0) this.post(this.frame.subarray(0, this.fill));
        this.fill = 0;
        this.running = false;
        this.port.postMessage({ done: true });
      }
    };
  }

  post(samples) {
    let energy = 0;
    for (let i = 0; i < samples.length; i++) energy += samples[i] * samples[i];
    const pcm = floatToPcm16(samples);
    this.port.postMessage({ pcm, level: Math.sqrt(energy / Math.max(1, samples.length)) }, [pcm.buffer]);
  }

  take(samples) {
    for (let i = 0; i < samples.length; i++) {
      this.frame[this.fill++] = samples[i];
      if (this.fill === this.frameSamples) {
        this.post(this.frame);
        this.fill = 0;
      }
    }
  }

  process(inputs) {
    if (!this.running) return false;
    const channels = inputs[0];
    if (channels && channels.length > 0) {
      let mono = channels[0];
      if (channels.length > 1) {
        mono = new Float32Array(channels[0].length);
        for (const ch of channels) for (let i = 0; i < ch.length; i++) mono[i] += ch[i] / channels.length;
      }
      this.take(this.resampler.push(mono));
    }
    return true;
  }
}

registerProcessor('pcm16-frames', Pcm16Frames);
