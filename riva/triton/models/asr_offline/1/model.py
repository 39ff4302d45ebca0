"""Triton Python backend: offline ASR, one whole utterance per request, one final back.

The tensor contract (inputs, outputs, errors) is `sgw_asr.offline.OfflineModel`, shared
with every offline model; this file only gives the recogniser: Whisper tiny.en, gated by
the Silero VAD (audio with less than `min_speech_s` of speech is not decoded and answers
with an empty transcript). Recognition logic lives in riva/triton/lib/sgw_asr.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "lib"))

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from sgw_asr.offline import OfflineModel  # noqa: E402


class TritonPythonModel(OfflineModel):
    label = "asr_offline"
    pb_utils = pb_utils

    def load_recognizer(self, params):
        from sgw_asr.engine import EngineOptions, WhisperEngine
        from sgw_asr.vad import SAMPLE_RATE, WINDOW, load_session, speech_probabilities

        engine = WhisperEngine(EngineOptions.from_parameters(params))
        vad_session = load_session()
        min_speech_s = float(params.get("min_speech_s") or 0.2)

        def recognize(audio):
            probs = speech_probabilities(vad_session, audio)
            speech_s = float(np.count_nonzero(probs >= 0.5)) * WINDOW / SAMPLE_RATE
            if speech_s < min_speech_s:
                return None
            return engine.transcribe(audio, final=True)

        return recognize
