"""The input contract, as a table of cases with their expected codes."""

import contextlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from f5worker.errors import MAX_LIST_BYTES, InvalidInput
from f5worker.job import voice_actions
from f5worker.job.schema import (
    FIELDS,
    MAX_BATCH_TEXTS,
    MAX_REF_AUDIO_B64_CHARS,
    MAX_REF_TEXT_CHARS,
    MAX_TEXT_CHARS,
    TTSRequest,
    fields_markdown,
    parse_entry,
    parse_request,
    ref_kind,
)

OK = {"text": "Hello."}
REF = {**OK, "ref_audio": "AAAA", "ref_text": "Hi."}

BAD = [
    (None, "INVALID_INPUT", "JSON object"),
    ("Hello", "INVALID_INPUT", "JSON object"),
    ([{"text": "x"}], "INVALID_INPUT", "JSON object"),
    ({}, "INVALID_INPUT", "text is required"),
    ({"text": None}, "INVALID_INPUT", "text is required"),
    ({"text": ""}, "INVALID_INPUT", "must not be empty"),
    ({"text": "   \n"}, "INVALID_INPUT", "must not be empty"),
    ({"text": 5}, "INVALID_INPUT", "text must be a string"),
    ({"text": ["a"]}, "INVALID_INPUT", "text must be a string"),
    ({"text": "x" * (MAX_TEXT_CHARS + 1)}, "TEXT_TOO_LONG", "longer than 5000"),
    ({**OK, "voice_id": 1}, "INVALID_INPUT", "unknown field(s): voice_id"),
    ({**OK, "b": 1, "a": 2}, "INVALID_INPUT", "unknown field(s): a, b"),
    ({**OK, "nfe_step": 0}, "INVALID_INPUT", "nfe_step must be between 1 and 64"),
    ({**OK, "nfe_step": 65}, "INVALID_INPUT", "between 1 and 64"),
    ({**OK, "nfe_step": 8.5}, "INVALID_INPUT", "must be an integer"),
    ({**OK, "nfe_step": "8"}, "INVALID_INPUT", "must be an integer"),
    ({**OK, "nfe_step": True}, "INVALID_INPUT", "must be an integer"),
    ({**OK, "speed": 0.1}, "INVALID_INPUT", "speed must be between 0.3 and 3"),
    ({**OK, "speed": 5}, "INVALID_INPUT", "speed must be between"),
    ({**OK, "speed": float("nan")}, "INVALID_INPUT", "finite"),
    ({**OK, "speed": float("inf")}, "INVALID_INPUT", "finite"),
    ({**OK, "speed": "fast"}, "INVALID_INPUT", "must be a number"),
    ({**OK, "cfg_strength": -1}, "INVALID_INPUT", "cfg_strength"),
    ({**OK, "sway_sampling_coef": 2}, "INVALID_INPUT", "sway_sampling_coef"),
    ({**OK, "cross_fade_duration": 3}, "INVALID_INPUT", "cross_fade_duration"),
    ({**OK, "seed": -1}, "INVALID_INPUT", "seed must be between 0 and 2147483647"),
    ({**OK, "seed": 2**31}, "INVALID_INPUT", "seed"),
    ({**OK, "seed": {}}, "INVALID_INPUT", "seed must be an integer"),
    ({**OK, "format": "aiff"}, "UNSUPPORTED_FORMAT", "format must be one of"),
    ({**OK, "format": "wma"}, "UNSUPPORTED_FORMAT", "format must be one of"),
    ({**OK, "format": 3}, "INVALID_INPUT", "format must be a string"),
    ({**OK, "sample_rate": 11025}, "INVALID_INPUT", "sample_rate must be one of"),
    ({**OK, "sample_rate": "24000"}, "INVALID_INPUT", "sample_rate must be an integer"),
    ({**OK, "format": "opus", "sample_rate": 44100}, "UNSUPPORTED_FORMAT", "opus needs"),
    ({**OK, "remove_silence": 1}, "INVALID_INPUT", "remove_silence must be true or false"),
    ({**OK, "remove_silence": "yes"}, "INVALID_INPUT", "remove_silence must be true or false"),
    ({**OK, "stream": "true"}, "INVALID_INPUT", "stream must be true or false"),
    ({**OK, "return": "json"}, "INVALID_INPUT", "return must be one of auto, base64, url"),
    ({**OK, "return": "url", "stream": True}, "INVALID_INPUT", "stream returns base64"),
    ({**OK, "voice": ""}, "INVALID_INPUT", "voice must be 1-64"),
    ({**OK, "voice": "../secrets"}, "INVALID_INPUT", "voice must be 1-64"),
    ({**OK, "voice": "a/b"}, "INVALID_INPUT", "voice must be 1-64"),
    ({**OK, "voice": ".hidden"}, "INVALID_INPUT", "voice must be 1-64"),
    ({**OK, "voice": "v" * 65}, "INVALID_INPUT", "voice is longer than 64"),
    ({**REF, "voice": "anna"}, "INVALID_INPUT", "either voice or ref_audio"),
    ({**OK, "ref_text": "Hi."}, "INVALID_INPUT", "ref_text is only used with ref_audio"),
    ({**OK, "ref_language": "en"}, "INVALID_INPUT", "ref_language is only used with ref_audio"),
    ({**REF, "ref_language": "english"}, "INVALID_INPUT", "ref_language must be a language"),
    ({**REF, "ref_language": "e"}, "INVALID_INPUT", "ref_language must be a language"),
    ({**REF, "ref_language": "e1"}, "INVALID_INPUT", "ref_language must be a language"),
    ({**REF, "ref_language": ""}, "INVALID_INPUT", "ref_language must be a language"),
    ({**REF, "ref_language": 7}, "INVALID_INPUT", "ref_language must be a string"),
    ({**REF, "ref_language": "en-" + "x" * 14}, "INVALID_INPUT", "ref_language is longer"),
    ({**REF, "ref_text": "x" * 1001}, "INVALID_INPUT", "ref_text is longer than 1000"),
    ({**REF, "ref_audio": "A" * (MAX_REF_AUDIO_B64_CHARS + 1)}, "BAD_REF_AUDIO", "longer than"),
    ({**OK, "openai_route": "/v1/audio/speech"}, "INVALID_INPUT", "beside openai_route: text"),
]


