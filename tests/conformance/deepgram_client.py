"""Drive speech-gateway's Deepgram-compatible endpoint with Deepgram's official Python SDK.

Usage:
    deepgram_client.py --url ws://HOST:PORT --key KEY --wav FILE [--model NAME]
                       [--finalize-after-ms MS] [--keepalive] [--realtime]
    deepgram_client.py --url ws://HOST:PORT --key KEY --wav FILE --prerecorded
                       [--model NAME] [--multichannel] [--utterances] [--raw-linear16]

Streams the WAV's samples (mono PCM16) through `client.listen.v1.connect(...)` in 100 ms
chunks as fast as the socket takes them (`--realtime`: one chunk per 100 ms), optionally sends `Finalize` after some audio and a
`KeepAlive`, then `CloseStream`, and prints one JSON object: every message the SDK parsed,
by its SDK class name, with the fields the gateway's tests check. A refused connection
prints {"refused": STATUS}.

--prerecorded: uploads the file (any format; --raw-linear16 sends the WAV's samples as raw
audio with encoding/sample_rate/channels) through `client.listen.v1.media.transcribe_file`
and prints the parsed response's fields: {"metadata": ..., "channels": [...],
"utterances": [...]}; a refusal prints {"refused": STATUS, "body": ...}.
"""

import argparse
import json
import threading
import time
import wave

from deepgram import DeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError
from deepgram.core.events import EventType
from websockets.exceptions import InvalidStatus


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--wav", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--finalize-after-ms", type=int, default=0)
    ap.add_argument("--keepalive", action="store_true")
    ap.add_argument("--realtime", action="store_true")
    ap.add_argument("--vad-events", action="store_true")
    ap.add_argument("--diarize", action="store_true")
    ap.add_argument("--utterance-end-ms", type=int, default=0)
    ap.add_argument("--prerecorded", action="store_true")
    ap.add_argument("--multichannel", action="store_true")
    ap.add_argument("--utterances", action="store_true")
    ap.add_argument("--raw-linear16", action="store_true")
    args = ap.parse_args()

    http = args.url.replace("ws://", "http://").replace("wss://", "https://")
    env = DeepgramClientEnvironment(
        base=http, production=args.url, agent=args.url, agent_rest=http
    )
    client = DeepgramClient(api_key=args.key, environment=env)
    if args.prerecorded:
        prerecorded(client, args)
        return

    with wave.open(args.wav, "rb") as w:
        rate = w.getframerate()
        nchannels = w.getnchannels()
        pcm = w.readframes(w.getnframes())
    chunk = rate // 10 * 2 * nchannels

    messages = []
    cues = {}
    if args.vad_events:
        cues["vad_events"] = "true"
    if args.utterance_end_ms:
        cues["utterance_end_ms"] = str(args.utterance_end_ms)
    if args.diarize:
        cues["diarize"] = "true"
    if nchannels > 1:
        cues["channels"] = str(nchannels)
        if args.multichannel:
            cues["multichannel"] = "true"

    def on_message(message) -> None:
        kind = type(message).__name__
        entry = {"class": kind}
        if kind == "ListenV1Results":
            alt = message.channel.alternatives[0]
            entry.update(
                is_final=message.is_final,
                speech_final=message.speech_final,
                from_finalize=message.from_finalize,
                start=message.start,
                duration=message.duration,
                transcript=alt.transcript,
                words=[[w.word, w.start, w.end] for w in alt.words],
                speakers=[w.speaker for w in alt.words],
                channel_index=message.channel_index,
                request_id=message.metadata.request_id,
            )
        elif kind == "ListenV1Metadata":
            entry.update(duration=message.duration, channels=message.channels)
        elif kind == "ListenV1SpeechStarted":
            entry.update(timestamp=message.timestamp, channel=message.channel)
        elif kind == "ListenV1UtteranceEnd":
            entry.update(last_word_end=message.last_word_end, channel=message.channel)
        elif kind == "ListenV1Error":
            entry.update(description=message.description)
        messages.append(entry)

    try:
        with client.listen.v1.connect(
            model=args.model,
            encoding="linear16",
            sample_rate=str(rate),
            interim_results="true",
            punctuate="true",
            **cues,
        ) as socket:
            socket.on(EventType.MESSAGE, on_message)
            reader = threading.Thread(target=socket.start_listening)
            reader.start()
            sent_ms = 0
            finalized = False
            t0 = time.monotonic()
            for n, i in enumerate(range(0, len(pcm), chunk)):
                if args.realtime:
                    time.sleep(max(0.0, t0 + n * 0.1 - time.monotonic()))
                socket.send_media(pcm[i : i + chunk])
                sent_ms += 100
                if args.finalize_after_ms and not finalized and sent_ms >= args.finalize_after_ms:
                    socket.send_finalize()
                    finalized = True
            if args.keepalive:
                socket.send_keep_alive()
            socket.send_close_stream()
            reader.join(timeout=60)
    except ApiError as e:
        print(json.dumps({"refused": e.status_code}))
        return
    except InvalidStatus as e:
        # The SDK maps the older websockets exception only; with websockets 15 the HTTP
        # refusal reaches the caller as this one.
        body = e.response.body.decode("utf-8", "replace") if e.response.body else ""
        print(json.dumps({"refused": e.response.status_code, "body": body}))
        return
    print(json.dumps({"messages": messages}))


def prerecorded(client, args) -> None:
    options = dict(model=args.model, punctuate=True)
    if args.multichannel:
        options["multichannel"] = True
    if args.utterances:
        options["utterances"] = True
    if args.diarize:
        options["diarize"] = True
    if args.raw_linear16:
        with wave.open(args.wav, "rb") as w:
            body = w.readframes(w.getnframes())
            # transcribe_file has no sample_rate/channels arguments: they go as extra
            # query parameters, as Deepgram documents them for raw audio.
            options.update(
                encoding="linear16",
                request_options={
                    "additional_query_parameters": {
                        "sample_rate": w.getframerate(),
                        "channels": w.getnchannels(),
                    }
                },
            )
    else:
        with open(args.wav, "rb") as f:
            body = f.read()
    try:
        response = client.listen.v1.media.transcribe_file(request=body, **options)
    except ApiError as e:
        print(json.dumps({"refused": e.status_code, "body": e.body}, default=str))
        return
    meta = response.metadata
    out = {
        "metadata": {
            "request_id": meta.request_id,
            "sha256": meta.sha256,
            "created": meta.created.isoformat(),
            "duration": meta.duration,
            "channels": meta.channels,
            "models": meta.models,
        },
        "channels": [
            {
                "transcript": ch.alternatives[0].transcript,
                "confidence": ch.alternatives[0].confidence,
                "words": [
                    [w.word, w.start, w.end, w.punctuated_word, w.speaker]
                    for w in ch.alternatives[0].words
                ],
            }
            for ch in response.results.channels
        ],
        "utterances": None,
    }
    if response.results.utterances is not None:
        out["utterances"] = [
            {
                "channel": u.channel,
                "speaker": u.speaker,
                "start": u.start,
                "end": u.end,
                "transcript": u.transcript,
                "words": len(u.words or []),
            }
            for u in response.results.utterances
        ]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
