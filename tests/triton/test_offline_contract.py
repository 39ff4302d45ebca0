"""The offline tensor contract, held against every offline model of ours.

    .venv/triton/bin/python -m unittest discover -s tests/triton -p 'test_*.py' -v

Each model's real `model.py` (riva/triton/models/asr_offline, Whisper on CPU, and
riva/triton/gpu-models/asr_glm_nano, GLM-ASR-Nano-2512 on GPU) runs the same tests with
the same inputs: tensor names, dtypes and shapes out, empty audio, contract violations and
a failing recogniser answered by error responses while the batch and the instance carry on.

What is replaced, and why: Triton's `triton_python_backend_utils` by `FakePbUtils` (the
module exists only inside a Triton server), and each model's weights-dependent recogniser
(`load_recognizer`) by `ScriptedRecognizerDouble`. For GLM-ASR-Nano that double is the
only way to run here (no GPU, no model hub): these tests prove the contract code and our
glue around the transformers API (`GlmEngineGlueTest`, with doubles of the processor and
model), not the real model's output. asr_offline's real recogniser is exercised end to end
by tests/triton/smoke.py and the gateway's tests against the local Triton.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types
import unittest
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "riva" / "triton" / "lib"))

from sgw_asr.engine import Hypothesis, Word  # noqa: E402
from sgw_asr.glm import GlmEngine, GlmOptions  # noqa: E402

MODELS = {
    "asr_offline": ROOT / "riva/triton/models/asr_offline",
    "asr_glm_nano": ROOT / "riva/triton/gpu-models/asr_glm_nano",
}


# --- Stand-in for triton_python_backend_utils -------------------------------------------


class FakeTensor:
    def __init__(self, name, array):
        self._name = name
        self._array = array

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array


class FakeError:
    def __init__(self, message):
        self._message = message

    def message(self):
        return self._message


class FakeResponse:
    def __init__(self, output_tensors=None, error=None):
        self.output_tensors = output_tensors or []
        self.error = error


class FakeLogger:
    lines: list[str] = []

    @classmethod
    def log_info(cls, msg):
        cls.lines.append(msg)

    log_warn = log_error = log_info


def fake_pb_utils() -> types.ModuleType:
    mod = types.ModuleType("triton_python_backend_utils")
    mod.Tensor = FakeTensor
    mod.TritonError = FakeError
    mod.InferenceResponse = FakeResponse
    mod.Logger = FakeLogger

    def get_input_tensor_by_name(request, name):
        return request.get(name)

    mod.get_input_tensor_by_name = get_input_tensor_by_name
    return mod


FakePbUtils = fake_pb_utils()
sys.modules["triton_python_backend_utils"] = FakePbUtils


def load_model_class(name: str):
    path = MODELS[name] / "1" / "model.py"
    spec = importlib.util.spec_from_file_location(f"sgw_model_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TritonPythonModel


# --- The weights-dependent part, replaced -------------------------------------------------


class ScriptedRecognizerDouble:
    """TEST DOUBLE of a model's recogniser: no weights. Hears "speech" in any sample above
    0.1 full scale, answers a fixed final, and raises on a NaN-free marker (all samples
    equal to -32768) so the failure path can be driven."""

    def __init__(self):
        self.calls: list[np.ndarray] = []

    def __call__(self, audio):
        self.calls.append(audio)
        if audio.size and np.all(audio == -1.0):
            raise RuntimeError("scripted recogniser failure")
        if not np.any(np.abs(audio) > 0.1):
            return None
        return Hypothesis(
            text="hello world",
            confidence=0.9,
            is_final=True,
            words=[Word("hello", 0.1, 0.4, 0.95), Word("world", 0.5, 0.9, 0.85)],
        )


def instantiate(name: str):
    cls = load_model_class(name)
    double = ScriptedRecognizerDouble()

    class UnderTest(cls):
        def load_recognizer(self, params):
            self.params_seen = params
            return double

    model = UnderTest()
    config = {"parameters": parameters_of_pbtxt(MODELS[name] / "config.pbtxt")}
    model.initialize({"model_config": json.dumps(config), "model_instance_name": f"{name}_0"})
    return model, double


def parameters_of_pbtxt(path: Path) -> dict:
    text = path.read_text()
    return {
        k: {"string_value": v}
        for k, v in re.findall(r'key:\s*"([^"]+)",\s*value:\s*\{\s*string_value:\s*"([^"]*)"', text)
    }


def request(audio) -> dict:
    return {} if audio is None else {"AUDIO": FakeTensor("AUDIO", audio)}


def speech(seconds=1.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (np.sin(2 * np.pi * 220 * t) * 12000).astype(np.int16)


def outputs(resp) -> dict:
    return {t.name(): t.as_numpy() for t in resp.output_tensors}


# --- The shared contract tests -----------------------------------------------------------


class ContractTests:
    """Mixed into one TestCase per model (see the bottom of the file)."""

    model_name: str

    def setUp(self):
        self.model, self.double = instantiate(self.model_name)

    def run_one(self, audio):
        responses = self.model.execute([request(audio)])
        self.assertEqual(len(responses), 1)
        return responses[0]

    def assert_contract_outputs(self, resp):
        self.assertIsNone(resp.error)
        out = outputs(resp)
        self.assertEqual(list(out), ["TRANSCRIPT", "IS_FINAL", "WORDS", "CONFIDENCE"])
        self.assertEqual(out["TRANSCRIPT"].dtype, np.object_)
        self.assertEqual(out["IS_FINAL"].dtype, np.bool_)
        self.assertEqual(out["WORDS"].dtype, np.object_)
        self.assertEqual(out["CONFIDENCE"].dtype, np.float32)
        for value in out.values():
            self.assertEqual(value.shape, (1,))
        self.assertTrue(bool(out["IS_FINAL"][0]))
        out["TRANSCRIPT"][0].decode("utf-8")
        words = json.loads(out["WORDS"][0])
        self.assertIsInstance(words, list)
        for w in words:
            self.assertEqual(set(w), {"word", "start", "end", "confidence"})
        return out

    def test_speech_gives_one_final_with_every_output(self):
        out = self.assert_contract_outputs(self.run_one(speech()))
        self.assertEqual(out["TRANSCRIPT"][0], b"hello world")
        self.assertAlmostEqual(float(out["CONFIDENCE"][0]), 0.9, places=5)
        self.assertEqual([w["word"] for w in json.loads(out["WORDS"][0])], ["hello", "world"])
        # The recogniser got float32 in [-1, 1], not raw INT16.
        self.assertEqual(self.double.calls[-1].dtype, np.float32)
        self.assertLessEqual(float(np.max(np.abs(self.double.calls[-1]))), 1.0)

    def test_empty_audio_is_an_empty_final_without_decoding(self):
        out = self.assert_contract_outputs(self.run_one(np.zeros(0, dtype=np.int16)))
        self.assertEqual(out["TRANSCRIPT"][0], b"")
        self.assertEqual(out["WORDS"][0], b"[]")
        self.assertEqual(float(out["CONFIDENCE"][0]), 0.0)
        self.assertEqual(self.double.calls, [])

    def test_nothing_heard_is_an_empty_final(self):
        out = self.assert_contract_outputs(self.run_one(np.zeros(16000, dtype=np.int16)))
        self.assertEqual(out["TRANSCRIPT"][0], b"")
        self.assertEqual(out["WORDS"][0], b"[]")

    def test_batched_shape_one_by_n_is_accepted(self):
        out = self.assert_contract_outputs(self.run_one(speech().reshape(1, -1)))
        self.assertEqual(out["TRANSCRIPT"][0], b"hello world")

    def test_contract_violations_are_error_responses(self):
        for bad, why in (
            (None, "missing"),
            (speech().astype(np.float32), "INT16"),
            (np.stack([speech(), speech()]), "shape"),
        ):
            resp = self.run_one(bad)
            self.assertIsNotNone(resp.error, why)
            self.assertEqual(resp.output_tensors, [])
            self.assertIn(self.model_name, resp.error.message())
            self.assertIn(why, resp.error.message())

    def test_a_failing_request_does_not_spoil_the_batch_or_the_instance(self):
        failing = np.full(8000, -32768, dtype=np.int16)
        responses = self.model.execute([request(speech()), request(failing), request(speech())])
        self.assertEqual(len(responses), 3)
        self.assert_contract_outputs(responses[0])
        self.assertIn("scripted recogniser failure", responses[1].error.message())
        self.assert_contract_outputs(responses[2])
        self.assert_contract_outputs(self.run_one(speech()))


class OfflineContractAsrOffline(ContractTests, unittest.TestCase):
    model_name = "asr_offline"


class OfflineContractAsrGlmNano(ContractTests, unittest.TestCase):
    model_name = "asr_glm_nano"


class ModelConfigsAgree(unittest.TestCase):
    """Both config.pbtxt declare the same contract; only names and parameters differ."""

    @staticmethod
    def io_blocks(path: Path) -> str:
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        blocks = re.findall(r"^(input|output) \[.*?^\]", text, flags=re.S | re.M)
        body = re.search(r"^input \[.*?^\]\s*output \[.*?^\]", text, flags=re.S | re.M)
        assert blocks and body, path
        return re.sub(r"\s+", " ", body.group(0))

    def test_inputs_and_outputs_are_identical(self):
        a, b = (self.io_blocks(p / "config.pbtxt") for p in MODELS.values())
        self.assertEqual(a, b)
        for p in MODELS.values():
            text = (p / "config.pbtxt").read_text()
            self.assertIn("max_batch_size: 0", text)
            self.assertNotIn("decoupled", text)
            self.assertIn(f'name: "{p.name}"', text)


# --- GLM-ASR glue around transformers, with doubles ---------------------------------------


class FakeBatch(dict):
    """TEST DOUBLE of transformers' BatchFeature: a dict with `.to()`."""

    def to(self, device, dtype=None):
        self.moved_to = (device, dtype)
        return self


