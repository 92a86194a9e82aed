"""Every text becomes chunks within the budget (upstream splits only after punctuation)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from f5worker.engine.chunking import (
    MAX_COMBINING,
    bound_chunks,
    cap_combining_marks,
    shorten_first,
)


def size(text: str) -> int:
    return len(text.encode("utf-8"))


def letters(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize(
    ("text", "budget"),
    [
        ("a" * 5000, 135),  # no punctuation, no space
        (" ".join(["word"] * 2000), 135),  # no punctuation
        ("中文没有标点符号" * 300, 100),  # CJK without punctuation
        ("https://example.com/" + "x" * 3000, 50),  # a URL
        ("👩‍👩‍👧‍👦" * 200, 60),  # ZWJ sequences
        ("e" + "\u0301" * 40 + "x", 30),  # a combining-mark run (after the cap)
    ],
)
def test_unsplittable_runs_become_bounded_chunks(text, budget):
    text = cap_combining_marks(text)
    chunks = bound_chunks([text], budget)
    assert chunks and all(size(c) <= budget for c in chunks)
    assert letters("".join(chunks)) == letters(text)


def test_chunks_that_fit_are_left_as_upstream_made_them():
    chunks = ["One sentence, with a comma.", "Another one."]
    assert bound_chunks(chunks, 135) == chunks


def test_words_are_split_at_spaces_before_anything_else():
    assert bound_chunks(["alpha beta gamma delta"], 11) == ["alpha beta", "gamma delta"]


def test_clusters_are_not_split_inside():
    text = "ne\u0301e\u0301" * 10  # each "é" is e + U+0301 when not normalised
    for chunk in bound_chunks([text], 7):
        assert not unicodedata.combining(chunk[0]), "a chunk starts with a combining mark"


def test_combining_runs_are_capped():
    zalgo = "a" + "\u0300\u0301\u0302" * 30 + "b"
    capped = cap_combining_marks(zalgo)
    assert capped.startswith("\u00e0") and capped.endswith("b")  # NFC folds the first mark
    assert len(capped) == 2 + MAX_COMBINING
    assert cap_combining_marks("Tiếng Việt") == unicodedata.normalize("NFC", "Tiếng Việt")


@given(st.text(max_size=400), st.integers(min_value=1, max_value=200))
def test_any_text_any_budget(text, budget):
    text = cap_combining_marks(text)
    chunks = bound_chunks([text], budget)
    # a chunk holds at least one code point (up to 4 bytes), whatever the budget
    assert all(size(c) <= max(budget, 4) and c.strip() for c in chunks)
    assert letters("".join(chunks)) == letters(text)


def split_at_commas(text: str, max_bytes: int) -> list[str]:
    """A stand-in for upstream's chunk_text: pieces end at punctuation, packed to max_bytes."""
    out: list[str] = []
    for part in (p.strip() + "," for p in text.rstrip(",").split(",")):
        if out and size(out[-1] + " " + part) <= max_bytes:
            out[-1] += " " + part
        else:
            out.append(part)
    return out


@pytest.mark.parametrize(
    ("chunks", "budget", "expected"),
    [
        (["One, two, three, four.", "Next."], 12, ["One, two,", "three, four.", "Next."]),
        (["Short.", "Next."], 12, ["Short.", "Next."]),  # fits: unchanged
        (["no punctuation at all here"], 10, ["no punctuation at all here"]),  # never mid-phrase
        (["A long first clause, then more."], 8, ["A long first clause,", "then more."]),
        ([], 10, []),
    ],
)
def test_only_the_first_chunk_is_cut_and_the_rest_of_it_stays_one_chunk(chunks, budget, expected):
    shortened = shorten_first(chunks, budget, split_at_commas)
    assert shortened == expected
    assert letters("".join(shortened)) == letters("".join(chunks))
