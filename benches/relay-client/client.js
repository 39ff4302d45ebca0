#!/usr/bin/env node
// The load client of scripts/bench-relays.sh: N real-time sessions against one relay,
// speaking either the gateway's v1 contract (/v1/audio/stream) or the AudioCodes protocol
// of NVIDIA's websocket-bridge. The same code paces, times and reports both; only the
// opening, the closing and the reading of results differ.
//
//   node client.js --protocol v1|audiocodes --url ws[s]://HOST:PORT/PATH --clip FILE.wav
//     [--sessions 400] [--duration 35] [--ramp 10] [--settle 1] [--frame-ms 100]
//     [--word-timestamps true|false] [--ca CA.pem] [--pid RELAY_PID] [--clk-tck 100]
//     [--out FILE.json] [--tag KEY=VALUE]...
//
// Session i starts at i * ramp / N seconds and streams the clip (mono PCM16 WAV) in a loop,
// one frame every frame-ms at real time, until `duration` seconds after its start; then it
// sends v1's {"type":"end"} (and waits for the close, 1000) or AudioCodes' {"type":"stop"}
// (and waits for {"type":"end"}, then closes). AudioCodes sessions send audio only after
// the bridge's {"type":"started"}; v1 sessions right after `start`, as `sgw load` does.
//
// The steady window is from `ramp + settle` to `duration - 0.5` seconds after the first
// start: every session is live. Over it the client reads the relay's /proc/PID/stat
// (utime + stime: its CPU) and /proc/PID/status (VmRSS, at the window's end and its peak),
// and keeps the partials that arrive in it:
//
// - v1: a partial's latency is its arrival minus the send time of the first frame whose
//   audio reaches the partial's `timestamp_ms` (within 1 ms), as `sgw load` measures it
//   (crates/tools/src/load/session.rs);
// - AudioCodes: a `hypothesis` carries no audio position. The zero-compute back end answers
//   every audio request with one response, in order, and in the long workload every
//   response after the first word holds a partial, which the bridge forwards as one
//   hypothesis. So hypothesis n answers frame k0 + n, where k0 counts the frames before the
//   first one; k0 is solved after the session as the largest offset consistent with every
//   hypothesis arriving after its frame was sent: min over n of (frames sent when n
//   arrived - 1 - n). That equals the true k0 as soon as one hypothesis came before the
//   next frame went out (latency under one frame), which is nearly all of them.
//
// Both protocols also get a cross-check that needs no position at all: arrival minus the
// send time of the most recent frame (`latest` in the output). It equals the above while
// latency stays under one frame and underestimates beyond.
//
// The output (--out, JSON) holds the relay's CPU and RSS, the latency percentiles, the
// sessions completed and failed with reasons, and the client's own CPU and event-loop delay
// (a saturated client inflates every latency it measures).
'use strict';

const fs = require('fs');
const { performance, monitorEventLoopDelay } = require('perf_hooks');
const WebSocket = require('ws');

const RING = 128;
const MATCH_TOLERANCE_MS = 1.0;
const CLOSE_TIMEOUT_MS = 15000;
const LOOP_RESOLUTION_MS = 10;

