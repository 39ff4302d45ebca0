// The live-captions page: a v1 client (README, "The client contract (v1)") in the browser.
// Audio: the microphone through an AudioWorklet (worklet.js: mono, 16 kHz, PCM16, 100 ms
// frames), or a dropped WAV file decoded and resampled here and sent at real time.
// Results: the partial in place, finals appended with their words shaded by confidence
// and their latency; `status` messages and errors in plain words; reconnection with
// backoff while the microphone runs.

import { Resampler, TARGET_RATE, floatToPcm16 } from './resample.js';
import { decodeWav } from './wav.js';

const FRAME_SAMPLES = TARGET_RATE / 10; // 100 ms
const FRAME_MS = 100;
const QUEUE_FRAMES = 50; // audio kept while (re)connecting: 5 s
const MAX_ATTEMPTS = 10; // connection attempts in a row that bring no result before giving up (~1 min)
const END_WAIT_MS = 15000; // after `end`, how long to wait for the gateway's close

const $ = (id) => document.getElementById(id);
const ui = {
  state: $('state'),
  start: $('start'),
  stop: $('stop'),
  clear: $('clear'),
  routeSelect: $('route-select'),
  routeText: $('route-text'),
  routeNote: $('route-note'),
  token: $('token'),
  file: $('file'),
  drop: $('drop'),
  level: $('level'),
  notice: $('notice'),
  events: $('events'),
  transcript: $('transcript'),
  finals: $('finals'),
  partial: $('partial'),
  latency: $('latency'),
};

// What the user sees in plain words.
const ERRORS = {
  AUDIO_FORMAT_ERROR: 'The gateway could not use some of the audio (wrong format or frame size).',
  BUFFER_OVERFLOW: 'Audio arrived faster than the speech back end could take it: some audio was skipped and not transcribed.',
  INVALID_REQUEST: 'The gateway did not understand a message from this page.',
  MODEL_UNAVAILABLE: 'No speech back end can take this session right now (unknown route, or every back end of the route is down).',
  RATE_LIMIT_EXCEEDED: 'The gateway is busy (at a session limit).',
  AUTHENTICATION_FAILED: 'The gateway did not accept the token.',
  SESSION_TIMEOUT: 'The session ended: nothing was sent for too long, or it reached its longest allowed length.',
  MESSAGE_TOO_LARGE: 'A message from this page was too large for the gateway.',
  PROTOCOL_ERROR: 'The connection broke the WebSocket protocol.',
  INTERNAL_ERROR: 'The gateway hit an internal fault.',
};
const CLOSES = {
  1000: 'The session finished.',
  1001: 'The gateway is shutting down or restarting.',
  1002: 'The connection broke the WebSocket protocol.',
  1005: 'The connection closed without a reason.',
  1006: 'The connection was lost.',
  1008: 'The gateway ended the session (a time limit).',
  1009: 'A message was too large for the gateway.',
  1011: 'The gateway hit an internal fault.',
  1012: 'The gateway is restarting.',
  1013: 'No speech back end is available right now.',
};
// Closes after which the microphone session reconnects by itself.
const RETRY_CLOSES = new Set([1001, 1005, 1006, 1008, 1011, 1012, 1013, 1014]);
const STATUS = {
  failover: 'Moved to another speech back end (failover); nothing already transcribed is repeated or lost.',
  audio_gap: 'Some audio could not be replayed after the speech back end was reconnected.',
  backend_lagging: 'The speech back end is falling behind: results will come late, no audio is lost.',
  backend_caught_up: 'The speech back end has caught up.',
  interim_paused: 'The speech back end is busy: partial results pause so that final results come first.',
  interim_resumed: 'Partial results resume.',
};

let run = null; // the current microphone or file session, across reconnections
const latencies = [];
let partials = 0;
let finals = 0;

function setState(kind, text) {
  ui.state.dataset.state = kind;
  ui.state.textContent = text;
}

