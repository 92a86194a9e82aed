"""Job input -> TTSRequest: typed, bounded, unknown fields rejected. Pure; never imports torch.

Each field is declared once in FIELDS with its type, bounds, default and description; validation
and the README's input table both come from that table, so they cannot drift apart. Two input
shapes are accepted: the native one (FIELDS) and the one RunPod forwards from its OpenAI-compatible
route (`openai_route` + `openai_input`), which openai_compat translates into the native one.

Why not runpod's rp_validator: it accepts booleans as numbers, calls constraint lambdas on values
of the wrong type (a TypeError instead of an error message), lets NaN through and returns
messages without codes. This parser keeps its shape (a schema table) and fixes those.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from f5worker.errors import (
    BadRefAudio,
    InvalidInput,
    TextTooLong,
    UnsupportedFormat,
    describe_names,
)
from f5worker.job import openai_compat
from f5worker.presets import QUALITIES

MAX_TEXT_CHARS = 5000
MAX_REF_AUDIO_B64_CHARS = 14_000_000  # about 10 MB of audio once decoded
MAX_REF_TEXT_CHARS = 1000
MAX_SEED = 2**31 - 1
MAX_MODEL_CHARS = 300  # a hub reference written in full is a name too
MAX_BATCH_TEXTS = 64
MAX_BATCH_CHARS = MAX_TEXT_CHARS  # a batch costs about what one text of its total length does
FORMATS = ("wav", "flac", "mp3", "ogg", "opus", "pcm", "aac")
SAMPLE_RATES = (8000, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what the Opus codec itself supports
RETURN_MODES = ("auto", "base64", "url")
CAPTION_MODES = ("segments", "srt", "vtt", "words")  # captions.caption_fields makes each
DEFAULT_VOICE = "default"
# Voice names become S3 key segments: no slashes, no leading dot, nothing to escape.
VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
URL_PREFIXES = ("https://", "http://", "s3://")
# ISO 639-1 (and Whisper's few three-letter codes); a BCP 47 tag's region is dropped (en-US).
LANGUAGE = re.compile(r"([a-z]{2,3})(?:[-_][a-z0-9]{1,8})*")


@dataclass(frozen=True)
class Field:
    name: str
    kind: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    max_len: int | None = None
    required: bool = False
    attr: str = ""  # TTSRequest attribute when the JSON name is a Python keyword

    @property
    def key(self) -> str:
        return self.attr or self.name


FIELDS: tuple[Field, ...] = (
    Field(
        "text",
        str,
        None,
        "Text to speak; required unless `texts` is sent.",
        max_len=MAX_TEXT_CHARS,
    ),
    Field(
        "voice",
        str,
        None,
        "Named voice: `default` (shipped in f5-tts) or one from the voice library "
        "(`voices/<name>/` under the S3 prefix). Not with `ref_audio`.",
        max_len=64,
    ),
    Field(
        "ref_audio",
        str,
        None,
        "Reference voice: base64 audio (WAV, FLAC, OGG, MP3), an `https://` URL or "
        "`s3://bucket/key`; at most 10 MB and 60 s, of which at most 12 s of sound are used "
        "(see Speed and quality).",
        max_len=MAX_REF_AUDIO_B64_CHARS,
    ),
    Field(
        "ref_text",
        str,
        None,
        "Transcript of `ref_audio`. Unset or blank: the clip is transcribed by the worker's "
        "ASR (`ASR_MODEL`) and the transcript returned as `ref_text_used`; a worker with "
        "`ASR_MODEL=none` refuses `ref_audio` without it.",
        max_len=MAX_REF_TEXT_CHARS,
    ),
    Field(
        "ref_language",
        str,
        None,
        "Language of `ref_audio` for its transcription, an ISO 639-1 code (`en`, `zh`, ...; "
        "a region is ignored: `en-US` is `en`); unset = detected. Only used when `ref_text` "
        "is not sent.",
        max_len=16,
    ),
    Field("format", str, "wav", "Output audio format.", choices=FORMATS),
    Field(
        "sample_rate",
        int,
        None,
        "Output sample rate; unset = the model's 24000. Opus: 8000, 12000, 16000, 24000, 48000.",
        choices=SAMPLE_RATES,
    ),
    Field(
        "seed",
        int,
        None,
        "Random seed; the same seed and input give the same audio.",
        low=0,
        high=MAX_SEED,
    ),
    Field(
        "quality",
        str,
        None,
        "Speed preset: `fast` (7 steps; a reference over 6 s is cut at a sentence end), "
        "`balanced` (16 steps) or `best` (32 steps); unset = the worker's `DEFAULT_QUALITY`. "
        "See Speed and quality.",
        choices=QUALITIES,
    ),
    Field(
        "nfe_step",
        int,
        None,
        "Flow-matching steps, instead of the preset's: more is slower and cleaner. 5, 6, 7, "
        "10, 12 and 16 use upstream's pruned schedule, other counts a uniform one.",
        low=1,
        high=64,
    ),
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
    Field(
        "remove_silence",
        bool,
        False,
        "Shorten pauses longer than 1 s in the output to 1 s.",
    ),
    Field(
        "return",
        str,
        "auto",
        "`base64`, `url` (upload to the output bucket) or `auto` (a URL only when the result "
        "would pass RunPod's size limit).",
        choices=RETURN_MODES,
        attr="return_mode",
    ),
    Field(
        "stream",
        bool,
        False,
        "Yield one audio item per text chunk as soon as it is ready.",
    ),
    Field(
        "model",
        str,
        None,
        "Which of the worker's models (`MODELS`) speaks; unset or `default` = the first one. "
        "An unknown name fails with `MODEL_NOT_FOUND`, which lists the available ones.",
        max_len=MAX_MODEL_CHARS,
    ),
    Field(
        "captions",
        str,
        None,
        "Sentence timings: `segments` adds `segments` ([{text, start, end}] in seconds) to "
        "each result; `srt` or `vtt` adds the same as SubRip or WebVTT text too; `words` adds "
        "`words` too, each word timed by the ASR companion. See Captions.",
        choices=CAPTION_MODES,
    ),
    Field(
        "verify",
        bool,
        None,
        "Transcribe each chunk with the ASR companion and make it again with the next seed "
        "when it does not match its text (`VERIFY_MAX_CER`, `VERIFY_RETRIES`); unset = the "
        "worker's `VERIFY`. See Verification.",
    ),
    Field(
        "texts",
        list,
        None,
        f"A batch instead of `text`: one result per entry, in order. An entry is a string or "
        f"{{text, voice, seed, format}}; at most {MAX_BATCH_CHARS} characters in all. "
        "See Batches.",
        max_len=MAX_BATCH_TEXTS,
    ),
)
# What a batch entry may set for itself; the rest of the request applies to every entry.
ENTRY_FIELDS = ("text", "voice", "seed", "format")
_BY_NAME = {f.name: f for f in FIELDS}
_ENTRY_TEXT = replace(_BY_NAME["text"], required=True)
_TOO_LONG: dict[str, type[InvalidInput]] = {"text": TextTooLong, "ref_audio": BadRefAudio}


@dataclass(frozen=True)
class TTSRequest:
    text: str = ""  # "" in a batch, whose texts are in `texts`
    voice: str | None = None
    ref_audio: str | None = None
    ref_text: str | None = None
    ref_language: str | None = None  # lower case; None: detected
    format: str = "wav"
    sample_rate: int | None = None
    seed: int | None = None
    quality: str | None = None  # None: the operator's DEFAULT_QUALITY
    nfe_step: int | None = None  # None: the preset's step count
    speed: float = 1.0
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
    cross_fade_duration: float = 0.15
    remove_silence: bool = False
    return_mode: str = "auto"
    stream: bool = False
    model: str | None = None
    captions: str | None = None
    verify: bool | None = None  # None: the worker's VERIFY
    texts: tuple[Any, ...] | None = None  # raw entries; batch entries are checked one by one
    # Set by the OpenAI route: an OpenAI voice name ("alloy") missing from the library falls
    # back to the default voice, so stock OpenAI clients work without a voice library.
    voice_fallback: bool = False

    @property
    def ref_kind(self) -> str | None:
        """How ref_audio is sent (see ref_kind); None without one."""
        return None if self.ref_audio is None else ref_kind(self.ref_audio)


def ref_kind(ref: str) -> str:
    """How a ref_audio string is sent: "s3", "url" (https/http) or "base64"."""
    if ref.startswith("s3://"):
        return "s3"
    return "url" if ref.startswith(URL_PREFIXES) else "base64"


def parse_request(raw: Any) -> TTSRequest:
    """Validate a job's `input`; raise a coded InvalidInput subclass on the first problem."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("input must be a JSON object")
    voice_fallback = False
    if openai_compat.is_openai(raw):
        raw, voice_fallback = openai_compat.to_native(raw)
    unknown = [k for k in raw if k not in _BY_NAME]
    if unknown:
        raise InvalidInput(f"unknown field(s): {describe_names(unknown)}")
    values = {f.key: _field_value(f, raw) for f in FIELDS}
    if values["text"] is None and values["texts"] is None:
        raise InvalidInput("text is required (or texts, for a batch)")
    values["text"] = values["text"] or ""
    if values["texts"] is not None:
        values["texts"] = tuple(values["texts"])
    values["ref_language"] = language_code(values["ref_language"])
    req = TTSRequest(**values, voice_fallback=voice_fallback)
    if req.texts is not None:
        _check_batch(req)
    else:
        _check_combinations(req)
    return req


