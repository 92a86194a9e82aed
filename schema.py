"""Job input -> TTSRequest: typed, bounded, unknown fields rejected. Pure; never imports torch.

Each field is declared once in FIELDS with its type, bounds, default and description; validation
and the README's input table both come from that table, so they cannot drift apart.

Why not runpod's rp_validator: it accepts booleans as numbers, calls constraint lambdas on values
of the wrong type (a TypeError instead of an error message), lets NaN through and returns
messages without codes. This parser keeps its shape (a schema table) and fixes those.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from errors import InvalidInput, TextTooLong, UnsupportedFormat

MAX_TEXT_CHARS = 5000
MAX_REF_AUDIO_B64_CHARS = 14_000_000  # about 10 MB of audio once decoded
MAX_SEED = 2**31 - 1
FORMATS = ("wav", "flac", "mp3", "ogg", "opus", "pcm")


@dataclass(frozen=True)
class Field:
    name: str
    kind: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    max_len: int | None = None
    required: bool = False


FIELDS: tuple[Field, ...] = (
    Field("text", str, None, "Text to speak.", max_len=MAX_TEXT_CHARS, required=True),
    Field(
        "ref_audio",
        str,
        None,
        "Reference voice: base64-encoded audio (WAV, FLAC, OGG, MP3).",
        max_len=MAX_REF_AUDIO_B64_CHARS,
    ),
    Field("ref_text", str, None, "Transcript of `ref_audio`; required with it.", max_len=1000),
    Field("format", str, "wav", "Output audio format.", choices=FORMATS),
    Field(
        "seed",
        int,
        None,
        "Random seed; the same seed and input give the same audio.",
        low=0,
        high=MAX_SEED,
    ),
    Field("nfe_step", int, 32, "Flow-matching steps: more is slower and cleaner.", low=1, high=64),
    Field("speed", float, 1.0, "Speaking rate.", low=0.3, high=3.0),
    Field("cfg_strength", float, 2.0, "Classifier-free guidance strength.", low=0.0, high=10.0),
    Field("sway_sampling_coef", float, -1.0, "Sway sampling coefficient.", low=-1.0, high=1.0),
    Field(
        "cross_fade_duration",
        float,
        0.15,
        "Seconds of cross-fade between text chunks.",
        low=0.0,
        high=1.0,
    ),
)
_BY_NAME = {f.name: f for f in FIELDS}


@dataclass(frozen=True)
class TTSRequest:
    text: str
    ref_audio: str | None = None
    ref_text: str | None = None
    format: str = "wav"
    seed: int | None = None
    nfe_step: int = 32
    speed: float = 1.0
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
    cross_fade_duration: float = 0.15


def parse_request(raw: Any) -> TTSRequest:
    """Validate a job's `input`; raise a coded InvalidInput subclass on the first problem."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("input must be a JSON object")
    unknown = sorted(str(k)[:40] for k in raw if k not in _BY_NAME)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    values = {f.name: _field_value(f, raw) for f in FIELDS}
    if not values["text"].strip():
        raise InvalidInput("text must not be empty")
    if values["ref_audio"] is not None and not (values["ref_text"] or "").strip():
        raise InvalidInput(
            "ref_text is required with ref_audio (automatic transcription is not available)"
        )
    return TTSRequest(**values)


def _field_value(f: Field, raw: Mapping[str, Any]) -> Any:
    if f.name not in raw or raw[f.name] is None:
        if f.required:
            raise InvalidInput(f"{f.name} is required")
        return f.default
    value = _coerce(f, raw[f.name])
    if f.choices is not None:
        value = value.strip().lower()
    _check_bounds(f, value)
    return value


def _coerce(f: Field, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidInput(f"{f.name} must be {_type_name(f.kind)}")
    if f.kind is str:
        if not isinstance(value, str):
            raise InvalidInput(f"{f.name} must be a string")
        return value
    if isinstance(value, str):
        raise InvalidInput(f"{f.name} must be {_type_name(f.kind)}")
    if not math.isfinite(value):
        raise InvalidInput(f"{f.name} must be a finite number")
    if f.kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise InvalidInput(f"{f.name} must be an integer")
        return int(value)
    return float(value)


def _check_bounds(f: Field, value: Any) -> None:
    if f.max_len is not None and len(value) > f.max_len:
        error = TextTooLong if f.name == "text" else InvalidInput
        raise error(f"{f.name} is longer than {f.max_len} characters")
    if f.choices is not None and value not in f.choices:
        error = UnsupportedFormat if f.name == "format" else InvalidInput
        raise error(f"{f.name} must be one of {', '.join(f.choices)}")
    if (f.low is not None and value < f.low) or (f.high is not None and value > f.high):
        raise InvalidInput(f"{f.name} must be between {f.low:g} and {f.high:g}")


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number"}[kind]


def fields_markdown() -> str:
    """The README's input table, generated from FIELDS."""
    rows = ["| field | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for f in FIELDS:
        if f.choices:
            bounds = ", ".join(f.choices)
        elif f.low is not None:
            bounds = f"{f.low:g} .. {f.high:g}"
        elif f.max_len:
            bounds = f"<= {f.max_len} chars"
        else:
            bounds = ""
        default = "required" if f.required else ("-" if f.default is None else f"`{f.default}`")
        rows.append(f"| `{f.name}` | {f.kind.__name__} | {default} | {bounds} | {f.doc} |")
    return "\n".join(rows)