function parseArgs(argv) {
  const opts = {
    protocol: 'v1',
    url: null,
    clip: null,
    sessions: 400,
    duration: 35,
    ramp: 10,
    settle: 1,
    frameMs: 100,
    wordTimestamps: true,
    ca: null,
    pid: null,
    clkTck: 100,
    out: null,
    tags: {},
  };
  for (let i = 2; i < argv.length; i++) {
    const key = argv[i];
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`${key} needs a value`);
    i++;
    switch (key) {
      case '--protocol': opts.protocol = value; break;
      case '--url': opts.url = value; break;
      case '--clip': opts.clip = value; break;
      case '--sessions': opts.sessions = positive(key, value); break;
      case '--duration': opts.duration = positive(key, value); break;
      case '--ramp': opts.ramp = Number(value); break;
      case '--settle': opts.settle = Number(value); break;
      case '--frame-ms': opts.frameMs = positive(key, value); break;
      case '--word-timestamps': opts.wordTimestamps = value !== 'false'; break;
      case '--ca': opts.ca = value; break;
      case '--pid': opts.pid = positive(key, value); break;
      case '--clk-tck': opts.clkTck = positive(key, value); break;
      case '--out': opts.out = value; break;
      case '--tag': {
        const eq = value.indexOf('=');
        if (eq < 1) throw new Error(`--tag takes KEY=VALUE, not ${value}`);
        opts.tags[value.slice(0, eq)] = value.slice(eq + 1);
        break;
      }
      default: throw new Error(`unknown argument ${key}`);
    }
  }
  if (!['v1', 'audiocodes'].includes(opts.protocol)) throw new Error('--protocol is v1 or audiocodes');
  if (!opts.url || !opts.clip) throw new Error('--url and --clip are required');
  if (opts.duration - 0.5 - (opts.ramp + opts.settle) < 2) {
    throw new Error('the steady window (ramp + settle .. duration - 0.5 s) must last at least 2 s: lengthen --duration');
  }
  return opts;
}

function positive(key, value) {
  const n = Number(value);
  if (!(n > 0)) throw new Error(`${key} must be a positive number, not ${value}`);
  return n;
}

/** Mono PCM16 WAV cut into frames of frameMs (the last one may be shorter). */
function readClip(path, frameMs) {
  const buf = fs.readFileSync(path);
  if (buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') {
    throw new Error(`${path}: not a WAV file`);
  }
  let pos = 12;
  let fmt = null;
  let data = null;
  while (pos + 8 <= buf.length) {
    const id = buf.toString('ascii', pos, pos + 4);
    let size = buf.readUInt32LE(pos + 4);
    const body = pos + 8;
    if (id === 'data' && body + size > buf.length) size = buf.length - body;
    if (id === 'fmt ') {
      fmt = {
        format: buf.readUInt16LE(body),
        channels: buf.readUInt16LE(body + 2),
        rate: buf.readUInt32LE(body + 4),
        bits: buf.readUInt16LE(body + 14),
      };
    } else if (id === 'data') {
      data = buf.subarray(body, body + size);
    }
    pos = body + size + (size & 1);
  }
  if (!fmt || !data) throw new Error(`${path}: no fmt or data chunk`);
  if (fmt.format !== 1 || fmt.channels !== 1 || fmt.bits !== 16) {
    throw new Error(`${path}: must be mono 16-bit PCM (format ${fmt.format}, ${fmt.channels} channels, ${fmt.bits} bits)`);
  }
  const perFrame = Math.max(1, Math.round(fmt.rate * frameMs / 1000)) * 2;
  const frames = [];
  const frameMsEach = [];
  for (let off = 0; off + 2 <= data.length; off += perFrame) {
    const frame = Buffer.from(data.subarray(off, Math.min(off + perFrame, data.length)));
    frames.push(frame);
    frameMsEach.push((frame.length / 2) * 1000 / fmt.rate);
  }
  if (frames.length === 0) throw new Error(`${path}: no audio`);
  return { rate: fmt.rate, frames, frameMsEach, seconds: data.length / 2 / fmt.rate };
}

/** utime + stime of a process, in clock ticks (all its threads). */
function cpuTicks(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state): utime and stime are fields 14 and 15.
  return Number(rest[11]) + Number(rest[12]);
}

function rssKiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) : null;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

function summary(values) {
  const sorted = Float64Array.from(values).sort();
  const r = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
  return {
    count: sorted.length,
    p50_ms: r(percentile(sorted, 50)),
    p90_ms: r(percentile(sorted, 90)),
    p99_ms: r(percentile(sorted, 99)),
    max_ms: r(sorted.length ? sorted[sorted.length - 1] : null),
  };
}

