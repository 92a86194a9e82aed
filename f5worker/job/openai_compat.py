"""The OpenAI speech shape -> the native job input. Pure; never imports torch.

RunPod's OpenAI-compatible route (`https://api.runpod.ai/v2/<endpoint>/openai/v1/...`) hands the
worker `{"openai_route": "/v1/audio/speech", "openai_input": {...}}`, the body an OpenAI client
sent. Only the speech route exists for a TTS model; any other route is a coded INVALID_INPUT, so
a chat client pointed here by mistake gets a clear answer instead of a crash.

Mapping: `input` -> text, `voice` -> voice, `response_format` -> format (OpenAI's default mp3),
`speed` -> speed (our bounds apply), `model` -> model, except OpenAI's own model names (tts-1,
tts-1-hd, gpt-4o-mini-tts and their dated snapshots, e.g. gpt-4o-mini-tts-2025-12-15, which the
openai package lists and voice-agent frameworks let their users pick) and `f5-tts`, which mean
the worker's default model, so an unmodified OpenAI client works.
OpenAI's stock voice names ("alloy", ...) use a library voice of that name when there is one and
the default voice otherwise (or the library voice the operator's VOICE_ALIASES maps it to), so an
unmodified OpenAI client works on a worker without a library. OpenAI's custom-voice object,
`{"id": "<name>"}`, names a library voice as the plain string does.
`instructions` is accepted and has no effect: F5-TTS has no text prompt for style; the voice,
its pace and its tone come from the reference clip. Extension fields beside OpenAI's (an
OpenAI client sends them with `extra_body`): `ref_audio`, with `ref_text` or without it (then
transcribed; `ref_language` names its language) for a caller's own voice (`voice`, which OpenAI
clients always send, is then ignored), `seed`, `quality` and `verify` (each chunk checked by
the ASR companion before it is sent), with their native meaning and bounds.

The HTTP mode's `POST /v1/audio/speech` takes the same body (speech_to_native); its
`stream_format` is a property of the HTTP response and is handled there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from f5worker.errors import InvalidInput, UnsupportedFormat, describe_names

SPEECH_ROUTE = "/v1/audio/speech"
ROUTE_KEYS = ("openai_route", "openai_input")
OPENAI_VOICES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "cedar",
        "coral",
        "echo",
        "fable",
        "marin",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
    }
)
# OpenAI response_format -> our format (the same names).
OPENAI_FORMATS = {f: f for f in ("mp3", "opus", "aac", "flac", "wav", "pcm")}
OPENAI_DEFAULT_FORMAT = "mp3"
# OpenAI's model names and our generic one: the worker's default model. OpenAI publishes dated
# snapshots beside each name (tts-1-1106, gpt-4o-mini-tts-2025-12-15): a client pinned to one
# must not get MODEL_NOT_FOUND.
DEFAULT_MODEL_NAMES = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts", "f5-tts"})
_SNAPSHOT = re.compile(r"(tts-1|tts-1-hd)-\d{4}|gpt-4o-mini-tts-\d{4}-\d{2}-\d{2}")
_MAPPING = {"input": "text", "voice": "voice", "response_format": "format", "speed": "speed"}
EXTENSIONS = ("ref_audio", "ref_text", "ref_language", "seed", "quality", "verify")
IGNORED = ("instructions",)
_ACCEPTED = ("model", *_MAPPING, *EXTENSIONS, *IGNORED)


def is_openai(raw: Mapping[str, Any]) -> bool:
    return "openai_route" in raw or "openai_input" in raw


def to_native(raw: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Translate the OpenAI shape; return (native input, voice falls back to default)."""
    unknown = [k for k in raw if k not in ROUTE_KEYS]
    if unknown:
        raise InvalidInput(f"unknown field(s) beside openai_route: {describe_names(unknown)}")
    route = raw.get("openai_route")
    if not isinstance(route, str):
        raise InvalidInput("openai_route must be a string")
    if route.rstrip("/") != SPEECH_ROUTE:
        raise InvalidInput(f"openai_route is not supported; this worker serves {SPEECH_ROUTE}")
    body = raw.get("openai_input")
    if not isinstance(body, Mapping):
        raise InvalidInput("openai_input must be a JSON object")
    return speech_to_native(body, "openai_input")


def speech_to_native(body: Mapping[str, Any], where: str = "body") -> tuple[dict[str, Any], bool]:
    """An OpenAI speech body -> (native input, voice falls back to default)."""
    unknown = [k for k in body if k not in _ACCEPTED]
    if unknown:
        raise InvalidInput(f"unsupported {where} field(s): {describe_names(unknown)}")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidInput("instructions must be a string")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or len(model) > 300):
        raise InvalidInput("model must be a string of at most 300 characters")
    native = {ours: body[theirs] for theirs, ours in _MAPPING.items() if theirs in body}
    native |= {name: body[name] for name in EXTENSIONS if name in body}
    if "voice" in native:
        native["voice"] = _voice_name(native["voice"])
    if "ref_audio" in native:
        native.pop("voice", None)  # OpenAI clients must name a voice; the reference wins
    if model is not None and not means_default_model(model):
        native["model"] = model
    native["format"] = _format(body.get("response_format", OPENAI_DEFAULT_FORMAT))
    voice = native.get("voice")
    if isinstance(voice, str) and voice.strip().lower() in OPENAI_VOICES:
        native["voice"] = voice.strip().lower()
        return native, True
    return native, False


def means_default_model(model: str) -> bool:
    """OpenAI's model names, their dated snapshots and `f5-tts`: the worker's default model."""
    name = model.strip().lower()
    return name in DEFAULT_MODEL_NAMES or _SNAPSHOT.fullmatch(name) is not None


def _voice_name(value: Any) -> Any:
    """OpenAI's custom-voice object `{"id": name}` -> the name; anything else as it came (the
    native parser names a type error)."""
    if isinstance(value, Mapping):
        if set(value) != {"id"} or not isinstance(value["id"], str):
            raise InvalidInput('voice must be a string or an object {"id": "<voice name>"}')
        return value["id"]
    return value


def _format(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # the native parser names the type error
    fmt = value.strip().lower()
    if fmt not in OPENAI_FORMATS:
        raise UnsupportedFormat(f"response_format must be one of {', '.join(OPENAI_FORMATS)}")
    return OPENAI_FORMATS[fmt]
