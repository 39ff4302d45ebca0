"""Triton conformance server: a scripted stand-in for Triton's KServe v2 gRPC API (test tool).

It serves the official generated servicer from `tritonclient.grpc.service_pb2_grpc`
with two models that follow the gateway's tensor contract, so a test proves that the
gateway's own protobuf types interoperate with the real schema:

  asr_stream   decoupled + sequence batching: per request, a partial ("hello") once
               the sequence holds audio, a final ("hello world", words over all audio)
               on sequence_end, and always the empty response flagged
               triton_final_response when the request asked for it.
  asr_offline  unary: one final ("hello world") per ModelInfer.

    python triton_server.py --port 0 --record PATH

Prints "PORT <n>" once listening on 127.0.0.1; serves until SIGTERM/SIGINT or until
stdin (a pipe) closes. Appends one JSON line per request to PATH:
  {"rpc", "model", "id", "parameters", "inputs": [{"name","datatype","shape"}],
   "outputs": [names], "raw_bytes": [len per raw input]}
"""

import argparse
import json
import os
import signal
import stat
import struct
import sys
import threading
from concurrent import futures

import grpc
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

RATE = 16000


def bytes_tensor(value: bytes) -> bytes:
    return struct.pack("<I", len(value)) + value


def result(req_id: str, text: str, final: bool, words: list) -> pb.ModelInferResponse:
    resp = pb.ModelInferResponse(model_name="m", id=req_id)
    for name, dtype in (("TRANSCRIPT", "BYTES"), ("IS_FINAL", "BOOL"), ("WORDS", "BYTES"), ("CONFIDENCE", "FP32")):
        resp.outputs.add(name=name, datatype=dtype, shape=[1])
    resp.raw_output_contents.extend([
        bytes_tensor(text.encode()),
        bytes([1 if final else 0]),
        bytes_tensor(json.dumps(words).encode()),
        struct.pack("<f", 0.75),
    ])
    return resp


def param_value(p: pb.InferParameter):
    return getattr(p, p.WhichOneof("parameter_choice")) if p.WhichOneof("parameter_choice") else None


class Recorder:
    def __init__(self, path: str):
        self.path, self.lock = path, threading.Lock()

    def write(self, rpc: str, req: pb.ModelInferRequest) -> None:
        entry = {
            "rpc": rpc, "model": req.model_name, "id": req.id,
            "parameters": {k: param_value(v) for k, v in req.parameters.items()},
            "inputs": [{"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in req.inputs],
            "outputs": [o.name for o in req.outputs],
            "raw_bytes": [len(r) for r in req.raw_input_contents],
        }
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


def model_config(name: str) -> mc.ModelConfig:
    cfg = mc.ModelConfig(name=name, backend="python")
    cfg.input.add(name="AUDIO", data_type=mc.TYPE_INT16, dims=[-1])
    for out, dtype in (("TRANSCRIPT", mc.TYPE_STRING), ("IS_FINAL", mc.TYPE_BOOL),
                       ("WORDS", mc.TYPE_STRING), ("CONFIDENCE", mc.TYPE_FP32)):
        cfg.output.add(name=out, data_type=dtype, dims=[1])
    if name == "asr_stream":
        cfg.model_transaction_policy.decoupled = True
        cfg.sequence_batching.max_sequence_idle_microseconds = 60_000_000
    return cfg


class Triton(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=request.name in ("asr_stream", "asr_offline"))

    def ModelConfig(self, request, context):
        if request.name not in ("asr_stream", "asr_offline"):
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown model")
        return pb.ModelConfigResponse(config=model_config(request.name))

    def ModelInfer(self, request, context):
        self.recorder.write("ModelInfer", request)
        seconds = sum(len(r) for r in request.raw_input_contents) / 2 / RATE
        return result(request.id, "hello world", True,
                      [{"word": "hello", "start": 0.0, "end": seconds / 2, "confidence": 0.9},
                       {"word": "world", "start": seconds / 2, "end": seconds, "confidence": 0.8}])

    def ModelStreamInfer(self, request_iterator, context):
        samples = 0
        for req in request_iterator:
            self.recorder.write("ModelStreamInfer", req)
            got = sum(len(r) for r in req.raw_input_contents) // 2
            samples += got
            params = {k: param_value(v) for k, v in req.parameters.items()}
            seconds = samples / RATE
            if params.get("sequence_end"):
                resp = result(req.id, "hello world", True,
                              [{"word": "hello", "start": 0.0, "end": seconds / 2, "confidence": 0.9},
                               {"word": "world", "start": seconds / 2, "end": seconds, "confidence": 0.8}])
                yield pb.ModelStreamInferResponse(infer_response=resp)
            elif got:
                yield pb.ModelStreamInferResponse(infer_response=result(req.id, "hello", False, []))
            if params.get("triton_enable_empty_final_response"):
                done = pb.ModelInferResponse(model_name=req.model_name, id=req.id)
                done.parameters["triton_final_response"].bool_param = True
                yield pb.ModelStreamInferResponse(infer_response=done)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--record", required=True)
    args = ap.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Triton(Recorder(args.record)), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"PORT {port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    server.stop(grace=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