@pytest.mark.parametrize(("raw", "code", "fragment"), BAD)
def test_bad_input_gets_its_code(raw, code, fragment):
    with pytest.raises(InvalidInput) as info:
        parse_request(raw)
    assert info.value.code == code
    assert fragment in info.value.message


def test_defaults_match_the_dataclass():
    req = parse_request(OK)
    assert req == TTSRequest(text="Hello.")
    for f in FIELDS:
        if not f.required and f.name != "text":  # text: "" when a batch sends texts
            assert getattr(req, f.key) == f.default


def test_values_are_coerced():
    req = parse_request(
        {**OK, "nfe_step": 16.0, "speed": 1, "format": " FLAC ", "seed": None, "return": "URL"}
    )
    assert (req.nfe_step, req.speed, req.format, req.seed) == (16, 1.0, "flac", None)
    assert req.return_mode == "url"
    assert isinstance(req.speed, float) and isinstance(req.nfe_step, int)


@pytest.mark.parametrize(
    ("ref_audio", "kind"),
    [
        ("UklGRg==", "base64"),
        ("https://example.com/a.wav", "url"),
        ("http://127.0.0.1:9/a.wav", "url"),
        ("s3://bucket/voices/a.wav", "s3"),
    ],
)
def test_reference_kind(ref_audio, kind):
    """One rule for synthesis and voice.add (which calls ref_kind directly)."""
    assert parse_request({**OK, "ref_audio": ref_audio, "ref_text": "Hi."}).ref_kind == kind
    assert ref_kind(ref_audio) == kind
    assert voice_actions.ref_kind is ref_kind


@pytest.mark.parametrize("ref_text", [None, "", "  \n"])
def test_ref_text_is_optional_with_ref_audio(ref_text):
    """Without a transcript the worker transcribes the clip (ref_transcripts.py): the parser
    lets it through; a worker without ASR refuses it later, before fetching the clip."""
    req = parse_request({**OK, "ref_audio": "AAAA", "ref_text": ref_text})
    assert (req.ref_audio, req.ref_text, req.ref_language) == ("AAAA", ref_text, None)


