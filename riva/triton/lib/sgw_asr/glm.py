"""GLM-ASR-Nano-2512 (zai-org/GLM-ASR-Nano-2512) through Hugging Face transformers, on GPU.

How it is loaded and called is what the transformers documentation of the `glmasr` model
type shows (transformers >= 5; the model type is not in 4.x): `AutoProcessor` and
`GlmAsrForConditionalGeneration.from_pretrained(model_id, dtype="auto", device_map="auto")`,
`processor.apply_transcription_request(audio)` (NumPy arrays are passed through; the
processor's default sampling rate is 16 kHz), `model.generate(**inputs, do_sample=False,
max_new_tokens=...)`, then `processor.batch_decode` of the tokens after the prompt.

Limits, stated plainly: GLM-ASR gives text only, so `WORDS` is `[]`; `CONFIDENCE` is the
mean probability of the generated tokens (from `compute_transition_scores`). This code was
written against that documented API and tested here with test doubles of the processor
and model (tests/triton/test_offline_contract.py); the real weights (about 4.5 GB) were
never run on this project's machines, which have no GPU and no model hub.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .engine import SAMPLE_RATE, Hypothesis

DEFAULT_MODEL_ID = "zai-org/GLM-ASR-Nano-2512"


@dataclass
class GlmOptions:
    model_id: str = DEFAULT_MODEL_ID
    max_new_tokens: int = 256
    # Audio shorter than this is not decoded (the gateway's VAD already drops bursts
    # under 200 ms; this keeps a stray short request from making the model guess).
    min_audio_s: float = 0.2

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> "GlmOptions":
        out = cls()
        if params.get("model_id"):
            out.model_id = params["model_id"]
        if params.get("max_new_tokens"):
            out.max_new_tokens = int(params["max_new_tokens"])
        if params.get("min_audio_s"):
            out.min_audio_s = float(params["min_audio_s"])
        return out


class GlmEngine:
    """Turns one utterance (float32, 16 kHz, mono) into one final."""

    def __init__(self, processor: Any, model: Any, options: GlmOptions, torch: Any = None) -> None:
        self.processor = processor
        self.model = model
        self.options = options
        self._torch = torch

    @classmethod
    def load(cls, options: GlmOptions) -> "GlmEngine":
        import torch
        from transformers import AutoProcessor, GlmAsrForConditionalGeneration

        processor = AutoProcessor.from_pretrained(options.model_id)
        model = GlmAsrForConditionalGeneration.from_pretrained(
            options.model_id, dtype="auto", device_map="auto"
        )
        model.eval()
        return cls(processor, model, options, torch)

    def _no_grad(self):
        return self._torch.inference_mode() if self._torch is not None else contextlib.nullcontext()

    def __call__(self, audio: np.ndarray) -> Hypothesis | None:
        if audio.size < self.options.min_audio_s * SAMPLE_RATE:
            return None
        inputs = self.processor.apply_transcription_request(audio)
        inputs = inputs.to(self.model.device, dtype=self.model.dtype)
        prompt_len = inputs["input_ids"].shape[1]
        with self._no_grad():
            out = self.model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=self.options.max_new_tokens,
                return_dict_in_generate=True,
                output_scores=True,
            )
        text = self.processor.batch_decode(out.sequences[:, prompt_len:], skip_special_tokens=True)[0].strip()
        if not text:
            return None
        scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        logprobs = [float(x) for x in np.asarray(_to_numpy(scores[0])).reshape(-1) if math.isfinite(float(x))]
        confidence = float(np.exp(np.mean(logprobs))) if logprobs else 0.0
        return Hypothesis(
            text=text,
            confidence=confidence,
            is_final=True,
            audio_start=0.0,
            audio_end=audio.size / SAMPLE_RATE,
        )


def _to_numpy(t: Any) -> Any:
    """A torch tensor (possibly bf16 on GPU) or anything array-like, as NumPy."""
    if hasattr(t, "detach"):
        return t.detach().float().cpu().numpy()
    return t
