"""The input contract, as a table of cases with their expected codes."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from errors import InvalidInput
from schema import FIELDS, MAX_TEXT_CHARS, TTSRequest, fields_markdown, parse_request

OK = {"text": "Hello."}

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
    ({"text": "x" * (MAX_TEXT_CHARS + 1)}, "TEXT_TOO_LONG", "longer than"),
    ({**OK, "voice_id": 1}, "INVALID_INPUT", "unknown field(s): voice_id"),
    ({**OK, "b": 1, "a": 2}, "INVALID_INPUT", "unknown field(s): a, b"),
    ({**OK, "nfe_step": 0}, "INVALID_INPUT", "nfe_step must be between 1 and 64"),
    ({**OK, "nfe_step": 65}, "INVALID_INPUT", "between 1 and 64"),
    ({**OK, "nfe_step": 8.5}, "INVALID_INPUT", "must be an integer"),
    ({**OK, "nfe_step": "8"}, "INVALID_INPUT", "must be an integer"),
    ({**OK, "nfe_step": True}, "INVALID_INPUT", "must be an integer"),
    ({**OK, "speed": 0.1}, "INVALID_INPUT", "speed must be between"),
    ({**OK, "speed": 5}, "INVALID_INPUT", "speed must be between"),
    ({**OK, "speed": float("nan")}, "INVALID_INPUT", "finite"),
    ({**OK, "speed": float("inf")}, "INVALID_INPUT", "finite"),
    ({**OK, "speed": "fast"}, "INVALID_INPUT", "must be a number"),
    ({**OK, "cfg_strength": -1}, "INVALID_INPUT", "cfg_strength"),
    ({**OK, "sway_sampling_coef": 2}, "INVALID_INPUT", "sway_sampling_coef"),
    ({**OK, "cross_fade_duration": 3}, "INVALID_INPUT", "cross_fade_duration"),
    ({**OK, "seed": -1}, "INVALID_INPUT", "seed"),
    ({**OK, "seed": 2**31}, "INVALID_INPUT", "seed"),
    ({**OK, "seed": {}}, "INVALID_INPUT", "seed must be an integer"),
    ({**OK, "format": "aiff"}, "UNSUPPORTED_FORMAT", "format must be one of"),
    ({**OK, "format": 3}, "INVALID_INPUT", "format must be a string"),
    ({**OK, "ref_audio": "AAAA"}, "INVALID_INPUT", "ref_text is required"),
    ({**OK, "ref_audio": "AAAA", "ref_text": "  "}, "INVALID_INPUT", "ref_text is required"),
    ({**OK, "ref_text": "x" * 1001}, "INVALID_INPUT", "ref_text is longer"),
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
        if not f.required:
            assert getattr(req, f.name) == f.default


def test_values_are_coerced():
    req = parse_request({**OK, "nfe_step": 16.0, "speed": 1, "format": " FLAC ", "seed": None})
    assert (req.nfe_step, req.speed, req.format, req.seed) == (16, 1.0, "flac", None)
    assert isinstance(req.speed, float) and isinstance(req.nfe_step, int)


def test_unknown_field_names_are_truncated():
    with pytest.raises(InvalidInput) as info:
        parse_request({**OK, "x" * 500: 1})
    assert len(info.value.message) < 100


def test_readme_table_is_generated_from_fields():
    table = fields_markdown()
    for f in FIELDS:
        assert f"`{f.name}`" in table


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from([f.name for f in FIELDS] + ["extra"]), JSONISH, max_size=6))
def test_parser_never_raises_anything_but_invalid_input(raw):
    try:
        req = parse_request(raw)
    except InvalidInput:
        return
    assert req.text.strip()
    for f in FIELDS:
        value = getattr(req, f.name)
        if f.low is not None and value is not None:
            assert f.low <= value <= f.high and math.isfinite(value)
