"""Drive speech-gateway's realtime transcription WebSocket with OpenAI's official SDK.

Usage:
    openai_realtime.py --url http://HOST:PORT --key KEY --wav FILE
                       [--manual] [--model NAME] [--speed X] [--bad]

Connects with `client.realtime.connect(extra_query={"intent": "transcription"})`, sends
`session.update` for a transcription session (audio/pcm at 24 kHz; server VAD, or
`turn_detection: null` with --manual), streams the WAV (mono PCM16, resampled to 24 kHz)
as base64 `input_audio_buffer.append` events of 100 ms, commits at the end, and prints one
JSON object: {"events": [...]} with every server event the SDK parsed (type and the fields
the tests check). --bad first sends the malformed events the gateway must answer with
`error` events (append before session.update, unknown type, invalid base64, a commit of
an empty buffer) and goes on.
"""

import argparse
import audioop
import base64
import json
import queue
import threading
import time
import wave

from openai import OpenAI


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--wav", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--manual", action="store_true")
    ap.add_argument("--speed", type=float, default=4.0)
    ap.add_argument("--bad", action="store_true")
    ap.add_argument("--quiet-s", type=float, default=2.0)
    args = ap.parse_args()

    with wave.open(args.wav, "rb") as w:
        rate = w.getframerate()
        pcm = w.readframes(w.getnframes())
    pcm24, _ = audioop.ratecv(pcm, 2, 1, rate, 24_000, None)

    client = OpenAI(base_url=args.url + "/v1", api_key=args.key, max_retries=0)
    events = []
    inbox: "queue.Queue" = queue.Queue()
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:

        def reader() -> None:
            try:
                for event in conn:
                    inbox.put(event)
            except Exception as e:  # the connection closed
                inbox.put(e)
            inbox.put(None)

        threading.Thread(target=reader, daemon=True).start()

        def drain(quiet_s: float, until=None) -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    event = inbox.get(timeout=quiet_s)
                except queue.Empty:
                    return
                if event is None or isinstance(event, Exception):
                    return
                events.append(record(event))
                if until and until(event):
                    return

        drain(2.0, until=lambda e: e.type == "session.created")
        if args.bad:
            conn.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0\0").decode()})
            drain(1.0, until=lambda e: e.type == "error")
        turn = None if args.manual else {"type": "server_vad", "silence_duration_ms": 500}
        conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": args.model, "language": "en"},
                        "turn_detection": turn,
                    }
                },
            }
        )
        drain(2.0, until=lambda e: e.type == "session.updated")
        if args.bad:
            conn.send({"type": "conversation.item.create", "item": {}})
            drain(1.0, until=lambda e: e.type == "error")
            conn.send({"type": "input_audio_buffer.append", "audio": "not base64 !!"})
            drain(1.0, until=lambda e: e.type == "error")
            conn.send({"type": "input_audio_buffer.commit"})
            drain(1.0, until=lambda e: e.type == "error")
        chunk = 4_800  # 100 ms at 24 kHz
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(pcm24), chunk)):
            if args.speed > 0:
                time.sleep(max(0.0, t0 + n * 0.1 / args.speed - time.monotonic()))
            conn.input_audio_buffer.append(audio=base64.b64encode(pcm24[i : i + chunk]).decode())
            while not inbox.empty():
                event = inbox.get()
                if event is None or isinstance(event, Exception):
                    break
                events.append(record(event))
        conn.input_audio_buffer.commit()
        drain(args.quiet_s)
    print(json.dumps({"events": events}))


def record(event) -> dict:
    entry = {"type": event.type}
    for field in ("item_id", "previous_item_id", "delta", "transcript", "audio_start_ms", "audio_end_ms"):
        value = getattr(event, field, None)
        if value is not None:
            entry[field] = value
    error = getattr(event, "error", None)
    if error is not None:
        entry["error"] = {"type": error.type, "code": error.code, "message": error.message}
    session = getattr(event, "session", None)
    if session is not None:
        entry["session_type"] = getattr(session, "type", None)
    return entry


if __name__ == "__main__":
    main()
