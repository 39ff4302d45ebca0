"""Triton Python backend: streaming ASR (decoupled, sequence-batched).

Per request: read the chunk and the sequence controls, feed the sequence's StreamSession,
send one response per partial/final it yields, then an empty response flagged
TRITONSERVER_RESPONSE_COMPLETE_FINAL. Recognition logic lives in riva/triton/lib/sgw_asr.
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "lib"))

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from sgw_asr.engine import EngineOptions, WhisperEngine  # noqa: E402
from sgw_asr.stream import StreamOptions, StreamSession  # noqa: E402
from sgw_asr.vad import load_session  # noqa: E402


def _scalar(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    return tensor.as_numpy().reshape(-1)[0]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.logger = pb_utils.Logger
        self.batch_dim = config.get("max_batch_size", 0) > 0
        self.engine = WhisperEngine(EngineOptions.from_parameters(params))
        self.vad_session = load_session()
        self.stream_options = StreamOptions.from_parameters(params)
        idle_us = config.get("sequence_batching", {}).get("max_sequence_idle_microseconds", 60_000_000)
        # Triton releases an idle sequence without telling the model: forget it a bit later.
        self.state_ttl_s = int(idle_us) / 1e6 + 30
        self.streams = {}  # correlation id -> (StreamSession, last-seen monotonic time)
        self.logger.log_info(f"asr_stream ready: {args['model_instance_name']}")

    def execute(self, requests):
        now = time.monotonic()
        for request in requests:
            sender = request.get_response_sender()
            try:
                for hyp in self._handle(request, now):
                    sender.send(self._response(hyp))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except Exception as exc:  # one bad request must not kill the instance
                self.logger.log_error(f"asr_stream request failed: {exc!r}")
                sender.send(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"asr_stream: {exc}")),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
        self._expire(now)
        return None

    def _handle(self, request, now):
        corrid = int(_scalar(request, "CORRID", 0))
        start = bool(_scalar(request, "START", 0))
        end = bool(_scalar(request, "END", 0))
        audio_tensor = pb_utils.get_input_tensor_by_name(request, "AUDIO")
        audio = audio_tensor.as_numpy().reshape(-1) if audio_tensor is not None else np.zeros(0, np.int16)

        entry = None if start else self.streams.get(corrid)
        session = entry[0] if entry else StreamSession(self.engine, self.vad_session, self.stream_options)
        if entry is None and not start:
            self.logger.log_warn(f"asr_stream: sequence {corrid} continued without known state; starting fresh")
        out = session.push(audio.astype(np.int16, copy=False)) if audio.size else []
        if end:
            out += session.finish()
            self.streams.pop(corrid, None)
        else:
            self.streams[corrid] = (session, now)
        return out

    def _expire(self, now):
        stale = [cid for cid, (_, seen) in self.streams.items() if now - seen > self.state_ttl_s]
        for cid in stale:
            del self.streams[cid]

    def _response(self, hyp):
        shape = (1, 1) if self.batch_dim else (1,)
        words = json.dumps([w.as_json() for w in hyp.words], separators=(",", ":"))
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("TRANSCRIPT", np.array([hyp.text.encode()], dtype=np.object_).reshape(shape)),
                pb_utils.Tensor("IS_FINAL", np.array([hyp.is_final], dtype=np.bool_).reshape(shape)),
                pb_utils.Tensor("WORDS", np.array([words.encode()], dtype=np.object_).reshape(shape)),
                pb_utils.Tensor("CONFIDENCE", np.array([hyp.confidence], dtype=np.float32).reshape(shape)),
            ]
        )

    def finalize(self):
        self.streams.clear()