def language_code(value: str | None, name: str = "ref_language") -> str | None:
    """A language code, lower case; INVALID_INPUT for anything else. Whether the recogniser
    knows that language is its own answer (a coded error from the ASR)."""
    if value is None:
        return None
    found = LANGUAGE.fullmatch(value.strip().lower())
    if found is None:
        raise InvalidInput(f"{name} must be a language code such as en, de or zh")
    return found.group(1)


def parse_fields(fields: tuple[Field, ...], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Values of a table of fields (keyed by Field.key), validated as parse_request's; for the
    other job inputs (voice actions) that reuse these rules and their error codes."""
    known = {f.name for f in fields}
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise InvalidInput(f"unknown field(s): {describe_names(unknown)}")
    return {f.key: _field_value(f, raw) for f in fields}


def parse_entry(req: TTSRequest, raw: Any) -> TTSRequest:
    """One batch entry as a request of its own: the batch's fields with the entry's text,
    voice, seed and format; a coded InvalidInput when the entry is not valid (that entry fails,
    not the batch)."""
    if isinstance(raw, str):
        raw = {"text": raw}
    if not isinstance(raw, Mapping):
        raise InvalidInput("a texts entry must be a string or an object")
    unknown = [k for k in raw if k not in ENTRY_FIELDS]
    if unknown:
        raise InvalidInput(f"unknown field(s) in a texts entry: {describe_names(unknown)}")
    changes = {"texts": None, "text": _field_value(_ENTRY_TEXT, raw)}
    for name in ENTRY_FIELDS[1:]:
        if raw.get(name) is not None:  # unset: the batch's value, not the field's default
            changes[name] = _field_value(_BY_NAME[name], raw)
    if "voice" in changes:  # the entry's voice replaces the batch's reference clip
        changes |= {"ref_audio": None, "ref_text": None, "ref_language": None}
    entry = replace(req, **changes)
    _check_combinations(entry)
    return entry


def _check_batch(req: TTSRequest) -> None:
    """What makes a batch malformed as a whole (the job fails); entries are checked later, each
    on its own (parse_entry)."""
    if req.text:
        raise InvalidInput("send either text or texts, not both")
    if not req.texts:
        raise InvalidInput("texts must have at least one entry")
    if req.stream:
        raise InvalidInput("texts returns one item per entry already; stream is for one text")
    total = sum(len(_entry_text(e)) for e in req.texts)
    if total > MAX_BATCH_CHARS:
        raise TextTooLong(f"texts hold more than {MAX_BATCH_CHARS} characters in all")
    _check_combinations(replace(req, text="-"))  # the batch-wide fields, with a stand-in text


def _entry_text(entry: Any) -> str:
    text = entry.get("text") if isinstance(entry, Mapping) else entry
    return text if isinstance(text, str) else ""


def _check_combinations(req: TTSRequest) -> None:
    """Rules that involve more than one field."""
    if not req.text.strip():
        raise InvalidInput("text must not be empty (send text, or texts for a batch)")
    if req.voice is not None and not VOICE_NAME.fullmatch(req.voice):
        raise InvalidInput("voice must be 1-64 letters, digits, '.', '_' or '-'")
    if req.voice is not None and req.ref_audio is not None:
        raise InvalidInput("send either voice or ref_audio, not both")
    if req.ref_audio is None and req.ref_text is not None:
        raise InvalidInput("ref_text is only used with ref_audio")
    if req.ref_audio is None and req.ref_language is not None:
        raise InvalidInput("ref_language is only used with ref_audio")
    if req.format == "opus" and req.sample_rate not in (None, *OPUS_RATES):
        raise UnsupportedFormat(
            f"opus needs a sample_rate in {', '.join(str(r) for r in OPUS_RATES)}"
        )
    if req.stream and req.return_mode == "url":
        raise InvalidInput("stream returns base64 chunks; use return base64 or auto")


def _field_value(f: Field, raw: Mapping[str, Any]) -> Any:
    if f.name not in raw or raw[f.name] is None:
        if f.required:
            raise InvalidInput(f"{f.name} is required")
        return f.default
    value = _coerce(f, raw[f.name])
    if isinstance(value, str) and f.choices is not None:
        value = value.strip().lower()
    _check_bounds(f, value)
    return value


def _coerce(f: Field, value: Any) -> Any:
    if f.kind is list:
        if not isinstance(value, list):
            raise InvalidInput(f"{f.name} must be a list")
        return value
    if f.kind is bool:
        if not isinstance(value, bool):
            raise InvalidInput(f"{f.name} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidInput(f"{f.name} must be {_type_name(f.kind)}")
    if f.kind is str:
        if not isinstance(value, str):
            raise InvalidInput(f"{f.name} must be a string")
        if not _is_unicode(value):
            raise InvalidInput(f"{f.name} is not valid Unicode text (a lone surrogate)")
        return value
    if isinstance(value, str):
        raise InvalidInput(f"{f.name} must be {_type_name(f.kind)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{f.name} must be a finite number")
    if f.kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise InvalidInput(f"{f.name} must be an integer")
        return int(value)
    try:
        return float(value)  # a JSON integer of any size arrives here as a Python int
    except OverflowError:
        raise InvalidInput(f"{f.name} must be between {_num(f.low)} and {_num(f.high)}") from None


def _is_unicode(value: str) -> bool:
    """JSON may carry lone UTF-16 surrogates (\\ud800); they cannot be encoded as UTF-8, so no
    tokenizer, log or result could hold them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_bounds(f: Field, value: Any) -> None:
    if f.max_len is not None and len(value) > f.max_len:
        error = _TOO_LONG.get(f.name, InvalidInput)
        if f.kind is list:
            raise error(f"{f.name} has more than {f.max_len} entries")
        raise error(f"{f.name} is longer than {f.max_len} characters")
    if f.choices is not None and value not in f.choices:
        error = UnsupportedFormat if f.name == "format" else InvalidInput
        raise error(f"{f.name} must be one of {', '.join(str(c) for c in f.choices)}")
    if (f.low is not None and value < f.low) or (f.high is not None and value > f.high):
        raise InvalidInput(f"{f.name} must be between {_num(f.low)} and {_num(f.high)}")


def _num(x: float | None) -> str:
    """2147483647 rather than 2.14748e+09; 0.3 rather than 0.300000."""
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number"}[kind]


def fields_markdown() -> str:
    """The README's input table, generated from FIELDS."""
    rows = ["| field | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for f in FIELDS:
        if f.choices:
            bounds = ", ".join(str(c) for c in f.choices)
        elif f.low is not None:
            bounds = f"{_num(f.low)} .. {_num(f.high)}"
        elif f.max_len:
            bounds = f"<= {f.max_len} {'entries' if f.kind is list else 'chars'}"
        elif f.kind is bool:
            bounds = "true, false"
        else:
            bounds = ""
        if f.required:
            default = "required"
        elif f.default is None:
            default = "-"
        elif isinstance(f.default, bool):
            default = f"`{str(f.default).lower()}`"
        else:
            default = f"`{f.default}`"
        rows.append(f"| `{f.name}` | {f.kind.__name__} | {default} | {bounds} | {f.doc} |")
    return "\n".join(rows)
