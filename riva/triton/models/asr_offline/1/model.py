"""Triton Python backend: offline ASR, one whole utterance per request, one final back.

Gated by the Silero VAD: audio with less than `min_speech_s` of speech is not decoded and
answers with an empty transcript. Recognition logic lives in riva/triton/lib/sgw_asr.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "lib"))

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from sgw_asr.engine import EngineOptions, Hypothesis, WhisperEngine  # noqa: E402
from sgw_asr.vad import WINDOW, SAMPLE_RATE, load_session, speech_probabilities  # noqa: E402

_EMPTY = Hypothesis(text="", confidence=0.0, is_final=True)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.logger = pb_utils.Logger
        self.engine = WhisperEngine(EngineOptions.from_parameters(params))
        self.vad_session = load_session()
        self.min_speech_s = float(params.get("min_speech_s") or 0.2)
        self.logger.log_info(f"asr_offline ready: {args['model_instance_name']}")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                audio = pb_utils.get_input_tensor_by_name(request, "AUDIO").as_numpy().reshape(-1)
                responses.append(self._response(self._recognize(audio.astype(np.float32) / 32768.0)))
            except Exception as exc:  # one bad request must not kill the instance
                self.logger.log_error(f"asr_offline request failed: {exc!r}")
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"asr_offline: {exc}")))
        return responses

    def _recognize(self, audio):
        if audio.size == 0:
            return _EMPTY
        probs = speech_probabilities(self.vad_session, audio)
        speech_s = float(np.count_nonzero(probs >= 0.5)) * WINDOW / SAMPLE_RATE
        if speech_s < self.min_speech_s:
            return _EMPTY
        return self.engine.transcribe(audio, final=True) or _EMPTY

    @staticmethod
    def _response(hyp):
        words = json.dumps([w.as_json() for w in hyp.words], separators=(",", ":"))
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("TRANSCRIPT", np.array([hyp.text.encode()], dtype=np.object_)),
                pb_utils.Tensor("IS_FINAL", np.array([True], dtype=np.bool_)),
                pb_utils.Tensor("WORDS", np.array([words.encode()], dtype=np.object_)),
                pb_utils.Tensor("CONFIDENCE", np.array([hyp.confidence], dtype=np.float32)),
            ]
        )