class FakeGlmProcessorDouble:
    """TEST DOUBLE of the GLM-ASR processor: records the audio, a 3-token prompt."""

    def __init__(self):
        self.audio = None

    def apply_transcription_request(self, audio):
        self.audio = audio
        return FakeBatch(input_ids=np.zeros((1, 3), dtype=np.int64))

    def batch_decode(self, tokens, skip_special_tokens):
        assert skip_special_tokens
        return [" " + " ".join(f"tok{int(t)}" for t in tokens[0])]


class FakeGlmModelDouble:
    """TEST DOUBLE of GlmAsrForConditionalGeneration: prompt + two tokens, p = 0.5 each."""

    device = "cuda:0"
    dtype = "bfloat16"

    def __init__(self):
        self.generate_kwargs = None

    def generate(self, **kwargs):
        self.generate_kwargs = kwargs
        return types.SimpleNamespace(sequences=np.array([[0, 0, 0, 7, 9]]), scores=("s1", "s2"))

    def compute_transition_scores(self, sequences, scores, normalize_logits):
        assert normalize_logits and len(scores) == 2
        return np.log(np.array([[0.5, 0.5]]))


class GlmEngineGlueTest(unittest.TestCase):
    def setUp(self):
        self.processor = FakeGlmProcessorDouble()
        self.model = FakeGlmModelDouble()
        self.engine = GlmEngine(self.processor, self.model, GlmOptions(max_new_tokens=99))

    def test_decodes_only_the_tokens_after_the_prompt(self):
        audio = speech().astype(np.float32) / 32768.0
        hyp = self.engine(audio)
        self.assertIs(self.processor.audio, audio)
        self.assertEqual(hyp.text, "tok7 tok9")
        self.assertTrue(hyp.is_final)
        self.assertEqual(hyp.words, [])
        self.assertAlmostEqual(hyp.confidence, 0.5, places=6)
        self.assertAlmostEqual(hyp.audio_end, 1.0)
        kwargs = self.model.generate_kwargs
        self.assertFalse(kwargs["do_sample"])
        self.assertEqual(kwargs["max_new_tokens"], 99)
        self.assertIn("input_ids", kwargs)

    def test_too_short_audio_is_not_decoded(self):
        self.assertIsNone(self.engine(np.zeros(1600, dtype=np.float32)))
        self.assertIsNone(self.processor.audio)

    def test_options_come_from_the_config_parameters(self):
        params = {k: v["string_value"] for k, v in parameters_of_pbtxt(MODELS["asr_glm_nano"] / "config.pbtxt").items()}
        opts = GlmOptions.from_parameters(params)
        self.assertEqual(opts.model_id, "zai-org/GLM-ASR-Nano-2512")
        self.assertEqual(opts.max_new_tokens, 256)


if __name__ == "__main__":
    unittest.main()
