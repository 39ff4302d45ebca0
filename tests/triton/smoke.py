#!/usr/bin/env python3
"""Smoke tests of the local Triton model repository (riva/triton/models) over KServe gRPC.

Run against a running server with the back end's venv:
    bash scripts/local-triton.sh smoke            # starts the server if needed
    .venv/triton/bin/python tests/triton/smoke.py --url 127.0.0.1:8001

Test speech is synthesised with espeak-ng (en-us, 150 wpm) and converted with sox.
Checks (exit 1 on any failure):
  a. real-time stream of one clip in 100 ms chunks: partials arrive before the final and
     the finals' WER <= 0.3; every request is completed by an empty final response;
  b. a 60+ s clip of sentences with pauses streamed at 4x real time: several finals,
     append-only word times, every request completed;
  c. faint white noise: no final text from either model;
  d. the offline model on one clip: WER <= 0.3;
  e. an 8 kHz clip resampled to 16 kHz by sox: WER <= 0.3 on both models;
  f. a sequence closed by an empty END request right after speech: that request
     carries the final.
Timings (first-partial and final latency, real-time factor from Triton's statistics) are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import queue
import re
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

SR = 16_000
CHUNK_S = 0.1
STREAM_MODEL = "asr_stream"
OFFLINE_MODEL = "asr_offline"
MAX_WER = 0.3

SHORT_TEXT = "The meeting has been moved to the large conference room on the second floor."
SENTENCES = [
    "The weather today is sunny with a light breeze from the west.",
    "Please send the quarterly report to the finance team by Friday.",
    "We will meet at the train station at half past seven.",
    "My favorite color is blue and I like to read books in the evening.",
    "Can you tell me how to get to the nearest hospital?",
    "She bought three apples, two oranges and a loaf of bread.",
    "Our new product will be available in stores next month.",
    "The children played in the park until the sun went down.",
    "He forgot his umbrella at the office and walked home in the rain.",
    "The library closes at nine o'clock on weekdays.",
    "I would like a cup of coffee with milk and no sugar.",
    "The flight to Chicago was delayed by two hours because of fog.",
    "Remember to water the plants while I am away.",
    "The museum has a new exhibition about ancient Egypt.",
]
EIGHT_K_TEXT = "Can you tell me how to get to the nearest hospital?"

_seq_ids = itertools.count(int(time.time()) % 1_000_000 * 1000 + 1)


# ---------------------------------------------------------------- text scoring


def normalize(text: str) -> list[str]:
    text = text.lower().replace("o'clock", "oclock")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize(reference), normalize(hypothesis)
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, row[0] = row[:], i
        for j in range(1, len(hyp) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ref[i - 1] != hyp[j - 1]))
    return row[len(hyp)] / max(1, len(ref))


# ---------------------------------------------------------------- audio


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def synth(text: str, out: Path, rate: int = SR) -> Path:
    raw = out.with_suffix(".raw.wav")
    run("espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text)
    run("sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out))
    return out


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == SR and w.getnchannels() == 1 and w.getsampwidth() == 2, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.int16)


def speech_bounds(audio: np.ndarray) -> tuple[float, float]:
    """First and last 10 ms frame above -40 dBFS, in seconds."""
    frames = audio[: audio.size // 160 * 160].astype(np.float32).reshape(-1, 160) / 32768.0
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 0.01)
    if loud.size == 0:
        return 0.0, 0.0
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


# ---------------------------------------------------------------- streaming client


@dataclass
class Event:
    at: float  # seconds since the first chunk was sent
    request: int
    is_final: bool
    text: str
    words: list
    confidence: float


@dataclass
class StreamResult:
    events: list[Event] = field(default_factory=list)
    send_times: list[float] = field(default_factory=list)
    completed: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0

    @property
    def finals(self) -> list[Event]:
        return [e for e in self.events if e.is_final]

    @property
    def partials(self) -> list[Event]:
        return [e for e in self.events if not e.is_final]

    def final_text(self) -> str:
        return " ".join(e.text for e in self.finals)


def stream(
    url: str, audio: np.ndarray, speed: float = 1.0, timeout_s: float = 300.0, empty_end: bool = False
) -> StreamResult:
    """Send `audio` as one sequence in 100 ms chunks paced at `speed` x real time.

    `empty_end` closes the sequence with an extra request holding no samples (what a
    client does when its user says "end" between chunks)."""
    client = grpcclient.InferenceServerClient(url)
    inbox: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: inbox.put((time.monotonic(), result, error)))
    step = int(CHUNK_S * SR)
    chunks = [audio[i : i + step] for i in range(0, audio.size, step)]
    if empty_end:
        chunks.append(audio[:0])
    seq = next(_seq_ids)
    res = StreamResult(requests=len(chunks))
    t0 = time.monotonic()
    try:
        for i, chunk in enumerate(chunks):
            inp = grpcclient.InferInput("AUDIO", [1, chunk.size], "INT16")
            inp.set_data_from_numpy(chunk.reshape(1, -1))
            res.send_times.append(time.monotonic() - t0)
            client.async_stream_infer(
                STREAM_MODEL,
                [inp],
                request_id=str(i),
                sequence_id=seq,
                sequence_start=i == 0,
                sequence_end=i == len(chunks) - 1,
                enable_empty_final_response=True,
            )
            delay = t0 + (i + 1) * CHUNK_S / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        deadline = time.monotonic() + timeout_s
        while res.completed < res.requests:
            try:
                at, result, error = inbox.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                res.errors.append(f"timed out: {res.completed}/{res.requests} requests completed")
                break
            if error is not None:
                res.errors.append(str(error))
                continue
            resp = result.get_response()
            if resp.outputs:
                text = result.as_numpy("TRANSCRIPT").reshape(-1)[0].decode()
                res.events.append(
                    Event(
                        at=at - t0,
                        request=int(resp.id),
                        is_final=bool(result.as_numpy("IS_FINAL").reshape(-1)[0]),
                        text=text,
                        words=json.loads(result.as_numpy("WORDS").reshape(-1)[0].decode()),
                        confidence=float(result.as_numpy("CONFIDENCE").reshape(-1)[0]),
                    )
                )
            if resp.parameters["triton_final_response"].bool_param:
                res.completed += 1
    finally:
        res.wall = time.monotonic() - t0
        client.stop_stream()
        client.close()
    return res


def offline(url: str, audio: np.ndarray) -> tuple[str, bool, list, float, float]:
    client = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput("AUDIO", [audio.size], "INT16")
    inp.set_data_from_numpy(audio)
    t = time.monotonic()
    result = client.infer(OFFLINE_MODEL, [inp])
    took = time.monotonic() - t
    client.close()
    return (
        result.as_numpy("TRANSCRIPT").reshape(-1)[0].decode(),
        bool(result.as_numpy("IS_FINAL").reshape(-1)[0]),
        json.loads(result.as_numpy("WORDS").reshape(-1)[0].decode()),
        float(result.as_numpy("CONFIDENCE").reshape(-1)[0]),
        took,
    )


def compute_seconds(url: str, model: str) -> float:
    client = grpcclient.InferenceServerClient(url)
    stats = client.get_inference_statistics(model_name=model, as_json=True)
    client.close()
    total = 0
    for m in stats.get("model_stats", []):
        total += int(m.get("inference_stats", {}).get("compute_infer", {}).get("ns", 0))
    return total / 1e9


# ---------------------------------------------------------------- checks


class Checks:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.rows: list[tuple] = []

    def expect(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            self.failures.append(what)


def check_words(checks: Checks, label: str, events: list[Event], duration: float) -> None:
    bad = []
    for e in events:
        for w in e.words:
            if set(w) != {"word", "start", "end", "confidence"}:
                bad.append(f"keys {sorted(w)}")
            elif not (0 <= w["start"] <= w["end"] <= duration + 0.5):
                bad.append(f"times {w}")
    checks.expect(not bad, f"{label} WORDS entries well formed" + (f" {bad[:2]}" if bad else ""))


def append_only(events: list[Event]) -> bool:
    last_end = -1.0
    for e in events:
        if not e.words:
            continue
        if e.words[0]["start"] < last_end - 0.3:
            return False
        last_end = e.words[-1]["end"]
    return True


def print_stream(res: StreamResult, limit: int = 40) -> None:
    for e in res.events[:limit]:
        kind = "FINAL  " if e.is_final else "partial"
        print(f"    {e.at:7.2f}s  req {e.request:4d}  {kind}  {e.text!r}  ({e.confidence:.2f})")
    if len(res.events) > limit:
        print(f"    ... {len(res.events) - limit} more")


def test_realtime(url: str, clip: np.ndarray, text: str, checks: Checks) -> None:
    print(f"\n(a) real-time stream, {clip.size / SR:.1f} s clip, 100 ms chunks")
    before = compute_seconds(url, STREAM_MODEL)
    res = stream(url, clip, speed=1.0)
    busy = compute_seconds(url, STREAM_MODEL) - before
    print_stream(res)
    checks.expect(not res.errors, f"(a) no stream errors {res.errors[:2]}")
    checks.expect(res.completed == res.requests, f"(a) {res.completed}/{res.requests} requests completed")
    finals = res.finals
    checks.expect(len(finals) >= 1, f"(a) got {len(finals)} final(s)")
    if finals:
        checks.expect(
            any(p.at < finals[0].at for p in res.partials), "(a) a partial arrived before the first final"
        )
        score = wer(text, res.final_text())
        checks.expect(score <= MAX_WER, f"(a) final WER {score:.2f} <= {MAX_WER}")
    check_words(checks, "(a)", res.events, clip.size / SR)
    start_s, end_s = speech_bounds(clip)
    first_speech_chunk = int(start_s / CHUNK_S)
    last_speech_chunk = min(len(res.send_times) - 1, int(np.ceil(end_s / CHUNK_S)) - 1)
    first_partial = res.partials[0].at - res.send_times[first_speech_chunk] if res.partials else float("nan")
    final_lat = finals[-1].at - res.send_times[last_speech_chunk] if finals else float("nan")
    checks.rows.append(("(a) stream 1x", clip.size / SR, res.wall, first_partial, final_lat, busy / (clip.size / SR)))


def test_long(url: str, clip: np.ndarray, text: str, n_sentences: int, checks: Checks) -> None:
    dur = clip.size / SR
    print(f"\n(b) long stream, {dur:.1f} s clip of {n_sentences} sentences, 4x real time")
    before = compute_seconds(url, STREAM_MODEL)
    res = stream(url, clip, speed=4.0)
    busy = compute_seconds(url, STREAM_MODEL) - before
    for e in res.finals:
        print(f"    {e.at:7.2f}s  FINAL  {e.text!r}")
    print(f"    ({len(res.partials)} partials)")
    checks.expect(not res.errors, f"(b) no stream errors {res.errors[:2]}")
    checks.expect(res.completed == res.requests, f"(b) {res.completed}/{res.requests} requests completed")
    checks.expect(len(res.finals) >= n_sentences // 2, f"(b) {len(res.finals)} finals (>= {n_sentences // 2})")
    checks.expect(append_only(res.finals), "(b) finals are append-only in time")
    check_words(checks, "(b)", res.events, dur)
    score = wer(text, res.final_text())
    checks.expect(score <= MAX_WER, f"(b) WER over all finals {score:.2f} <= {MAX_WER}")
    checks.rows.append(("(b) stream 4x", dur, res.wall, float("nan"), float("nan"), busy / dur))


def test_noise(url: str, noise: np.ndarray, checks: Checks) -> None:
    print(f"\n(c) faint white noise ({noise.size / SR:.0f} s) and digital silence")
    res = stream(url, noise, speed=4.0)
    texts = [e.text for e in res.events if e.text.strip()]
    print(f"    stream: {len(res.partials)} partials, {len(res.finals)} finals {texts[:3]}")
    checks.expect(not res.errors and res.completed == res.requests, "(c) noise stream completed without errors")
    checks.expect(not [e for e in res.finals if e.text.strip()], "(c) stream: no final text on noise")
    for label, audio in (("noise", noise), ("silence", silence(3.0))):
        text, is_final, words, conf, _ = offline(url, audio)
        checks.expect(text == "" and words == [] and is_final, f"(c) offline: empty result on {label} ({text!r})")


def test_offline(url: str, clip: np.ndarray, text: str, checks: Checks, label: str = "(d)") -> None:
    hyp, is_final, words, conf, took = offline(url, clip)
    score = wer(text, hyp)
    print(f"    offline: {hyp!r} conf {conf:.2f} in {took:.2f}s")
    checks.expect(is_final, f"{label} offline IS_FINAL is true")
    checks.expect(score <= MAX_WER, f"{label} offline WER {score:.2f} <= {MAX_WER}")
    check_words(checks, label, [Event(0, 0, True, hyp, words, conf)], clip.size / SR)
    checks.rows.append((f"{label} offline", clip.size / SR, took, float("nan"), took, took / (clip.size / SR)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address")
    ap.add_argument("--keep", help="write the generated clips to this folder")
    args = ap.parse_args()

    client = grpcclient.InferenceServerClient(args.url)
    for model in (STREAM_MODEL, OFFLINE_MODEL):
        if not client.is_model_ready(model):
            print(f"model {model} is not ready at {args.url}", file=sys.stderr)
            return 1
    client.close()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sgw-triton-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"clips in {work}")
    short = np.concatenate([silence(0.5), read_wav(synth(SHORT_TEXT, work / "short.wav")), silence(1.5)])
    parts = []
    for i, sentence in enumerate(SENTENCES):
        parts += [read_wav(synth(sentence, work / f"s{i:02d}.wav")), silence(1.2)]
    long_clip = np.concatenate([silence(0.5), *parts])
    run("sox", "-n", "-r", str(SR), "-c", "1", "-b", "16", str(work / "noise.wav"), "synth", "5", "whitenoise", "vol", "0.01")
    noise = read_wav(work / "noise.wav")
    synth(EIGHT_K_TEXT, work / "eight_k.wav", rate=8000)
    run("sox", str(work / "eight_k.wav"), "-r", str(SR), "-c", "1", "-b", "16", str(work / "eight_k_16k.wav"))
    eight_k = np.concatenate([read_wav(work / "eight_k_16k.wav"), silence(1.0)])

    checks = Checks()
    test_realtime(args.url, short, SHORT_TEXT, checks)
    test_long(args.url, long_clip, " ".join(SENTENCES), len(SENTENCES), checks)
    test_noise(args.url, noise, checks)
    print("\n(d) offline model on one clip")
    test_offline(args.url, short, SHORT_TEXT, checks)
    print("\n(e) 8 kHz clip resampled to 16 kHz by sox")
    test_offline(args.url, eight_k, EIGHT_K_TEXT, checks, label="(e)")
    res = stream(args.url, eight_k, speed=4.0)
    score = wer(EIGHT_K_TEXT, res.final_text())
    print(f"    stream: {res.final_text()!r}")
    checks.expect(not res.errors and res.completed == res.requests, "(e) stream completed without errors")
    checks.expect(score <= MAX_WER, f"(e) stream WER {score:.2f} <= {MAX_WER}")

    print("\n(f) sequence closed by an empty request while speech is pending")
    res = stream(args.url, read_wav(work / "short.wav"), speed=4.0, empty_end=True)
    last = res.requests - 1
    print(f"    finals on requests {[e.request for e in res.finals]} (last request {last})")
    checks.expect(not res.errors and res.completed == res.requests, "(f) stream completed without errors")
    checks.expect(
        [e.request for e in res.finals] == [last] and wer(SHORT_TEXT, res.final_text()) <= MAX_WER,
        "(f) the END request carries the final",
    )

    print("\ntimings (latency: first partial after first speech frame sent; final after last speech frame sent)")
    print(f"  {'test':<16} {'audio s':>8} {'wall s':>8} {'1st partial s':>14} {'final s':>8} {'RTF':>6}")
    for name, audio_s, wall, fp, fl, rtf in checks.rows:
        print(f"  {name:<16} {audio_s:8.1f} {wall:8.2f} {fp:14.2f} {fl:8.2f} {rtf:6.3f}")
    print("  (RTF = Triton compute time / audio duration, from the model's inference statistics)")

    if checks.failures:
        print(f"\n{len(checks.failures)} check(s) failed:")
        for f in checks.failures:
            print(f"  - {f}")
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
