"""Speech recognition for the local Triton back end: Whisper tiny.en via faster-whisper.

Pure Python, no Triton imports, so the logic runs (and is tested) outside the server:
- `engine`: model loading and decoding with hallucination guards;
- `vad`: streaming Silero VAD (the model faster-whisper ships);
- `stream`: per-sequence accumulation, endpointing, partial/final emission.
"""