@pytest.mark.parametrize(
    ("given", "code"),
    [("en", "en"), (" DE ", "de"), ("haw", "haw"), ("en-US", "en"), ("pt_BR", "pt"), (None, None)],
)
def test_ref_language_is_a_lower_case_code(given, code):
    req = parse_request({**REF, "ref_language": given})
    assert req.ref_language == code


def test_every_field_has_a_value_in_range():
    full = {
        "text": "Hello.",
        "voice": "anna_v2.1-x",
        "format": "opus",
        "sample_rate": 48000,
        "seed": 0,
        "quality": "balanced",
        "nfe_step": 64,
        "speed": 0.3,
        "cfg_strength": 10,
        "sway_sampling_coef": -1,
        "cross_fade_duration": 0,
        "remove_silence": True,
        "return": "base64",
        "stream": True,
    }
    req = parse_request(full)
    assert req.voice == "anna_v2.1-x" and req.sample_rate == 48000 and req.stream
    assert req.remove_silence is True and req.return_mode == "base64"
    assert (req.quality, req.nfe_step) == ("balanced", 64)
    assert parse_request({**REF, "ref_text": "x" * MAX_REF_TEXT_CHARS}).ref_text


def test_unknown_field_names_are_listed_whole_within_a_byte_budget():
    with pytest.raises(InvalidInput) as info:
        parse_request({**OK, "x" * 50_000: 1})
    assert len(info.value.message.encode()) <= MAX_LIST_BYTES + 100
    names = {f"field_{i:02d}": i for i in range(40)}
    with pytest.raises(InvalidInput) as info:
        parse_request({**OK, **names})
    assert all(name in info.value.message for name in names)  # complete, each copyable


def test_readme_table_is_generated_from_fields():
    table = fields_markdown()
    for f in FIELDS:
        assert f"`{f.name}`" in table
    assert "| `seed` | int | - | 0 .. 2147483647 |" in table
    assert "| `stream` | bool | `false` |" in table


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
NAMES = [f.name for f in FIELDS] + ["extra"]
OPENAI_NAMES = ["model", "input", "voice", "response_format", "speed", "instructions"]


def _check_request(req: TTSRequest) -> None:
    if req.texts is not None:  # a batch: each entry parses or fails with its own code
        assert not req.text and 1 <= len(req.texts) <= MAX_BATCH_TEXTS
        for raw in req.texts:
            with contextlib.suppress(InvalidInput):
                _check_request(parse_entry(req, raw))
        return
    assert req.text.strip()
    for f in FIELDS:
        value = getattr(req, f.key)
        if f.low is not None and value is not None:
            assert f.low <= value <= f.high and math.isfinite(value)
        if f.choices is not None and value is not None:
            assert value in f.choices
        if value is not None and f.kind is not float:
            assert isinstance(value, f.kind)


@given(st.dictionaries(st.sampled_from(NAMES), JSONISH, max_size=8))
@settings(max_examples=300)
def test_parser_never_raises_anything_but_invalid_input(raw):
    try:
        req = parse_request(raw)
    except InvalidInput:
        return
    _check_request(req)


@given(
    st.fixed_dictionaries(
        {"openai_route": st.sampled_from(["/v1/audio/speech", "/v1/models"]) | JSONISH},
        optional={"openai_input": st.dictionaries(st.sampled_from(OPENAI_NAMES), JSONISH)},
    )
)
@settings(max_examples=200)
def test_openai_shape_never_raises_anything_but_invalid_input(raw):
    try:
        req = parse_request(raw)
    except InvalidInput:
        return
    _check_request(req)


# -- batches: what fails the whole job, and what fails one entry --------------------------------

