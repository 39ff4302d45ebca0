"""The offline tensor contract, shared by every offline model of ours.

One request is one whole utterance; one response is one final. Every offline model
(`asr_offline`, Whisper on CPU; `asr_glm_nano`, GLM-ASR-Nano-2512 on GPU) is this class
plus a `load_recognizer` that returns its recogniser, so the tensors, their checks and the
error behaviour are the same code, and one test suite (tests/triton/test_offline_contract.py)
holds every model to them:

- input `AUDIO`, INT16, `[N]` (or `[1, N]`): 16 kHz mono PCM16, N may be 0;
- outputs `TRANSCRIPT` BYTES `[1]` (UTF-8, empty when nothing was heard), `IS_FINAL` BOOL
  `[1]` (always true), `WORDS` BYTES `[1]` (JSON list of {word, start, end, confidence},
  seconds from the start of the request audio; `[]` when the model gives no word times),
  `CONFIDENCE` FP32 `[1]` (0 when nothing was heard);
- a request that breaks the contract (no AUDIO, not INT16, more than one row) or whose
  recognition raises gets an error response; the other requests of the batch and the
  instance carry on.

Pure Python: `pb_utils` (Triton's `triton_python_backend_utils`) is passed in, so tests
can run the whole path with a stand-in.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Protocol

import numpy as np

from .engine import Hypothesis

INPUT = "AUDIO"
OUTPUTS = (
    ("TRANSCRIPT", np.object_),
    ("IS_FINAL", np.bool_),
    ("WORDS", np.object_),
    ("CONFIDENCE", np.float32),
)

EMPTY = Hypothesis(text="", confidence=0.0, is_final=True)


class ContractError(ValueError):
    """The request does not follow the tensor contract (a client fault)."""


class Recognizer(Protocol):
    def __call__(self, audio: np.ndarray) -> Hypothesis | None:
        """float32 16 kHz mono audio in [-1, 1] -> a final, or None when nothing was heard."""


def audio_of(array: np.ndarray | None) -> np.ndarray:
    """Validates the AUDIO tensor and returns it as float32 in [-1, 1]."""
    if array is None:
        raise ContractError("input AUDIO is missing")
    if array.dtype != np.int16:
        raise ContractError(f"input AUDIO must be INT16, got {array.dtype}")
    if array.ndim == 2 and array.shape[0] == 1:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise ContractError(f"input AUDIO must be [N] or [1, N], got shape {list(array.shape)}")
    return array.astype(np.float32) / 32768.0


def output_arrays(hyp: Hypothesis) -> list[tuple[str, np.ndarray]]:
    """The four output tensors of a final, in contract order."""
    words = json.dumps([w.as_json() for w in hyp.words], separators=(",", ":"))
    return [
        ("TRANSCRIPT", np.array([hyp.text.encode()], dtype=np.object_)),
        ("IS_FINAL", np.array([True], dtype=np.bool_)),
        ("WORDS", np.array([words.encode()], dtype=np.object_)),
        ("CONFIDENCE", np.array([hyp.confidence], dtype=np.float32)),
    ]


def parameters_of(model_config: dict[str, Any]) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


class OfflineModel:
    """Base of an offline model's `TritonPythonModel`; subclasses give `load_recognizer`."""

    #: The model's name in messages (e.g. "asr_offline").
    label = "offline"
    #: triton_python_backend_utils, set by the model.py that imports it.
    pb_utils: Any = None

    def load_recognizer(self, params: dict[str, str]) -> Recognizer:  # pragma: no cover
        raise NotImplementedError

    def initialize(self, args: dict[str, str]) -> None:
        params = parameters_of(json.loads(args["model_config"]))
        self.recognize: Callable[[np.ndarray], Hypothesis | None] = self.load_recognizer(params)
        self.pb_utils.Logger.log_info(f"{self.label} ready: {args.get('model_instance_name', '?')}")

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb_utils
        responses = []
        for request in requests:
            try:
                tensor = pb.get_input_tensor_by_name(request, INPUT)
                audio = audio_of(None if tensor is None else tensor.as_numpy())
                hyp = (self.recognize(audio) if audio.size else None) or EMPTY
                tensors = [pb.Tensor(name, value) for name, value in output_arrays(hyp)]
                responses.append(pb.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one bad request must not kill the instance
                kind = "invalid request" if isinstance(exc, ContractError) else "request failed"
                pb.Logger.log_error(f"{self.label} {kind}: {exc!r}")
                responses.append(pb.InferenceResponse(error=pb.TritonError(f"{self.label}: {exc}")))
        return responses

    def finalize(self) -> None:
        pass
