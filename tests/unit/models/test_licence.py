"""A model card's licence, as models/licence.py reads it."""

from __future__ import annotations

import pytest

from f5worker.models.licence import UNKNOWN, clean, from_card


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ("---\nlicense: apache-2.0\ntags: [tts]\n---\n# A fine-tune\n", "apache-2.0"),
        ("---\nlicense: cc-by-nc-4.0\n---", "cc-by-nc-4.0"),
        ("---\nlicense: other\nlicense_name: studio-voice-1.0\n---\n", "studio-voice-1.0"),
        ("---\nlicense: other\n---\n", "other"),
        ("---\nlicense: [mit, cc0-1.0]\n---\n", "mit, cc0-1.0"),
        ("---\ntags: [tts]\n---\nLicense: MIT, says the prose\n", UNKNOWN),
        ("# No front matter\nlicense: mit\n", UNKNOWN),
        ("---\nlicense: [unclosed\n---\n", UNKNOWN),  # malformed YAML
        ("---\n- a list\n---\n", UNKNOWN),
        ('---\nlicense: "mit\\n<script>"\n---\n', "mitscript"),  # one plain token
        ("", UNKNOWN),
    ],
)
def test_the_cards_front_matter_decides(card, expected):
    assert from_card(card) == expected


def test_clean_bounds_what_reaches_a_log_or_a_result():
    assert clean("x" * 500) == "x" * 64
    assert clean("\u202e\x00") == UNKNOWN
