#!/usr/bin/env python3
"""Concurrent real-time streams against asr_stream: how many does this machine sustain?

    .venv/triton/bin/python tests/triton/load.py --streams 4 --seconds 60

Each stream sends the same kind of speech (sentences with pauses) in 100 ms chunks at
real time, starts staggered over one second. Reported per run:
- response lag: arrival of a partial/final minus the send time of the chunk whose request
  produced it (queueing + decode);
- final latency: arrival of a final minus the send time of the chunk holding the end of
  its last word (endpoint wait + queueing + decode);
- server CPU time (tritonserver + stubs, read from /proc) per second of audio.
A stream count is sustained when the lag stays bounded (p95 well under the partial
cadence of 1 s) rather than growing with the stream's length. Numbers are a benchmark,
never an assertion. Bounded: the run stops by itself after --seconds of audio per stream.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import smoke  # noqa: E402


def server_cpu_seconds() -> float:
    """utime+stime of tritonserver and its Python-backend stubs (same machine only)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            if b"tritonserver" not in cmd and b"triton_python_backend_stub" not in cmd:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="127.0.0.1:8001")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0, help="audio per stream (<= 600)")
    args = ap.parse_args()
    seconds = min(args.seconds, 600.0)

    work = Path(tempfile.mkdtemp(prefix="sgw-triton-load-"))
    parts = []
    for i, sentence in enumerate(smoke.SENTENCES):
        parts += [smoke.read_wav(smoke.synth(sentence, work / f"s{i:02d}.wav")), smoke.silence(1.2)]
    one = np.concatenate(parts)
    reps = int(np.ceil(seconds * smoke.SR / one.size))
    clip = np.tile(one, reps)[: int(seconds * smoke.SR)]

    results: list = [None] * args.streams

    def worker(k: int) -> None:
        time.sleep(k / max(1, args.streams))
        results[k] = smoke.stream(args.url, clip, speed=1.0, timeout_s=120.0)

    before = server_cpu_seconds()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.streams)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    busy = server_cpu_seconds() - before

    lags, final_lat, late_lags, errors, finals, partials = [], [], [], 0, 0, 0
    for res in results:
        errors += len(res.errors) + (res.requests - res.completed)
        for e in res.events:
            lag = e.at - res.send_times[e.request]
            lags.append(lag)
            if e.at > seconds * 0.75:
                late_lags.append(lag)
            if e.is_final:
                finals += 1
                if e.words:
                    chunk = min(len(res.send_times) - 1, int(e.words[-1]["end"] / smoke.CHUNK_S))
                    final_lat.append(e.at - res.send_times[chunk])
            else:
                partials += 1
    audio = seconds * args.streams
    print(f"streams {args.streams}, {seconds:.0f} s audio each, wall {wall:.1f} s")
    print(f"  responses: {partials} partials, {finals} finals, errors/incomplete {errors}")
    print(f"  response lag  p50 {pct(lags, 50):.2f}  p95 {pct(lags, 95):.2f}  p99 {pct(lags, 99):.2f}  max {max(lags, default=float('nan')):.2f} s (n={len(lags)})")
    print(f"  lag, last quarter  p50 {pct(late_lags, 50):.2f}  p95 {pct(late_lags, 95):.2f} s (n={len(late_lags)})")
    print(f"  final latency p50 {pct(final_lat, 50):.2f}  p95 {pct(final_lat, 95):.2f}  p99 {pct(final_lat, 99):.2f} s (n={len(final_lat)})")
    print(f"  server CPU / audio = {busy / audio:.3f} per stream; server used {busy / wall:.2f} of {os.cpu_count()} cores")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
