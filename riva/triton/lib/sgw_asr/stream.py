"""One streaming recognition sequence: accumulate audio, endpoint, emit partials and finals.

Invariants:
- the buffer holds only the current utterance (plus a short pre-roll of silence), so the
  work per chunk is bounded by `max_utterance_s` however long the stream runs;
- a final covers the buffer up to a cut point and that audio is then dropped, so finals
  never overlap (append-only), and partials only ever describe the current utterance;
- no text is decoded for an utterance with less than `min_speech_s` of VAD speech.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .engine import SAMPLE_RATE, Hypothesis
from .vad import WINDOW, StreamingVad


@dataclass
class StreamOptions:
    endpoint_silence_s: float = 0.5
    first_partial_s: float = 0.6
    partial_interval_s: float = 1.0
    max_utterance_s: float = 20.0
    preroll_s: float = 0.3
    min_speech_s: float = 0.2
    speech_threshold: float = 0.5
    # Hysteresis: once in speech, a window stays speech down to this probability.
    speech_hold_threshold: float = 0.35

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> "StreamOptions":
        out = cls()
        for name in cls.__dataclass_fields__:
            if params.get(name):
                setattr(out, name, float(params[name]))
        return out


class StreamSession:
    """Feeds a `WhisperEngine`-like object (`transcribe(audio, final=, offset_s=)`)."""

    def __init__(self, engine, vad_session, options: StreamOptions | None = None) -> None:
        self.engine = engine
        self.opt = options or StreamOptions()
        self.vad = StreamingVad(vad_session)
        self.total = 0  # samples received since sequence start
        self.buf = np.zeros(0, dtype=np.float32)
        self.buf_start = 0  # absolute sample index of buf[0]
        self.windows = 0  # VAD windows processed (window k starts at k*WINDOW)
        self.voiced: list[bool] = []  # per window, only for windows >= self.voiced_base
        self.voiced_base = 0
        self.in_speech = False
        self.speech_windows = 0  # voiced windows in the current utterance
        self.last_voice_end = 0  # absolute sample index just past the last voiced window
        self.partial_due = 0  # absolute sample index at which the next partial is due

    # ----- public -----

    def push(self, pcm16: np.ndarray) -> list[Hypothesis]:
        audio = pcm16.astype(np.float32) / 32768.0
        self.buf = np.concatenate([self.buf, audio])
        self.total += audio.size
        for p in self.vad.push(audio):
            self._window(float(p))

        if self.speech_windows == 0:
            self._trim_to_preroll()
            return []

        out: list[Hypothesis] = []
        silence = self.total - self.last_voice_end
        if silence >= self._s(self.opt.endpoint_silence_s):
            out += self._finalize(self.total, keep_tail=True)
        elif self.buf.size >= self._s(self.opt.max_utterance_s):
            out += self._finalize(self._cut_point(), keep_tail=False)
        elif self.total >= self.partial_due and self._speech_s() >= self.opt.min_speech_s:
            hyp = self._decode(self.buf, final=False)
            self.partial_due = self.total + self._s(self.opt.partial_interval_s)
            if hyp is not None:
                out.append(hyp)
        return out

    def finish(self) -> list[Hypothesis]:
        """Sequence end: finalise whatever is pending."""
        if self.speech_windows == 0:
            return []
        return self._finalize(self.total, keep_tail=False)

    # ----- internals -----

    @staticmethod
    def _s(seconds: float) -> int:
        return int(seconds * SAMPLE_RATE)

    def _window(self, prob: float) -> None:
        k = self.windows
        self.windows += 1
        threshold = self.opt.speech_hold_threshold if self.in_speech else self.opt.speech_threshold
        voiced = prob >= threshold
        self.in_speech = voiced
        self.voiced.append(voiced)
        if voiced:
            if self.speech_windows == 0:
                self.partial_due = (k + 1) * WINDOW + self._s(self.opt.first_partial_s)
            self.speech_windows += 1
            self.last_voice_end = (k + 1) * WINDOW

    def _trim_to_preroll(self) -> None:
        keep = self._s(self.opt.preroll_s)
        if self.buf.size > keep:
            drop = self.buf.size - keep
            self.buf = self.buf[drop:]
            self.buf_start += drop
            self._forget_windows_before(self.buf_start)

    def _forget_windows_before(self, sample: int) -> None:
        first = sample // WINDOW
        if first > self.voiced_base:
            del self.voiced[: first - self.voiced_base]
            self.voiced_base = first

    def _cut_point(self) -> int:
        """Absolute sample at which to split an over-long utterance: the end of the longest
        run of unvoiced windows in its last quarter, else the end of the buffer."""
        end_abs = self.total
        search_from = self.buf_start + (self.buf.size * 3) // 4
        best_len, best_end, run = 0, end_abs, 0
        for k in range(max(search_from // WINDOW, self.voiced_base), self.voiced_base + len(self.voiced)):
            if not self.voiced[k - self.voiced_base]:
                run += 1
                if run >= best_len:
                    best_len, best_end = run, (k + 1) * WINDOW
            else:
                run = 0
        return best_end if best_len > 0 else end_abs

    def _speech_s(self) -> float:
        return self.speech_windows * WINDOW / SAMPLE_RATE

    def _finalize(self, cut_abs: int, *, keep_tail: bool) -> list[Hypothesis]:
        """Decode buf up to `cut_abs` as a final and drop it. `keep_tail` keeps the last
        pre-roll of the decoded audio; only for an endpoint, where that tail is silence."""
        cut = max(0, min(self.buf.size, cut_abs - self.buf_start))
        hyp = None
        if self._speech_s() >= self.opt.min_speech_s:
            hyp = self._decode(self.buf[:cut], final=True)
        rest = self.buf[cut:]
        rest_start = self.buf_start + cut
        keep = self._s(self.opt.preroll_s)
        if keep_tail and rest.size == 0 and keep > 0:
            rest = self.buf[-keep:]
            rest_start = self.total - rest.size
        self.buf = rest.copy()
        self.buf_start = rest_start
        self._forget_windows_before(self.buf_start)
        self.speech_windows = sum(1 for k, v in enumerate(self.voiced) if v and (self.voiced_base + k) * WINDOW >= self.buf_start)
        if self.speech_windows:
            self.partial_due = self.total + self._s(self.opt.partial_interval_s)
        return [hyp] if hyp is not None else []

    def _decode(self, audio: np.ndarray, *, final: bool) -> Hypothesis | None:
        return self.engine.transcribe(audio, final=final, offset_s=self.buf_start / SAMPLE_RATE)
