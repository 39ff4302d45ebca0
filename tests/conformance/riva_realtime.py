"""Drive speech-gateway's realtime transcription endpoint with NVIDIA's realtime ASR
client (`riva.client.realtime.RealtimeClientASR` from nvidia-riva-client).

Usage:
    riva_realtime.py --server HOST:PORT --wav FILE [--key KEY] [--model NAME]

Mints a session (`POST /v1/realtime/transcription_sessions`, with KEY as the mint key),
connects to `/v1/realtime?intent=transcription` with the client secret as its
subprotocol, sends the WAV file as the client does for files (input_audio_format
`none`: the file's bytes, header first, each chunk appended and committed, then
`input_audio_buffer.done`), receives until the result marked last, and prints one JSON
object: {"final": the last result's transcript, "deltas": N, "completed": [...]}.
"""

import argparse
import asyncio
import json
import logging

from riva.client.asr import AudioChunkFileIterator
from riva.client.realtime import RealtimeClientASR


def client_args(server: str, key: str, model: str) -> argparse.Namespace:
    return argparse.Namespace(
        server=server,
        endpoint="/v1/realtime",
        query_params="intent=transcription",
        use_ssl=False,
        ssl_root_cert=None,
        ssl_client_cert=None,
        ssl_client_key=None,
        mint_api_key=key,
        mic=False,
        language_code="en-US",
        model_name=model,
        prompt=None,
        sample_rate_hz=16000,
        num_channels=1,
        max_alternatives=1,
        automatic_punctuation=True,
        word_time_offsets=True,
        profanity_filter=False,
        no_verbatim_transcripts=False,
        speaker_diarization=False,
        boosted_lm_words=None,
        custom_configuration="",
        start_history=-1,
        start_threshold=-1.0,
        stop_history=-1,
        stop_history_eou=-1,
        stop_threshold=-1.0,
        stop_threshold_eou=-1.0,
    )


async def run(args) -> dict:
    client = RealtimeClientASR(client_args(args.server, args.key, args.model))
    completed = []
    deltas = 0
    # Record what the client receives, without changing how it handles it.
    await client.connect()
    recv = client.websocket.recv

    async def recording_recv(*a, **k):
        nonlocal deltas
        message = await recv(*a, **k)
        event = json.loads(message)
        if event.get("type") == "conversation.item.input_audio_transcription.completed":
            completed.append({"transcript": event.get("transcript"), "last": event.get("is_last_result")})
        elif event.get("type") == "conversation.item.input_audio_transcription.delta":
            deltas += 1
        return message

    client.websocket.recv = recording_recv
    chunks = AudioChunkFileIterator(args.wav, 1600)
    sender = asyncio.create_task(client.send_audio_chunks(chunks))
    await asyncio.wait_for(client.receive_responses(), 60)
    await sender
    await client.disconnect()
    return {"final": client.final_transcript, "deltas": deltas, "completed": completed}


def main() -> None:
    logging.getLogger().setLevel(logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--wav", required=True)
    ap.add_argument("--key", default="")
    ap.add_argument("--model", default="default")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