/** The value of `"key":` in a JSON text, as a number (NaN if absent). */
function numberAfter(buf, needle) {
  const at = buf.indexOf(needle);
  if (at < 0) return NaN;
  let i = at + needle.length;
  while (buf[i] === 0x20) i++;
  let n = 0;
  let digits = 0;
  for (; i < buf.length; i++) {
    const c = buf[i];
    if (c < 0x30 || c > 0x39) break;
    n = n * 10 + (c - 0x30);
    digits++;
  }
  return digits ? n : NaN;
}

/** The top-level "type" of a result message (both protocols put it first). */
function messageType(buf) {
  const at = buf.indexOf('"type"');
  if (at < 0 || at > 16) return JSON.parse(buf.toString()).type;
  const q1 = buf.indexOf(0x22, buf.indexOf(0x3a, at + 6)); // the opening quote after ':'
  const q2 = buf.indexOf(0x22, q1 + 1);
  return buf.toString('latin1', q1 + 1, q2);
}

function main() {
  const opts = parseArgs(process.argv);
  const clip = readClip(opts.clip, opts.frameMs);
  const caPem = opts.ca ? fs.readFileSync(opts.ca) : undefined;
  const v1 = opts.protocol === 'v1';
  const opening = v1
    ? JSON.stringify({
        type: 'start',
        config: {
          sample_rate: clip.rate,
          encoding: 'pcm_s16le',
          word_timestamps: opts.wordTimestamps,
          interim_results: true,
          punctuate: true,
        },
      })
    : JSON.stringify({ type: 'start', language: 'en-US', format: 'raw', encoding: 'LINEAR16', sampleRateHz: clip.rate });
  const closing = JSON.stringify({ type: v1 ? 'end' : 'stop' });
  const maxFrames = Math.ceil((opts.duration * 1000) / opts.frameMs) + 16;

  const stats = {
    started: 0,
    active: 0,
    completed: 0,
    failed: 0,
    frames: 0,
    partials: 0,
    finals: 0,
    errors: {},
  };
  const error = (why) => { stats.errors[why] = (stats.errors[why] || 0) + 1; };
  const latency = [];
  // wss: the negotiated TLS version and cipher (of the first session).
  let tls = null;
  const latest = [];

  const t0 = performance.now() + 500;
  const windowStart = t0 + (opts.ramp + opts.settle) * 1000;
  const windowEnd = t0 + opts.duration * 1000 - 500;
  const inWindow = (t) => t >= windowStart && t <= windowEnd;

  const relay = { pid: opts.pid, rss_idle_kib: null, rss_full_kib: null, rss_peak_kib: null, cpu_ticks: null, window_s: null };
  if (opts.pid) relay.rss_idle_kib = rssKiB(opts.pid);
  const client = {};
  const loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  let tick0 = null;
  let cpu0 = null;
  let wall0 = null;
  let peakTimer = null;

  setTimeout(() => {
    wall0 = performance.now();
    if (opts.pid) tick0 = cpuTicks(opts.pid);
    cpu0 = process.cpuUsage();
    loopDelay.enable();
    if (opts.pid) {
      peakTimer = setInterval(() => {
        const rss = rssKiB(opts.pid);
        if (rss !== null) relay.rss_peak_kib = Math.max(relay.rss_peak_kib || 0, rss);
      }, 1000);
    }
  }, windowStart - performance.now());
  setTimeout(() => {
    const wall = (performance.now() - wall0) / 1000;
    relay.window_s = Math.round(wall * 1000) / 1000;
    if (opts.pid) {
      relay.cpu_ticks = cpuTicks(opts.pid) - tick0;
      relay.cores = relay.cpu_ticks / opts.clkTck / wall;
      relay.cores_per_1000_sessions = (relay.cores * 1000) / opts.sessions;
      relay.rss_full_kib = rssKiB(opts.pid);
      relay.rss_peak_kib = Math.max(relay.rss_peak_kib || 0, relay.rss_full_kib);
      relay.rss_per_session_kib = (relay.rss_full_kib - relay.rss_idle_kib) / opts.sessions;
      relay.active_at_window_end = stats.active;
      clearInterval(peakTimer);
    }
    const used = process.cpuUsage(cpu0);
    client.cores = (used.user + used.system) / 1e6 / wall;
    loopDelay.disable();
    // The histogram holds whole timer periods: the delay is what exceeds the resolution.
    client.loop_delay_p99_ms = Math.max(0, loopDelay.percentile(99) / 1e6 - LOOP_RESOLUTION_MS);
    client.loop_delay_max_ms = Math.max(0, loopDelay.max / 1e6 - LOOP_RESOLUTION_MS);
  }, windowEnd - performance.now());

  let done = 0;
  const finish = () => {
    done++;
    if (done === opts.sessions) report();
  };

  function session(i) {
    const startAt = t0 + (i * opts.ramp * 1000) / opts.sessions;
    const stopAt = startAt + opts.duration * 1000;
    // Frames still to be matched (v1): audio time at each frame's end and its send time.
    const ringEnd = new Float64Array(RING);
    const ringAt = new Float64Array(RING);
    let ringLen = 0;
    let ringHead = 0; // index of the oldest
    let audioMs = 0;
    // AudioCodes: every frame's send time, and each hypothesis' arrival and frames sent then.
    const sentAt = v1 ? null : new Float64Array(maxFrames);
    const hypAt = [];
    const hypFrames = [];
    let framesSent = 0;
    let lastSent = -1;
    let next = 0;
    let streamStart = 0;
    let endSent = false;
    let ended = false; // AudioCodes: its `end` came
    let settled = false;
    let timer = null;
    let ws = null;

    const settle = (ok, why) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stats.active--;
      if (ok) stats.completed++;
      else { stats.failed++; error(why); }
      if (!v1) {
        let k0 = Infinity;
        for (let n = 0; n < hypAt.length; n++) k0 = Math.min(k0, hypFrames[n] - 1 - n);
        for (let n = 0; n < hypAt.length; n++) {
          const k = k0 + n;
          if (inWindow(hypAt[n]) && k >= 0 && k < framesSent) latency.push(hypAt[n] - sentAt[k]);
        }
      }
      if (ws && ws.readyState === WebSocket.OPEN) ws.close(1000);
      else if (ws && ws.readyState === WebSocket.CONNECTING) ws.terminate();
      finish();
    };

    const send = () => {
      const now = performance.now();
      if (now >= stopAt) {
        ws.send(closing);
        endSent = true;
        timer = setTimeout(() => settle(false, v1 ? 'no close after end' : 'no end after stop'), CLOSE_TIMEOUT_MS);
        return;
      }
      const f = next % clip.frames.length;
      next++;
      ws.send(clip.frames[f]);
      const at = performance.now();
      audioMs += clip.frameMsEach[f];
      if (ringLen === RING) { ringHead = (ringHead + 1) % RING; ringLen--; }
      const slot = (ringHead + ringLen) % RING;
      ringEnd[slot] = audioMs;
      ringAt[slot] = at;
      ringLen++;
      if (sentAt && framesSent < maxFrames) sentAt[framesSent] = at;
      framesSent++;
      lastSent = at;
      stats.frames++;
      // Real time from the first frame; late ticks are sent at once (catch up).
      timer = setTimeout(send, Math.max(0, streamStart + next * opts.frameMs - performance.now()));
    };

    const startStreaming = () => {
      if (streamStart) return;
      streamStart = performance.now();
      send();
    };

    /** Send time of the first frame whose audio reaches `ms`. */
    const reaching = (ms) => {
      for (let j = 0; j < ringLen; j++) {
        const slot = (ringHead + j) % RING;
        if (ringEnd[slot] + MATCH_TOLERANCE_MS >= ms) return ringAt[slot];
      }
      return null;
    };

    const onMessage = (data, isBinary) => {
      const at = performance.now();
      if (isBinary) return;
      const type = messageType(data);
      if (type === 'partial' || type === 'hypothesis') {
        stats.partials++;
        if (inWindow(at)) {
          if (lastSent >= 0) latest.push(at - lastSent);
          if (v1) {
            const from = reaching(numberAfter(data, '"timestamp_ms":'));
            if (from !== null && from <= at) latency.push(at - from);
          }
        }
        if (!v1) { hypAt.push(at); hypFrames.push(framesSent); }
      } else if (type === 'final' || type === 'recognition') {
        stats.finals++;
      } else if (type === 'started') {
        startStreaming();
      } else if (type === 'end') {
        // AudioCodes: the answer to `stop`, or the bridge ending the session itself.
        ended = true;
        if (endSent) settle(true);
        else settle(false, `ended by the relay: ${JSON.parse(data.toString()).reason}`);
      } else if (type === 'error') {
        const e = JSON.parse(data.toString());
        error(`error:${e.code}`);
      } else if (type === 'status') {
        const s = JSON.parse(data.toString());
        error(`status:${s.state}`);
      }
    };

    setTimeout(() => {
      stats.started++;
      stats.active++;
      ws = new WebSocket(opts.url, { perMessageDeflate: false, ca: caPem });
      ws.on('open', () => {
        if (tls === null && ws._socket && typeof ws._socket.getProtocol === 'function') {
          tls = { protocol: ws._socket.getProtocol(), cipher: ws._socket.getCipher().name };
        }
        ws.send(opening);
        if (v1) startStreaming();
      });
      ws.on('message', onMessage);
      ws.on('error', (e) => settle(false, `${streamStart ? 'error' : 'connect'}: ${String(e.message).slice(0, 60)}`));
      ws.on('close', (code) => {
        if (v1) settle(endSent && code === 1000, `close ${code}${endSent ? '' : ' before end'}`);
        else settle(ended && endSent, `close ${code} before end`);
      });
    }, startAt - performance.now());
  }

  for (let i = 0; i < opts.sessions; i++) session(i);

  const progress = setInterval(() => {
    const t = ((performance.now() - t0) / 1000).toFixed(0);
    process.stderr.write(
      `  ${t}s active ${stats.active} completed ${stats.completed} failed ${stats.failed} partials ${stats.partials}\n`,
    );
  }, 5000);
  // The last sessions end at ramp + duration; give their closes time, then give up.
  const deadline = setTimeout(() => {
    process.stderr.write('relay-client: sessions still open at the deadline\n');
    report();
  }, t0 - performance.now() + (opts.ramp + opts.duration) * 1000 + CLOSE_TIMEOUT_MS + 5000);

  let reported = false;
  function report() {
    if (reported) return;
    reported = true;
    clearInterval(progress);
    clearTimeout(deadline);
    const out = {
      tags: opts.tags,
      protocol: opts.protocol,
      url: opts.url,
      sessions: opts.sessions,
      duration_s: opts.duration,
      ramp_s: opts.ramp,
      frame_ms: opts.frameMs,
      clip_s: clip.seconds,
      word_timestamps: v1 ? opts.wordTimestamps : null,
      tls,
      stats,
      relay,
      client,
      partial_latency: summary(latency),
      partial_latency_latest_frame: summary(latest),
      latency_method: v1 ? 'timestamp_ms' : 'hypothesis order',
    };
    const text = JSON.stringify(out, null, 2);
    if (opts.out) fs.writeFileSync(opts.out, text + '\n');
    const l = out.partial_latency;
    const r = out.relay;
    process.stderr.write(
      `relay-client: ${stats.completed}/${opts.sessions} completed, ${stats.failed} failed` +
        (Object.keys(stats.errors).length ? ` ${JSON.stringify(stats.errors)}` : '') +
        `; partial p50 ${l.p50_ms} ms p99 ${l.p99_ms} ms (${l.count})` +
        (r.cores !== undefined ? `; relay ${r.cores.toFixed(3)} cores, RSS ${(r.rss_full_kib / 1024).toFixed(1)} MiB` : '') +
        `; client ${client.cores !== undefined ? client.cores.toFixed(2) : '?'} cores\n`,
    );
    process.exit(0);
  }
}

try {
  main();
} catch (e) {
  process.stderr.write(`relay-client: ${e.message}\n`);
  process.exit(2);
}
