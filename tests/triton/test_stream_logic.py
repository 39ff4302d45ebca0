"""Unit tests of the streaming logic in riva/triton/lib/sgw_asr, without Triton or models.

    .venv/triton/bin/python -m unittest discover -s tests/triton -v

A scripted VAD (speech = loud window) and a fake engine (records what it was asked to
decode) make endpointing, forced cuts, pre-roll trimming and the bounded buffer exact.
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "riva" / "triton" / "lib"))

from sgw_asr.engine import HALLUCINATIONS, Hypothesis, _norm  # noqa: E402
from sgw_asr.stream import StreamOptions, StreamSession  # noqa: E402

SR = 16_000
CHUNK = 1600  # 100 ms


class LoudnessVad:
    """Stands in for the Silero ONNX session: probability 1 for a loud window, else 0."""

    def run(self, _outputs, feeds):
        windows = feeds["input"][:, 64:]
        probs = (np.sqrt((windows**2).mean(axis=1)) > 0.05).astype(np.float32).reshape(-1, 1)
        return probs, feeds["h"], feeds["c"]


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[bool, float, float]] = []  # (final, start s, end s)

    def transcribe(self, audio, *, final, offset_s=0.0):
        end = offset_s + audio.size / SR
        self.calls.append((final, offset_s, end))
        return Hypothesis(text=f"{offset_s:.2f}-{end:.2f}", confidence=1.0, is_final=final,
                          audio_start=offset_s, audio_end=end)


def speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (np.sin(2 * np.pi * 220 * t) * 12000).astype(np.int16)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.int16)


def feed(session: StreamSession, audio: np.ndarray) -> list[tuple[float, Hypothesis]]:
    """Push in 100 ms chunks; returns (audio time at emission, hypothesis)."""
    out = []
    for i in range(0, audio.size, CHUNK):
        for hyp in session.push(audio[i : i + CHUNK]):
            out.append((session.total / SR, hyp))
    return out


class StreamLogicTest(unittest.TestCase):
    def setUp(self) -> None:
        self.engine = FakeEngine()
        self.session = StreamSession(self.engine, LoudnessVad(), StreamOptions())

    def finals(self, events):
        return [h for _, h in events if h.is_final]

    def test_silence_never_decodes_and_keeps_only_the_preroll(self):
        events = feed(self.session, quiet(30))
        self.assertEqual(events, [])
        self.assertEqual(self.engine.calls, [])
        self.assertLessEqual(self.session.buf.size, int(0.3 * SR) + CHUNK)
        self.assertEqual(self.session.finish(), [])

    def test_utterance_gives_partials_then_one_final_after_the_endpoint(self):
        events = feed(self.session, np.concatenate([quiet(1), speech(2.5), quiet(1.5)]))
        partials = [(t, h) for t, h in events if not h.is_final]
        finals = self.finals(events)
        self.assertGreaterEqual(len(partials), 2)
        self.assertLessEqual(partials[0][0], 1.0 + 0.6 + 0.2)  # first partial ~0.6 s into speech
        self.assertEqual(len(finals), 1)
        final_at = next(t for t, h in events if h.is_final)
        self.assertGreaterEqual(final_at, 3.5 + 0.5)  # endpoint: >= 500 ms of trailing silence
        self.assertLessEqual(final_at, 3.5 + 0.5 + 0.2)
        self.assertLessEqual(finals[0].audio_start, 1.0)
        self.assertGreaterEqual(finals[0].audio_end, 3.5)
        self.assertEqual(self.session.finish(), [])

    def test_sequence_end_finalises_pending_speech(self):
        events = feed(self.session, speech(1.5))
        self.assertEqual(self.finals(events), [])
        finals = self.session.finish()
        self.assertEqual(len(finals), 1)
        self.assertTrue(finals[0].is_final)

    def test_a_click_shorter_than_min_speech_yields_nothing(self):
        events = feed(self.session, np.concatenate([quiet(1), speech(0.1), quiet(2)]))
        self.assertEqual(self.finals(events), [])
        self.assertFalse([c for c in self.engine.calls if c[0]])

    def test_long_speech_is_cut_at_a_pause_and_finals_do_not_overlap(self):
        audio = np.concatenate([speech(17), quiet(0.3), speech(8)])
        events = feed(self.session, audio)
        finals = self.finals(events) + self.session.finish()
        self.assertEqual(len(finals), 2)
        first, second = finals
        self.assertLessEqual(first.audio_end - first.audio_start, 20.0 + 0.1)
        # The cut lands in the 0.3 s pause at 17.0-17.3 s, and no audio is decoded twice.
        self.assertGreaterEqual(first.audio_end, 17.0)
        self.assertLessEqual(first.audio_end, 17.4)
        self.assertAlmostEqual(second.audio_start, first.audio_end, places=3)

    def test_speech_without_pause_is_cut_at_the_window_limit(self):
        finals = self.finals(feed(self.session, speech(45))) + self.session.finish()
        self.assertEqual(len(finals), 3)
        for hyp in finals:
            self.assertLessEqual(hyp.audio_end - hyp.audio_start, 20.0 + 0.1)
        for a, b in zip(finals, finals[1:]):
            self.assertAlmostEqual(b.audio_start, a.audio_end, places=3)

    def test_ten_minute_stream_keeps_the_buffer_bounded(self):
        pattern = np.concatenate([speech(4), quiet(1)])
        max_buf = 0
        finals = 0
        for _ in range(120):  # 10 minutes
            for _, hyp in feed(self.session, pattern):
                finals += hyp.is_final
            max_buf = max(max_buf, self.session.buf.size)
            self.assertLess(len(self.session.voiced), 20 * SR // 512 + 64)
        self.assertEqual(finals, 120)
        self.assertLessEqual(max_buf, int(5.5 * SR))
        # Decoded audio per call never exceeds the utterance (no re-decoding of old audio).
        self.assertLessEqual(max(end - start for _, start, end in self.engine.calls), 5.0)


class HallucinationFilterTest(unittest.TestCase):
    def test_stock_phrases_are_known(self):
        for text in ("Thank you.", " you", "Thanks for watching!", "", "..."):
            self.assertIn(_norm(text), HALLUCINATIONS, text)

    def test_real_text_is_not(self):
        for text in ("Thank you for the report.", "Hello, how are you?"):
            self.assertNotIn(_norm(text), HALLUCINATIONS, text)


if __name__ == "__main__":
    unittest.main()
