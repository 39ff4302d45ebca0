"""Triton Python backend: GLM-ASR-Nano-2512 as an offline model of the gateway's contract.

The tensor contract (inputs, outputs, errors) is `sgw_asr.offline.OfflineModel`, the same
code as the local `asr_offline` model; this file only gives the recogniser
(`sgw_asr.glm.GlmEngine`, transformers on GPU). See riva/triton/README.md, "GLM-ASR-Nano".
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "lib"))

import triton_python_backend_utils as pb_utils  # noqa: E402

from sgw_asr.offline import OfflineModel  # noqa: E402


class TritonPythonModel(OfflineModel):
    label = "asr_glm_nano"
    pb_utils = pb_utils

    def load_recognizer(self, params):
        from sgw_asr.glm import GlmEngine, GlmOptions

        return GlmEngine.load(GlmOptions.from_parameters(params))
