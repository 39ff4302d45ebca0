// WAV files for the page: RIFF/WAVE with 16-bit PCM (format 1, or WAVE_FORMAT_EXTENSIBLE
// with the PCM sub-format), mono or stereo, any rate. Returns mono float samples (stereo
// is averaged). A data chunk whose size is a placeholder (streamed writers such as
// `espeak-ng --stdout` or `sox ... -t wav -` leave 0 or 0xFFFFFFFF) runs to the end.

export function decodeWav(arrayBuffer) {
  const view = new DataView(arrayBuffer);
  const tag = (at) => String.fromCharCode(view.getUint8(at), view.getUint8(at + 1), view.getUint8(at + 2), view.getUint8(at + 3));
  if (view.byteLength < 12 || tag(0) !== 'RIFF' || tag(8) !== 'WAVE') {
    throw new Error('This is not a WAV file (no RIFF/WAVE header).');
  }
  let format = null;
  let at = 12;
  while (at + 8 <= view.byteLength) {
    const id = tag(at);
    let size = view.getUint32(at + 4, true);
    const body = at + 8;
    if (id === 'fmt ') {
      if (size < 16) throw new Error('The WAV file has a damaged format chunk.');
      let code = view.getUint16(body, true);
      if (code === 0xfffe && size >= 40) code = view.getUint16(body + 24, true); // extensible: sub-format GUID
      format = {
        code,
        channels: view.getUint16(body + 2, true),
        rate: view.getUint32(body + 4, true),
        bits: view.getUint16(body + 14, true),
      };
    } else if (id === 'data') {
      if (!format) throw new Error('The WAV file has its audio before its format chunk.');
      if (format.code !== 1 || format.bits !== 16) {
        throw new Error(`Only 16-bit PCM WAV files can be streamed (this one is ${format.code === 1 ? `${format.bits}-bit PCM` : `format ${format.code}`}).`);
      }
      if (format.channels < 1 || format.channels > 2) {
        throw new Error(`Only mono or stereo WAV files can be streamed (this one has ${format.channels} channels).`);
      }
      if (format.rate < 8000 || format.rate > 192000) {
        throw new Error(`The WAV file's sample rate (${format.rate} Hz) is outside 8-192 kHz.`);
      }
      if (size === 0 || size > view.byteLength - body) size = view.byteLength - body;
      const frameBytes = 2 * format.channels;
      const frames = Math.floor(size / frameBytes);
      const samples = new Float32Array(frames);
      for (let i = 0; i < frames; i++) {
        let sum = 0;
        for (let c = 0; c < format.channels; c++) sum += view.getInt16(body + i * frameBytes + 2 * c, true);
        samples[i] = sum / format.channels / 32768;
      }
      return { rate: format.rate, channels: format.channels, samples };
    }
    at = body + size + (size & 1);
  }
  throw new Error(format ? 'The WAV file has no audio (no data chunk).' : 'The WAV file has no format chunk.');
}