BATCH_ERRORS = [
    ({"texts": "Hello."}, "INVALID_INPUT", "texts must be a list"),
    ({"texts": []}, "INVALID_INPUT", "at least one entry"),
    ({"texts": ["a"] * (MAX_BATCH_TEXTS + 1)}, "INVALID_INPUT", "more than 64 entries"),
    ({"text": "a", "texts": ["b"]}, "INVALID_INPUT", "either text or texts"),
    ({"texts": ["a"], "stream": True}, "INVALID_INPUT", "stream"),
    ({"texts": ["x" * 3000, {"text": "y" * 2001}]}, "TEXT_TOO_LONG", "5000 characters in all"),
    ({"texts": ["a"], "voice": "no/slash"}, "INVALID_INPUT", "voice must be"),
    ({"texts": ["a"], "ref_text": "Hi."}, "INVALID_INPUT", "ref_text is only used with"),
    ({"texts": None}, "INVALID_INPUT", "text is required"),
]


@pytest.mark.parametrize(("raw", "code", "fragment"), BATCH_ERRORS)
def test_a_malformed_batch_fails_as_a_whole(raw, code, fragment):
    with pytest.raises(InvalidInput) as info:
        parse_request(raw)
    assert (info.value.code, fragment in info.value.message) == (code, True)


BATCH = {"texts": ["-"], "voice": "anna", "seed": 9, "format": "flac", "speed": 1.5}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("Hello.", {"text": "Hello.", "voice": "anna", "seed": 9, "format": "flac"}),
        (
            {"text": "Hi.", "voice": "bob", "seed": 3, "format": " MP3 "},
            {"text": "Hi.", "voice": "bob", "seed": 3, "format": "mp3"},
        ),
        ({"text": "Hi.", "seed": None}, {"seed": 9, "speed": 1.5, "texts": None}),
    ],
)
def test_an_entry_is_the_batch_with_its_own_fields(entry, expected):
    req = parse_entry(parse_request(BATCH), entry)
    assert {k: getattr(req, k) for k in expected} == expected


def test_an_entry_voice_replaces_the_batch_reference():
    batch = parse_request({"texts": ["-"], "ref_audio": "AAAA", "ref_language": "fr"})
    assert parse_entry(batch, "Hello.").ref_audio == "AAAA"
    entry = parse_entry(batch, {"text": "Hello.", "voice": "anna"})
    assert (entry.voice, entry.ref_audio, entry.ref_text, entry.ref_language) == (
        "anna",
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("entry", "code", "fragment"),
    [
        (42, "INVALID_INPUT", "string or an object"),
        (["Hello."], "INVALID_INPUT", "string or an object"),
        ({}, "INVALID_INPUT", "text is required"),
        ({"text": "  "}, "INVALID_INPUT", "must not be empty"),
        ({"text": "a", "speed": 2}, "INVALID_INPUT", "unknown field(s) in a texts entry: speed"),
        ({"text": "a", "format": "wma"}, "UNSUPPORTED_FORMAT", "format must be one of"),
        ({"text": "a", "seed": -1}, "INVALID_INPUT", "seed must be between"),
        ({"text": "a", "voice": "../x"}, "INVALID_INPUT", "voice must be"),
        ({"text": "a", "format": "opus"}, "UNSUPPORTED_FORMAT", "opus needs"),
    ],
)
def test_a_bad_entry_is_its_own_error(entry, code, fragment):
    batch = parse_request({"texts": ["-"], "sample_rate": 44100})
    with pytest.raises(InvalidInput) as info:
        parse_entry(batch, entry)
    assert (info.value.code, fragment in info.value.message) == (code, True)


@pytest.mark.parametrize("mode", [None, "segments", "srt", "vtt", "words"])
def test_captions_modes(mode):
    assert parse_request({**OK, "captions": mode}).captions == mode


@pytest.mark.parametrize("mode", [True, "ass", 1])
def test_captions_bad_modes(mode):
    with pytest.raises(InvalidInput):
        parse_request({**OK, "captions": mode})


@pytest.mark.parametrize(("value", "parsed"), [(None, None), (True, True), (False, False)])
def test_verify_is_unset_or_a_boolean(value, parsed):
    assert parse_request({**OK, "verify": value}).verify is parsed


@pytest.mark.parametrize("value", ["yes", 1, [True]])
def test_verify_bad_values(value):
    with pytest.raises(InvalidInput, match="verify must be true or false"):
        parse_request({**OK, "verify": value})
