"""RealtimeSTT's own client (AudioToTextRecorderClient, RealtimeSTT 1.1.2) against the
gateway's RealtimeSTT dialect (/realtimestt/control and /realtimestt/data).

The client is used as its users use it with an external audio source:
use_microphone=False and feed_audio(chunk, None, rate). Its module imports pyaudio (for
the microphone, unused here); pyaudio needs portaudio to build, so a stub stands in for
it. Every data message the client parses is recorded (its own handler runs as well);
what the client prints goes to stderr, and the JSON report to stdout:

  {"language": …, "sensitivity": …, "recording_before": …, "realtime": [texts],
   "messages": [data messages], "printed": "what the client printed"}

Usage: stt_client.py --control URL --data URL --wav FILE [--language en]
       [--chunk-ms 64] [--pace 0.25] [--bad-method]
"""

import argparse
import contextlib
import io
import json
import sys
import threading
import time
import types
import wave

# The microphone module's import, stubbed (see the docstring).
_pyaudio = types.ModuleType("pyaudio")
_pyaudio.paInt16 = 8
_pyaudio.PyAudio = None
sys.modules["pyaudio"] = _pyaudio

from RealtimeSTT.audio_recorder_client import AudioToTextRecorderClient  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--control", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--wav", required=True)
    parser.add_argument("--language", default="en")
    parser.add_argument("--chunk-ms", type=int, default=64)
    parser.add_argument("--pace", type=float, default=0.25,
                        help="fraction of real time to wait between chunks")
    parser.add_argument("--bad-method", action="store_true")
    args = parser.parse_args()

    messages = []
    lock = threading.Lock()
    original = AudioToTextRecorderClient.on_data_message

    def recording(self, ws, message):
        with lock:
            messages.append(json.loads(message))
        original(self, ws, message)

    AudioToTextRecorderClient.on_data_message = recording

    printed = io.StringIO()
    realtime = []
    report = {}
    with contextlib.redirect_stdout(printed):
        client = AudioToTextRecorderClient(
            control_url=args.control,
            data_url=args.data,
            language=args.language,
            use_microphone=False,
            autostart_server=False,
            enable_realtime_transcription=True,
            on_realtime_transcription_update=realtime.append,
        )
        # The data socket opens on its own thread: wait for it before feeding audio.
        deadline = time.time() + 10
        while not (client.data_ws.sock and client.data_ws.sock.connected):
            if time.time() > deadline:
                raise SystemExit("the data connection did not open")
            time.sleep(0.01)
        # Round trips on the control connection (get_parameter waits for its answer).
        report["language"] = client.get_parameter("language")
        client.set_parameter("silero_sensitivity", 0.2)
        report["sensitivity"] = client.get_parameter("silero_sensitivity")
        report["recording_before"] = client.get_parameter("is_recording")
        client.call_method("wakeup")
        if args.bad_method:
            client.call_method("format_disk")
            client.set_parameter("model", "large-v2")

        with wave.open(args.wav, "rb") as w:
            rate = w.getframerate()
            pcm = w.readframes(w.getnframes())
        step = rate * args.chunk_ms // 1000 * 2
        for at in range(0, len(pcm), step):
            client.feed_audio(pcm[at:at + step], None, rate)
            time.sleep(args.chunk_ms / 1000 * args.pace)
        # The end of speech: the server's recorder would stop at silence; here the
        # client asks for it.
        client.stop()
        # Until the sentences stop coming.
        last, count = time.time(), -1
        while time.time() - last < 1.0 and time.time() - last < 15:
            with lock:
                n = len(messages)
            if n != count:
                last, count = time.time(), n
            time.sleep(0.05)
        client.shutdown()
    with lock:
        report["messages"] = list(messages)
    report["realtime"] = realtime
    report["printed"] = printed.getvalue()
    print(printed.getvalue(), file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
