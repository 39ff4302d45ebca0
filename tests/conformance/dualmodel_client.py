"""A client of the dual-model realtime STT server's `/ws` contract, written from that
server's README (API Endpoints, WebSocket /ws): PCM16 mono 16 kHz binary frames of
20-60 ms, JSON control messages `{"event": "start", "language": …}`, `{"event": "stop"}`,
`{"event": "set", "interimRate": N}`; the server answers with `interim`, `final` and
`status` messages. Uses the `websockets` library's synchronous client.

Prints a JSON report: {"messages": [every message received, in order], "close": code}.

Usage: dualmodel_client.py --url ws://HOST:PORT/ws --wav FILE [--token T]
       [--interim-rate N] [--frame-ms 40] [--pace 1.0] [--bad] [--language auto]
  --pace: fraction of real time to wait between frames (1.0: a live microphone).
  --bad:  first send messages the contract does not have (not JSON, unknown event).
"""

import argparse
import json
import time
import wave

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--wav", required=True)
    parser.add_argument("--token")
    parser.add_argument("--language", default="auto")
    parser.add_argument("--interim-rate", type=float)
    parser.add_argument("--frame-ms", type=int, default=40)
    parser.add_argument("--pace", type=float, default=1.0)
    parser.add_argument("--bad", action="store_true")
    args = parser.parse_args()

    with wave.open(args.wav, "rb") as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1, "16 kHz mono"
        pcm = w.readframes(w.getnframes())

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    messages = []
    close = None
    with connect(args.url, additional_headers=headers, max_size=2**20) as ws:

        def drain(timeout: float) -> None:
            end = time.time() + timeout
            while True:
                left = end - time.time()
                if left <= 0:
                    return
                try:
                    messages.append(json.loads(ws.recv(timeout=left)))
                except TimeoutError:
                    return

        if args.bad:
            ws.send("this is not json")
            ws.send(json.dumps({"event": "rewind"}))
        ws.send(json.dumps({"event": "start", "language": args.language}))
        if args.interim_rate is not None:
            ws.send(json.dumps({"event": "set", "interimRate": args.interim_rate}))
        step = 16000 * args.frame_ms // 1000 * 2
        for at in range(0, len(pcm), step):
            ws.send(pcm[at:at + step])
            drain(args.frame_ms / 1000 * args.pace)
        ws.send(json.dumps({"event": "stop"}))
        # The final of the stop: the last one covers the end of the audio.
        end = time.time() + 10
        while time.time() < end:
            drain(0.2)
            finals = [m for m in messages if m.get("type") == "final"]
            if finals and finals[-1]["t1"] - finals[0]["t0"] >= len(pcm) / 32000 - 0.05:
                break
        drain(0.3)
        ws.close()
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=2)))
        except (ConnectionClosed, TimeoutError):
            pass
        close = ws.close_code
    print(json.dumps({"messages": messages, "close": close}))


if __name__ == "__main__":
    main()
