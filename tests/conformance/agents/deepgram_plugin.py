"""Transcribe a WAV through LiveKit Agents' Deepgram STT plugin pointed at speech-gateway.

Usage:
    deepgram_plugin.py --url ws://HOST:PORT --key KEY --wav FILE [--model NAME]
                       [--speed X] [--retries N]

A voice agent built on LiveKit Agents uses `livekit.plugins.deepgram.STT(...)` and reads
`stt.stream()`; this script does the same without a LiveKit server or a room: it pushes
the WAV's samples (mono PCM16) as `rtc.AudioFrame`s of 20 ms, `--speed` times real time
(1.0 by default), with interim results on, then `end_input()` (the plugin sends
`Finalize`, then `CloseStream`) and reads the stream's events to their end.

It prints one JSON object on stdout:
    {"plugin": {...versions}, "request": {"url", "headers"}, "sent": {...}, "received": [...],
     "events": [...], "interim": [...], "finals": [...], "errors": [...], "error": null|str}
`sent` counts what went on the socket (binary frames and bytes, text messages in order),
`received` lists the type of every text message the gateway sent, `events` the plugin's
speech events in order (`t`: seconds since the first frame was pushed), `interim` and
`finals` the transcripts with the plugin's timing fields. The API key never appears in
it. Exits 1 when the plugin reported an error (an `error` event or its stream raised).
"""

import argparse
import asyncio
import json
import sys
import time
import wave

import aiohttp
from livekit import rtc
from livekit.agents import APIConnectOptions, stt
from livekit.agents import __version__ as agents_version
from livekit.plugins import deepgram
from livekit.plugins.deepgram import __version__ as plugin_version

FRAME_MS = 20


class RecordingWebSocket(aiohttp.ClientWebSocketResponse):
    """The plugin's socket, with a log of what crossed it (message kinds, not audio)."""

    log: dict = {"binary_frames": 0, "binary_bytes": 0, "text": [], "received": []}

    # Logged once written: a write on a socket already closed raises, and is not sent.
    async def send_str(self, data: str, compress: int | None = None) -> None:
        await super().send_str(data, compress)
        try:
            kind = json.loads(data).get("type", data)
        except (ValueError, AttributeError):
            kind = data
        self.log["text"].append(kind)

    async def send_bytes(self, data: bytes, compress: int | None = None) -> None:
        await super().send_bytes(data, compress)
        self.log["binary_frames"] += 1
        self.log["binary_bytes"] += len(data)

    async def receive(self, *args, **kwargs):
        msg = await super().receive(*args, **kwargs)
        if msg.type == aiohttp.WSMsgType.TEXT:
            try:
                self.log["received"].append(json.loads(msg.data).get("type"))
            except (ValueError, AttributeError):
                self.log["received"].append("?")
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            self.log["received"].append(f"close {self.close_code}")
        return msg


def speech_data(d: stt.SpeechData) -> dict:
    return {
        "text": d.text,
        "start_time": d.start_time,
        "end_time": d.end_time,
        "confidence": d.confidence,
        "language": str(d.language),
        "words": [[str(w), w.start_time, w.end_time] for w in (d.words or [])],
    }


async def run(args) -> dict:
    with wave.open(args.wav, "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit("the WAV must be mono PCM16")
        rate = w.getframerate()
        pcm = w.readframes(w.getnframes())

    request: dict = {}

    async def on_request_start(_session, _ctx, params) -> None:
        # The credential is reported by scheme only.
        request["url"] = str(params.url)
        request["headers"] = {
            k: (v.split(" ", 1)[0] + " …" if k.lower() == "authorization" else v)
            for k, v in params.headers.items()
        }

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_request_start)

    report: dict = {
        "plugin": {"livekit-agents": agents_version, "livekit-plugins-deepgram": plugin_version},
        "request": request,
        "events": [],
        "interim": [],
        "finals": [],
        "errors": [],
        "error": None,
    }

    async with aiohttp.ClientSession(
        ws_response_class=RecordingWebSocket, trace_configs=[trace]
    ) as session:
        dg = deepgram.STT(
            api_key=args.key,
            base_url=f"{args.url.rstrip('/')}/v1/listen",
            model=args.model,
            interim_results=True,
            sample_rate=rate,
            http_session=session,
        )
        dg.on(
            "error",
            lambda e: report["errors"].append(
                {"recoverable": e.recoverable, "error": f"{type(e.error).__name__}: {e.error}"}
            ),
        )
        stream = dg.stream(conn_options=APIConnectOptions(max_retry=args.retries, timeout=10.0))
        t0 = time.monotonic()

        async def push() -> None:
            step = rate * FRAME_MS // 1000 * 2
            for n, i in enumerate(range(0, len(pcm), step)):
                await asyncio.sleep(max(0.0, t0 + n * FRAME_MS / 1000 / args.speed - time.monotonic()))
                chunk = pcm[i : i + step]
                stream.push_frame(rtc.AudioFrame(chunk, rate, 1, len(chunk) // 2))
            stream.end_input()

        pusher = asyncio.create_task(push())
        try:
            async for ev in stream:
                t = round(time.monotonic() - t0, 3)
                entry = {"type": ev.type.value, "t": t}
                if ev.type in (
                    stt.SpeechEventType.INTERIM_TRANSCRIPT,
                    stt.SpeechEventType.FINAL_TRANSCRIPT,
                ):
                    alt = speech_data(ev.alternatives[0])
                    alt.update(t=t, request_id=ev.request_id)
                    key = "finals" if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT else "interim"
                    report[key].append(alt)
                    entry["text"] = alt["text"]
                elif ev.type == stt.SpeechEventType.RECOGNITION_USAGE:
                    entry["audio_duration"] = ev.recognition_usage.audio_duration
                report["events"].append(entry)
        except Exception as e:  # the plugin's stream raised (it also emitted `error`)
            report["error"] = f"{type(e).__name__}: {e}"
        finally:
            pusher.cancel()
            await stream.aclose()
            await dg.aclose()
        report["seconds"] = round(time.monotonic() - t0, 3)

    log = RecordingWebSocket.log
    report["sent"] = {k: log[k] for k in ("binary_frames", "binary_bytes", "text")}
    report["received"] = log["received"]
    if report["error"] is None and report["errors"]:
        report["error"] = report["errors"][-1]["error"]
    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="ws://HOST:PORT of the gateway")
    ap.add_argument("--key", required=True)
    ap.add_argument("--wav", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--speed", type=float, default=1.0, help="times real time")
    ap.add_argument("--retries", type=int, default=0, help="the plugin's max_retry")
    args = ap.parse_args()
    report = asyncio.run(run(args))
    print(json.dumps(report))
    sys.exit(1 if report["error"] else 0)


if __name__ == "__main__":
    main()
