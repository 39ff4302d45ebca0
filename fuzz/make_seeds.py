#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (committed; rerun after a contract change).

Seeds are well-formed inputs the fuzzer mutates from: contract messages, valid and invalid
audio frames, and protobuf responses shaped like the ones Riva and Triton send. Protobuf is
encoded by hand (a few lines) so that no protobuf package is needed.
"""
import math
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"


def write(target, name, data):
    d = ROOT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


# ---- client_message: text frames of the v1 contract
for name, text in {
    "start": '{"type":"start","config":{"language":"auto","interim_results":true,"punctuate":true,"profanity_filter":false}}',
    "start_full": '{"type":"start","config":{"sample_rate":8000,"encoding":"pcm_s16le","word_timestamps":false,'
    '"model":"Offline","endpointing_ms":700,"language":"de-DE","custom_configuration":{"a":"b","n":3,"t":true}}}',
    "start_bad": '{"type":"start","config":{"sample_rate":"16k","encoding":"opus"}}',
    "end": '{"type":"end"}',
    "ping": '{"type":"ping","timestamp":1702483200000}',
    "unknown": '{"type":"dance","config":null}',
    "junk": "hello [1,2] {",
    # found by fuzzing: a float timestamp the default serde_json parser read 1 ulp off
    "regress_float_ping": '{"type":"ping","timestamp":1.5555555255555555e+32}',
}.items():
    write("client_message", name, text)


# ---- audio_frame: 8 settings bytes, then the frame
def frame_input(rate, backend_index, max_frame_ms, split, frame_no, frame):
    head = struct.pack("<HBHHB", rate - 8000, backend_index, max_frame_ms - 10, split, frame_no)
    return head + frame


def sine(n, hz=440, rate=16000):
    return b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * hz * i / rate))) for i in range(n)
    )


write("audio_frame", "16k_10ms", frame_input(16000, 1, 1000, 37, 0, sine(160)))
write("audio_frame", "44k1_to_8k", frame_input(44100, 0, 500, 100, 1, sine(441, rate=44100)))
write("audio_frame", "8k_to_48k", frame_input(8000, 5, 20, 3, 2, sine(160, rate=8000)))
write("audio_frame", "odd", frame_input(16000, 1, 1000, 0, 3, sine(10) + b"\x01"))
# found by fuzzing: the 8 settings bytes read as a frame length of ~2^61 overflowed bytes_to_ms
write("audio_frame", "regress_huge_len", bytes([0x40, 0x1F, 0x01, 0xDE, 0x03, 0x00, 0x00, 0x03]))
write("audio_frame", "too_long", frame_input(48000, 1, 10, 0, 4, sine(481, rate=48000)))


# ---- protobuf, by hand
def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, wire, payload):
    return varint(num << 3 | wire) + payload


def vint(num, n):
    return field(num, 0, varint(n))


def f32(num, x):
    return field(num, 5, struct.pack("<f", x))


def ld(num, data):
    data = data.encode() if isinstance(data, str) else data
    return field(num, 2, varint(len(data)) + data)


# Riva StreamingRecognizeResponse
def word(w, start, end, conf):
    return vint(1, start) + vint(2, end) + ld(3, w) + f32(4, conf)


def alternative(text, conf, words):
    return ld(1, text) + f32(2, conf) + b"".join(ld(3, w) for w in words)


def result(alt, is_final, stability, channel, processed):
    return ld(1, alt) + vint(2, int(is_final)) + f32(3, stability) + vint(5, channel) + f32(6, processed)


partial = result(alternative(" hello wor", 0.0, []), False, 0.1, 0, 0.8)
final = result(
    alternative(" hello world ", 0.93, [word("hello", 100, 400, 0.9), word("world", 500, 450, 0.8)]),
    True, 0.0, 1, 1.25,
)
write("riva_response", "partial", ld(1, partial))
write("riva_response", "final_two_results", ld(1, final) + ld(1, partial))
write("riva_response", "other_channel", ld(1, result(alternative("x", 0.5, []), True, 0, 2, 2.0)))
write("riva_response", "empty", b"")


# Triton ModelStreamInferResponse (first byte: id of the sequence_end request)
def bytes_tensor(*items):
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def param_bool(key, b):
    return ld(1, key) + ld(2, vint(1, int(b)))  # map entry: key, InferParameter{bool_param}


def output(name, dtype):
    return ld(1, name) + ld(2, dtype) + vint(3, 1)


def infer_response(rid, outputs, raws, final_response):
    msg = ld(1, "asr_stream") + ld(3, rid)
    if final_response:
        msg += ld(4, param_bool("triton_final_response", True))
    msg += b"".join(ld(5, o) for o in outputs) + b"".join(ld(6, r) for r in raws)
    return msg


words = b'[{"word":"hello","start":0.12,"end":0.5,"confidence":0.9},{"word":" world","start":0.6,"end":0.55}]'
full = infer_response(
    "3",
    [output("TRANSCRIPT", "BYTES"), output("IS_FINAL", "BOOL"), output("WORDS", "BYTES"), output("CONFIDENCE", "FP32")],
    [bytes_tensor(b" hello world "), b"\x01", bytes_tensor(words), struct.pack("<f", 0.75)],
    True,
)
write("triton_response", "final_result", b"\x07" + ld(2, full))
write("triton_response", "completion", b"\x07" + ld(2, infer_response("5", [], [], True)))
write("triton_response", "end_of_stream", b"\x07" + ld(2, infer_response("7", [], [], True)))
write("triton_response", "model_error", b"\x07" + ld(1, "model failed: out of memory"))
write("triton_response", "truncated_tensor", b"\x07" + ld(2, infer_response(
    "4", [output("TRANSCRIPT", "BYTES"), output("IS_FINAL", "BOOL")], [b"\x09\x00\x00\x00a", b"\x00"], False)))


# ---- deepgram_message: text messages of a Deepgram streaming server
for name, text in {
    "final": '{"type":"Results","channel_index":[0,1],"start":1.5,"duration":0.75,"is_final":true,'
    '"speech_final":true,"channel":{"alternatives":[{"transcript":"Hello, world.","confidence":0.9,'
    '"words":[{"word":"hello","punctuated_word":"Hello,","start":1.52,"end":1.9,"confidence":0.8,"speaker":0},'
    '{"word":"world","start":2.0,"end":1.99,"confidence":0.7}]}]},"metadata":{"request_id":"r"}}',
    "interim_empty": '{"type":"Results","start":3.0,"duration":1.0,"is_final":false,'
    '"channel":{"alternatives":[{"transcript":"","words":[]}]}}',
    "metadata": '{"type":"Metadata","request_id":"r","duration":4.0,"channels":1}',
    "error": '{"type":"Error","variant":"x","description":"upstream fault","message":"upstream fault"}',
    "junk": '{"type":"Results","start":"x"',
}.items():
    write("deepgram_message", name, text)

