#!/usr/bin/env node
// The table of scripts/bench-relays.sh from the client's JSON outputs (one per run):
//   node report.js RUN.json...
// Rows keep the order of their first run; with several runs per row every figure is the
// range over the runs (min–max), and the per-run table below gives each value.
'use strict';

const fs = require('fs');

const runs = process.argv.slice(2).map((f) => JSON.parse(fs.readFileSync(f, 'utf8')));
if (runs.length === 0) {
  process.stderr.write('usage: node report.js RUN.json...\n');
  process.exit(2);
}

const rows = new Map();
for (const r of runs) {
  const key = r.tags.row || `${r.tags.relay}|${r.tags.workload}`;
  if (!rows.has(key)) rows.set(key, []);
  rows.get(key).push(r);
}

const fixed = (d) => (x) => (x === null || x === undefined || Number.isNaN(x) ? '?' : x.toFixed(d));
const range = (values, fmt) => {
  const ok = values.filter((v) => v !== null && v !== undefined && !Number.isNaN(v));
  if (ok.length === 0) return '?';
  const lo = Math.min(...ok);
  const hi = Math.max(...ok);
  return fmt(lo) === fmt(hi) ? fmt(lo) : `${fmt(lo)}–${fmt(hi)}`;
};
const mib = (kib) => (kib === null || kib === undefined ? null : kib / 1024);
const sessionsOf = (list) => [...new Set(list.map((r) => r.sessions))].join('/');

const out = [];
const n = sessionsOf(runs);
out.push(
  `| relay | utterances | runs | cores per 1,000 sessions | RSS at ${n} sessions | RSS per session | client-seen partial latency p50 / p99 | sessions failed |`,
);
out.push('|---|---|---:|---:|---:|---:|---|---:|');
for (const list of rows.values()) {
  const t = list[0].tags;
  const cores = range(list.map((r) => r.relay.cores_per_1000_sessions), fixed(2));
  const rss = range(list.map((r) => mib(r.relay.rss_full_kib)), fixed(0));
  const per = range(list.map((r) => r.relay.rss_per_session_kib), fixed(0));
  const p50 = range(list.map((r) => r.partial_latency.p50_ms), fixed(1));
  const p99 = range(list.map((r) => r.partial_latency.p99_ms), fixed(1));
  const failed = list.map((r) => r.stats.failed).join(', ');
  out.push(`| ${t.relay} | ${t.workload} | ${list.length} | ${cores} | ${rss} MiB | ${per} KiB | ${p50} / ${p99} ms | ${failed} |`);
}

out.push('');
out.push('Each run (load average before it from /proc/loadavg; CPU and RSS of the relay process over the steady');
out.push('window; latency of the partials that arrived in it; "latest frame" is the cross-check measured from the');
out.push('most recent frame sent; client = the load client\'s own CPU and event-loop delay p99 in the window):');
out.push('');
out.push('| relay | utterances | run | load avg before | window | cores / 1,000 | RSS idle → at N | per session | partial p50 / p99 | latest frame p50 / p99 | partials in window | completed / failed | client cores, loop p99 |');
out.push('|---|---|---:|---|---:|---:|---|---:|---|---|---:|---|---|');
for (const list of rows.values()) {
  for (const r of list) {
    const t = r.tags;
    const rel = r.relay;
    const l = r.partial_latency;
    const x = r.partial_latency_latest_frame;
    const errors = Object.entries(r.stats.errors).map(([k, v]) => `${k} ×${v}`).join('; ');
    out.push(
      `| ${t.relay} | ${t.workload} | ${t.run || '?'} | ${t.loadavg || '?'} | ${fixed(1)(rel.window_s)} s | ` +
        `${fixed(3)(rel.cores_per_1000_sessions)} | ${fixed(1)(mib(rel.rss_idle_kib))} → ${fixed(1)(mib(rel.rss_full_kib))} MiB | ` +
        `${fixed(1)(rel.rss_per_session_kib)} KiB | ${fixed(2)(l.p50_ms)} / ${fixed(2)(l.p99_ms)} ms | ` +
        `${fixed(2)(x.p50_ms)} / ${fixed(2)(x.p99_ms)} ms | ${l.count} | ${r.stats.completed} / ${r.stats.failed}` +
        `${errors ? ` (${errors})` : ''} | ${fixed(2)(r.client.cores)}, ${fixed(1)(r.client.loop_delay_p99_ms)} ms |`,
    );
  }
}
process.stdout.write(out.join('\n') + '\n');
