"""OpenAI's speech events (`stream_format: "sse"`): `speech.audio.delta` carries base64 audio,
`speech.audio.done` ends the stream with usage. Events are `data:` lines with a `type` field,
as OpenAI sends them.

Usage counts what F5-TTS has instead of tokens: `input_tokens` is the text's characters and
`output_tokens` the mel frames generated (24000 / 256 = 93.75 per second of audio).
"""

from __future__ import annotations

import base64
import json
from typing import Any

MEL_HOP = 256  # samples per mel frame at the model's 24 kHz


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def delta(audio: bytes) -> bytes:
    return event({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode()})


def done(
    characters: int,
    samples: int,
    ours: dict[str, Any] | None = None,
    beside: dict[str, Any] | None = None,
) -> bytes:
    """The last event: OpenAI's token usage, and beside it the worker's own usage fields
    (job/usage.py: characters, audio_s, steps, engine_s, rtf, first_audio_s, ...); `beside`:
    fields of the event itself (a sent reference's `ref_text_used`, never in a header)."""
    frames = samples // MEL_HOP
    usage = {
        "input_tokens": characters,
        "output_tokens": frames,
        "total_tokens": characters + frames,
    } | (ours or {})
    return event({"type": "speech.audio.done", "usage": usage} | (beside or {}))


def error(code: str, message: str) -> bytes:
    """A failure after the stream began (the status is already 200)."""
    return event({"type": "error", "error": {"code": code, "message": message}})
