"""Riva conformance server: a scripted stand-in for NVIDIA Riva ASR (test tool).

It runs no recogniser. It serves the official generated Riva servicer and the
official gRPC health servicer, answers with fixed transcripts, and appends one
JSON line per call to a record file so a test can check exactly what the
gateway sent. Being built on the nvidia-riva-client stubs, it proves that the
gateway's own protobuf types interoperate with the real schema.

    python riva_server.py --port 0 --record PATH [--finals N]

Binds 127.0.0.1:PORT (0 picks a free port), prints one line "PORT <n>" on
stdout, then serves until SIGTERM/SIGINT, or until stdin reaches EOF when
stdin is a pipe or socket (so a crashed parent cannot leave it running; with
stdin on /dev/null or a terminal it is ignored).

StreamingRecognize: the first request must hold streaming_config only, later
ones audio_content only (violations are recorded under "errors"). After the
first audio chunk it sends one partial ("hello", stability 0.5); when the
client half-closes it sends --finals N finals (default 1), each "hello world"
with two timed words, final k shifted by k*1000 ms, then ends OK. Record line:
  {"rpc", "config", "audio_bytes", "audio_requests", "errors", "cancelled"}
"""

import argparse
import json
import os
import signal
import stat
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from riva.client.proto import riva_asr_pb2 as asr
from riva.client.proto import riva_asr_pb2_grpc as asr_grpc

SERVICE = "nvidia.riva.asr.RivaSpeechRecognition"
MODEL = "conformance-asr"
# (word, start_ms, end_ms, confidence): WordInfo times are int32 milliseconds.
WORDS = [("hello", 100, 400, 0.9), ("world", 500, 900, 0.85)]


def final_alternative(offset_ms: int = 0) -> asr.SpeechRecognitionAlternative:
    return asr.SpeechRecognitionAlternative(
        transcript="hello world", confidence=0.875,
        words=[asr.WordInfo(word=w, start_time=s + offset_ms, end_time=e + offset_ms,
                            confidence=c) for w, s, e, c in WORDS])


class Recorder:
    """Appends JSON lines to the record file, one per finished call."""

    def __init__(self, path: str):
        self.path, self.lock = path, threading.Lock()

    def write(self, entry: dict) -> None:
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()


class Call:
    """Bookkeeping for one StreamingRecognize call; recorded exactly once."""

    def __init__(self, recorder: Recorder):
        self.recorder, self.lock, self.done = recorder, threading.Lock(), False
        self.config, self.audio_bytes, self.audio_requests, self.errors = None, 0, 0, []

    def seconds(self) -> float:
        rate = self.config.config.sample_rate_hertz if self.config else 0
        return self.audio_bytes / 2 / (rate or 16000)

    def record(self, cancelled: bool) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
        config = (MessageToDict(self.config, preserving_proto_field_name=True)
                  if self.config is not None else None)
        self.recorder.write({"rpc": "StreamingRecognize", "config": config,
                             "audio_bytes": self.audio_bytes,
                             "audio_requests": self.audio_requests,
                             "errors": self.errors, "cancelled": cancelled})


class Servicer(asr_grpc.RivaSpeechRecognitionServicer):
    def __init__(self, recorder: Recorder, finals: int):
        self.recorder, self.finals = recorder, finals

    def StreamingRecognize(self, request_iterator, context):
        call = Call(self.recorder)
        context.add_callback(lambda: call.record(cancelled=True))  # no-op if already recorded
        try:
            for i, req in enumerate(request_iterator):
                want = "streaming_config" if i == 0 else "audio_content"
                fields = sorted(f.name for f, _ in req.ListFields())
                if fields != [want]:
                    got = ", ".join(fields) or "nothing"
                    call.errors.append(f"request {i} sets {got}; expected only {want}")
                if i == 0 and req.HasField("streaming_config"):
                    call.config = req.streaming_config
                if req.WhichOneof("streaming_request") != "audio_content":
                    continue
                call.audio_requests += 1
                call.audio_bytes += len(req.audio_content)
                if call.audio_requests == 1:
                    yield asr.StreamingRecognizeResponse(results=[asr.StreamingRecognitionResult(
                        alternatives=[asr.SpeechRecognitionAlternative(transcript="hello")],
                        is_final=False, stability=0.5, audio_processed=call.seconds())])
            for k in range(self.finals):
                yield asr.StreamingRecognizeResponse(results=[asr.StreamingRecognitionResult(
                    alternatives=[final_alternative(offset_ms=1000 * k)], is_final=True,
                    audio_processed=call.seconds())])
        finally:
            call.record(cancelled=not context.is_active())

    def Recognize(self, request, context):
        rate = request.config.sample_rate_hertz or 16000
        self.recorder.write({
            "rpc": "Recognize",
            "config": MessageToDict(request.config, preserving_proto_field_name=True),
            "audio_bytes": len(request.audio), "audio_requests": 1,
            "errors": [], "cancelled": False})
        return asr.RecognizeResponse(results=[asr.SpeechRecognitionResult(
            alternatives=[final_alternative()], audio_processed=len(request.audio) / 2 / rate)])

    def GetRivaSpeechRecognitionConfig(self, request, context):
        if request.model_name and request.model_name != MODEL:
            return asr.RivaSpeechRecognitionConfigResponse()
        return asr.RivaSpeechRecognitionConfigResponse(model_config=[
            asr.RivaSpeechRecognitionConfigResponse.Config(
                model_name=MODEL,
                parameters={"language_code": "en-US", "type": "online",
                            "sample_rate": "16000", "streaming": "true"})])


def watch_stdin(stop: threading.Event) -> None:
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return
    def wait_eof():
        while sys.stdin.buffer.read1(65536):
            pass
        stop.set()
    threading.Thread(target=wait_eof, daemon=True).start()


def main() -> int:
    ap = argparse.ArgumentParser(description="Scripted Riva ASR server for conformance tests.")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free)")
    ap.add_argument("--record", required=True, help="file to append one JSON line per call to")
    ap.add_argument("--finals", type=int, default=1, help="finals sent after half-close")
    args = ap.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    asr_grpc.add_RivaSpeechRecognitionServicer_to_server(
        Servicer(Recorder(args.record), args.finals), server)
    health_servicer = health.HealthServicer()
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    if port == 0:
        print(f"riva_server: cannot bind 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    server.start()
    print(f"PORT {port}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    watch_stdin(stop)
    while not stop.wait(0.5):
        pass
    health_servicer.enter_graceful_shutdown()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