function notice(text, level = 'error') {
  ui.notice.textContent = text;
  ui.notice.className = `notice ${level}`;
  ui.notice.hidden = !text;
}

function gatewaySaid(text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} · ${text}`;
  ui.events.prepend(li);
  while (ui.events.children.length > 5) ui.events.lastChild.remove();
}

function buttons() {
  const busy = run !== null;
  ui.start.disabled = busy;
  ui.stop.disabled = !busy || run.stopping;
  ui.file.disabled = busy;
  ui.routeSelect.disabled = busy;
  ui.routeText.disabled = busy;
  ui.token.disabled = busy;
}

// ---- routes: from /status when the main listener serves it, else a text field ----

async function loadRoutes() {
  let why = '';
  try {
    const r = await fetch('/status', { cache: 'no-store', headers: { accept: 'application/json' } });
    if (r.ok) {
      const status = await r.json();
      const routes = Array.isArray(status.routes) ? status.routes : [];
      if (routes.length > 0) {
        ui.routeSelect.replaceChildren();
        routes.sort((a, b) => (a.name === 'default' ? -1 : b.name === 'default' ? 1 : a.name.localeCompare(b.name)));
        for (const route of routes) {
          const o = document.createElement('option');
          o.value = route.name;
          o.textContent = `${route.name}${route.ready ? '' : ' (no healthy back end)'}`;
          ui.routeSelect.append(o);
        }
        ui.routeSelect.hidden = false;
        ui.routeText.hidden = true;
        ui.routeNote.hidden = true;
        return;
      }
      why = 'The gateway listed no routes.';
    } else if (r.status === 404) {
      why = 'The route list is on the gateway\u2019s admin listener, not here.';
    } else {
      why = `The route list could not be read (HTTP ${r.status}).`;
    }
  } catch (e) {
    why = 'The route list could not be read.';
  }
  ui.routeSelect.hidden = true;
  ui.routeText.hidden = false;
  ui.routeNote.hidden = false;
  ui.routeNote.textContent = `${why} Type a route name, or leave it empty for \u201cdefault\u201d.`;
}

function chosenRoute() {
  const value = ui.routeSelect.hidden ? ui.routeText.value : ui.routeSelect.value;
  return value.trim();
}

// ---- the WebSocket: one connection of a run ----

function streamUrl(token) {
  const url = new URL('/v1/audio/stream', window.location.href);
  url.protocol = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (token) url.searchParams.set('token', token);
  return url.toString();
}

function connect() {
  const r = run;
  const conn = { ws: null, opened: false, results: 0, audioMs: 0, frames: [], endAt: null, busy: false };
  r.conn = conn;
  r.attempts += 1;
  if (r.attempts === 1) setState('connecting', 'Connecting\u2026');
  const ws = new WebSocket(streamUrl(r.token));
  ws.binaryType = 'arraybuffer';
  conn.ws = ws;
  ws.onopen = () => {
    if (run !== r) return ws.close(1000);
    conn.opened = true;
    const config = { interim_results: true, punctuate: true, word_timestamps: true };
    if (r.route) config.model = r.route;
    ws.send(JSON.stringify({ type: 'start', config }));
    setState('live', r.source === 'mic' ? 'Live \u2014 listening.' : `Live \u2014 streaming ${r.name}.`);
    if (r.reconnects > 0) {
      const lost = r.dropped > 0 ? `; ${(r.dropped / 10).toFixed(1)} s of audio from the gap could not be kept` : '';
      mark(`reconnected (${r.reconnects})${lost}`);
      r.dropped = 0;
      notice('');
    }
    const queued = r.queue.splice(0);
    for (const pcm of queued) sendFrame(conn, pcm);
    if (r.source === 'file') paceFile(r, conn);
    if (r.stopping) sendEnd(conn);
  };
  ws.onmessage = (ev) => {
    if (run !== r || typeof ev.data !== 'string') return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    onMessage(r, conn, msg);
  };
  ws.onclose = (ev) => {
    if (run !== r || r.conn !== conn) return;
    onClose(r, conn, ev);
  };
}

function sendFrame(conn, pcm) {
  if (conn.ws.readyState !== WebSocket.OPEN || conn.endAt !== null) return;
  conn.ws.send(pcm);
  conn.audioMs += (pcm.length * 1000) / TARGET_RATE;
  conn.frames.push({ endMs: conn.audioMs, at: performance.now() });
}

function sendEnd(conn) {
  if (conn.ws.readyState !== WebSocket.OPEN || conn.endAt !== null) return;
  conn.ws.send(JSON.stringify({ type: 'end' }));
  conn.endAt = performance.now();
  setState('finishing', 'Finishing \u2014 waiting for the last words\u2026');
  const r = run;
  setTimeout(() => {
    if (run === r && r.conn === conn && conn.ws.readyState !== WebSocket.CLOSED) {
      notice('The gateway did not finish the session in time; closed it.', 'warn');
      conn.ws.close(1000);
      finish('Stopped.');
    }
  }, END_WAIT_MS);
}

// Audio from the microphone or the file: sent at once when the session is open, else kept
// (the last 5 s) for when it opens.
function audio(pcm) {
  const r = run;
  if (!r) return;
  const conn = r.conn;
  if (conn && conn.opened && conn.ws.readyState === WebSocket.OPEN && !conn.busy) {
    sendFrame(conn, pcm); // the microphone's last frame may come after Stop, before `end`
  } else if (!r.stopping) {
    r.queue.push(pcm);
    if (r.queue.length > QUEUE_FRAMES) {
      r.queue.shift();
      r.dropped += 1;
    }
  }
}

function onMessage(r, conn, msg) {
  switch (msg.type) {
    case 'partial':
      conn.results += 1;
      partials += 1;
      ui.transcript.dataset.partials = String(partials);
      ui.partial.textContent = msg.text || '';
      break;
    case 'final':
      conn.results += 1;
      addFinal(conn, msg);
      break;
    case 'status':
      gatewaySaid(STATUS[msg.state] ? `${STATUS[msg.state]}${msg.state === 'audio_gap' && msg.message ? ` (${msg.message})` : ''}` : `${msg.state}: ${msg.message || ''}`);
      document.body.dataset.gatewayStatus = msg.state;
      break;
    case 'error': {
      const plain = ERRORS[msg.code] || 'The gateway reported an error.';
      notice(`${plain}${msg.message ? ` (${msg.message})` : ''}`, msg.recoverable ? 'warn' : 'error');
      r.lastError = msg.code;
      if (msg.code === 'RATE_LIMIT_EXCEEDED' && !conn.busy && conn.results === 0) {
        // the start was refused: this connection carries nothing
        conn.busy = true;
        if (r.source === 'mic') {
          notice(`${plain} Trying again shortly.${msg.message ? ` (${msg.message})` : ''}`, 'warn');
          conn.ws.close(1000, 'busy'); // and reconnect (onClose)
        } else {
          finish(`Stopped \u2014 ${r.name} was not streamed.`, 'error');
        }
      }
      break;
    }
    default:
      break; // pong, and types a later gateway may add
  }
}

function confidenceClass(c) {
  if (typeof c !== 'number' || Number.isNaN(c)) return 'c4';
  return `c${Math.max(0, Math.min(4, Math.floor(c * 5 - 0.5)))}`;
}

function addFinal(conn, msg) {
  const text = (msg.text || '').trim();
  const arrived = performance.now();
  // The latency: from the send time of the frame holding the end of the utterance's last
  // word (or of `end`, whichever came first) to now.
  const words = Array.isArray(msg.words) ? msg.words : [];
  const endMs = words.length > 0 ? words[words.length - 1].end * 1000 : msg.timestamp_ms;
  let sentAt = conn.endAt ?? Infinity;
  if (typeof endMs === 'number') {
    const i = conn.frames.findIndex((f) => f.endMs >= endMs - 0.5);
    if (i >= 0) {
      sentAt = Math.min(sentAt, conn.frames[i].at);
      conn.frames.splice(0, i);
    }
  }
  ui.partial.textContent = '';
  if (!text) return;
  const p = document.createElement('p');
  p.className = 'final';
  const tokens = text.split(/\s+/);
  if (words.length === tokens.length) {
    tokens.forEach((t, i) => {
      const span = document.createElement('span');
      span.className = `w ${confidenceClass(words[i].confidence)}`;
      span.title = `confidence ${Number(words[i].confidence).toFixed(2)}`;
      span.textContent = t;
      p.append(span, ' ');
    });
  } else {
    const span = document.createElement('span');
    span.className = `w ${confidenceClass(msg.confidence)}`;
    span.title = `confidence ${Number(msg.confidence).toFixed(2)}`;
    span.textContent = text;
    p.append(span, ' ');
  }
  const lat = document.createElement('span');
  lat.className = 'latency';
  if (Number.isFinite(sentAt)) {
    const ms = Math.max(0, Math.round(arrived - sentAt));
    latencies.push(ms);
    lat.textContent = `${ms} ms`;
    lat.dataset.ms = String(ms);
    lat.title = 'from the end of this utterance\u2019s audio leaving the page to its final arriving';
    const sorted = [...latencies].sort((a, b) => a - b);
    const median = sorted[Math.floor((sorted.length - 1) / 2)];
    ui.latency.textContent = `Latency to final: last ${ms} ms, median ${median} ms over ${latencies.length}.`;
  } else {
    lat.textContent = '\u2014';
    lat.title = 'latency not measurable for this utterance';
  }
  p.append(lat);
  ui.finals.append(p);
  finals += 1;
  ui.transcript.dataset.finals = String(finals);
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function mark(text) {
  const m = document.createElement('p');
  m.className = 'mark';
  m.textContent = `${new Date().toLocaleTimeString()} \u00b7 ${text}`;
  ui.finals.append(m);
}

async function onClose(r, conn, ev) {
  const code = ev.code;
  if (r.stopping && code === 1000) {
    finish(r.source === 'file' ? `Done \u2014 ${r.name} transcribed.` : 'Stopped.');
    return;
  }
  let why = CLOSES[code] || `The connection closed (code ${code}).`;
  if (!conn.opened) {
    // Refused before the upgrade (401, 403, 429, 503) or unreachable: the browser does not
    // say which, so ask /health whether the gateway is there at all.
    let reachable = false;
    try {
      reachable = (await fetch('/health', { cache: 'no-store' })).ok;
    } catch {
      reachable = false;
    }
    if (run !== r) return;
    why = reachable
      ? 'The gateway refused the connection: the token is missing or not accepted, this page\u2019s origin is not allowed, or the gateway is at a connection or session limit.'
      : 'The gateway cannot be reached.';
  }
  const retry = r.source === 'mic' && !r.stopping && (conn.busy || RETRY_CLOSES.has(code));
  if (!retry) {
    notice(why);
    finish(r.source === 'file' ? 'Stopped \u2014 the file was not finished.' : 'Disconnected.', 'error');
    return;
  }
  // a connection that brought results starts the count again; one that did not (refused,
  // unknown route, no back end) counts towards giving up
  if (conn.results > 0) r.attempts = 0;
  if (r.attempts >= MAX_ATTEMPTS) {
    notice(`${why} Gave up after ${r.attempts} attempts in a row.`);
    finish('Disconnected.', 'error');
    return;
  }
  const delay = Math.min(10000, 500 * 2 ** Math.min(r.attempts, 5));
  r.reconnects += 1;
  notice(why, 'warn');
  const until = performance.now() + delay;
  const tick = () => {
    if (run !== r || r.stopping) return;
    const left = Math.ceil((until - performance.now()) / 1000);
    if (left <= 0) {
      setState('reconnecting', 'Reconnecting now\u2026');
      connect();
      return;
    }
    setState('reconnecting', `Reconnecting in ${left} s (attempt ${r.attempts + 1}); the last 5 s of audio are kept.`);
    r.timer = setTimeout(tick, Math.min(1000, until - performance.now()));
  };
  tick();
}

// Ends the run: microphone off, socket closed, buttons back.
function finish(text, kind = 'stopped') {
  const r = run;
  if (!r) return;
  run = null;
  clearTimeout(r.timer);
  clearTimeout(r.pacer);
  if (r.conn && r.conn.ws.readyState === WebSocket.OPEN) r.conn.ws.close(1000);
  stopMicrophone(r);
  ui.level.value = 0;
  setState(kind, text);
  buttons();
}

// ---- the microphone ----

async function startMicrophone() {
  if (run) return;
  notice('');
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    notice('The microphone needs a secure page: open the gateway over https:// (tls.cert and tls.key), or on localhost / 127.0.0.1. Dropping a WAV file works here.');
    return;
  }
  if (typeof AudioWorkletNode === 'undefined') {
    notice('This browser has no AudioWorklet, which the page needs to capture the microphone. Dropping a WAV file works here.');
    return;
  }
  const r = newRun('mic', 'the microphone');
  buttons();
  setState('connecting', 'Starting the microphone\u2026');
  try {
    r.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
    });
    r.ctx = new AudioContext();
    await r.ctx.audioWorklet.addModule('/worklet.js');
    const source = r.ctx.createMediaStreamSource(r.stream);
    r.node = new AudioWorkletNode(r.ctx, 'pcm16-frames', {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: 'explicit',
      processorOptions: { frameSamples: FRAME_SAMPLES },
    });
    r.node.port.onmessage = (e) => {
      if (e.data.pcm) {
        ui.level.value = Math.min(1, e.data.level * 4);
        audio(e.data.pcm);
      } else if (e.data.done && run === r && r.conn) {
        sendEnd(r.conn);
      }
    };
    // The worklet's output is silent; connecting it keeps the graph pulling it.
    const mute = r.ctx.createGain();
    mute.gain.value = 0;
    source.connect(r.node).connect(mute).connect(r.ctx.destination);
    await r.ctx.resume();
  } catch (e) {
    const name = e && e.name;
    const text = name === 'NotAllowedError'
      ? 'The browser was not allowed to use the microphone: allow it for this page and press Start again.'
      : name === 'NotFoundError'
        ? 'No microphone was found.'
        : `The microphone could not be started (${(e && e.message) || e}).`;
    notice(text);
    finish('Not connected.', 'error');
    return;
  }
  if (run !== r) return;
  mark('microphone');
  connect();
}

function stopMicrophone(r) {
  if (r.stream) r.stream.getTracks().forEach((t) => t.stop());
  if (r.ctx && r.ctx.state !== 'closed') r.ctx.close().catch(() => {});
  r.stream = null;
  r.ctx = null;
}

function newRun(source, name) {
  run = {
    source,
    name,
    route: chosenRoute(),
    token: ui.token.value.trim(),
    conn: null,
    attempts: 0,
    reconnects: 0,
    queue: [],
    dropped: 0,
    stopping: false,
    lastError: null,
    timer: null,
    pacer: null,
  };
  return run;
}

function stop() {
  const r = run;
  if (!r || r.stopping) return;
  r.stopping = true;
  buttons();
  clearTimeout(r.timer);
  clearTimeout(r.pacer);
  const open = r.conn && r.conn.opened && r.conn.ws.readyState === WebSocket.OPEN;
  if (!open) {
    finish('Stopped.');
    return;
  }
  if (r.source === 'mic' && r.node) {
    // the worklet posts its last partial frame, then "done", which sends `end`
    setState('finishing', 'Finishing \u2014 waiting for the last words\u2026');
    r.node.port.postMessage('stop');
    r.stream.getTracks().forEach((t) => t.stop());
    // should the worklet not answer (a suspended audio context), end anyway
    setTimeout(() => {
      if (run === r && r.conn) sendEnd(r.conn);
    }, 1000);
  } else {
    sendEnd(r.conn);
  }
}

// ---- a WAV file, streamed at real time ----

async function streamFile(file) {
  if (run) {
    notice('Stop the current session before streaming a file.', 'warn');
    return;
  }
  notice('');
  let samples;
  try {
    const wav = decodeWav(await file.arrayBuffer());
    const resampler = new Resampler(wav.rate, TARGET_RATE);
    const head = resampler.push(wav.samples);
    const tail = resampler.flush();
    const all = new Float32Array(head.length + tail.length);
    all.set(head);
    all.set(tail, head.length);
    samples = floatToPcm16(all);
  } catch (e) {
    notice(`${file.name}: ${e.message || e}`);
    return;
  }
  if (samples.length === 0) {
    notice(`${file.name} holds no audio.`, 'warn');
    return;
  }
  const r = newRun('file', file.name);
  r.pcm = samples;
  r.next = 0;
  buttons();
  mark(file.name);
  connect();
}

// Frame k leaves at t0 + k * 100 ms (absolute times, so timer jitter does not add up).
function paceFile(r, conn) {
  const t0 = performance.now();
  const total = r.pcm.length;
  const seconds = (total / TARGET_RATE).toFixed(1);
  const step = () => {
    if (run !== r || r.conn !== conn || r.stopping) return;
    const due = Math.floor((performance.now() - t0) / FRAME_MS) + 1;
    while (r.next < total && r.next / FRAME_SAMPLES < due) {
      sendFrame(conn, r.pcm.slice(r.next, r.next + FRAME_SAMPLES));
      r.next += FRAME_SAMPLES;
    }
    setState('live', `Live \u2014 streaming ${r.name}: ${(Math.min(r.next, total) / TARGET_RATE).toFixed(1)} s of ${seconds} s.`);
    if (r.next >= total) {
      r.stopping = true;
      buttons();
      sendEnd(conn);
      return;
    }
    r.pacer = setTimeout(step, Math.max(0, t0 + (r.next / FRAME_SAMPLES) * FRAME_MS - performance.now()));
  };
  step();
}

// ---- wiring ----

// the controls are a form for the password manager's sake; nothing is submitted
$('controls').addEventListener('submit', (e) => e.preventDefault());
ui.start.addEventListener('click', startMicrophone);
ui.stop.addEventListener('click', stop);
ui.clear.addEventListener('click', () => {
  ui.finals.replaceChildren();
  ui.partial.textContent = '';
  ui.events.replaceChildren();
  ui.latency.textContent = '';
  latencies.length = 0;
  notice('');
});
ui.file.addEventListener('change', () => {
  const f = ui.file.files && ui.file.files[0];
  ui.file.value = '';
  if (f) streamFile(f);
});
for (const type of ['dragenter', 'dragover']) {
  ui.drop.addEventListener(type, (e) => {
    e.preventDefault();
    ui.drop.classList.add('over');
  });
}
for (const type of ['dragleave', 'drop']) {
  ui.drop.addEventListener(type, () => ui.drop.classList.remove('over'));
}
ui.drop.addEventListener('drop', (e) => {
  e.preventDefault();
  const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
  if (f) streamFile(f);
});
// a file dropped anywhere else must not replace the page
window.addEventListener('dragover', (e) => e.preventDefault());
window.addEventListener('drop', (e) => e.preventDefault());

buttons();
loadRoutes().finally(() => {
  document.documentElement.dataset.app = 'ready'; // for tests: the page is wired up
});
