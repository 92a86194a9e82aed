"""The comparison behind `verify`: the documented normalisation, and CER's properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from f5worker.asr.cer import cer, distance, normalise, words

NORMALISED = [
    ("Hello, World!", "hello world"),
    ("  many   spaces\tand\nlines ", "many spaces and lines"),
    ("Don't stop", "dont stop"),
    ("don\u2019t stop", "dont stop"),  # the recogniser's curly apostrophe
    ("well-known", "well known"),
    ("\uff28\uff45\uff4c\uff4c\uff4f", "hello"),  # full-width letters (NFKC)
    ("Stra\u00dfe", "strasse"),  # casefold, not lower
    ("\ufb01ne", "fine"),  # a ligature
    ("It costs 12 dollars.", "it costs 12 dollars"),  # numbers as written
    ("twelve", "twelve"),  # and words stay words: no number grammar on either side
    ("50% & more", "50 more"),  # Unicode's punctuation (Po) goes
    ("$5 + 3", "$5 + 3"),  # symbols (S*) stay
    ("\u300c\u4f60\u597d\u3002\u300d", "\u4f60\u597d"),  # CJK punctuation
    ("...!?", ""),
]


@pytest.mark.parametrize(("text", "expected"), NORMALISED)
def test_normalise(text, expected):
    assert normalise(text) == expected


def test_words_are_the_normalised_words():
    assert words("Well-known, isn't it?") == ["well", "known", "isnt", "it"]


CERS = [
    ("Hello world.", "hello world", 0.0),
    ("hello world", "hello word", 1 / 11),  # one deletion
    ("hello world", "hello big world", 4 / 11),  # "big " inserted
    ("hello", "", 1.0),
    ("", "", 0.0),
    ("", "anything", 1.0),
    ("abc", "abcabcabc", 2.0),  # a repeat: more than 1
    ("I have 12 apples", "I have twelve apples", 6 / 16),  # numbers as written
]


@pytest.mark.parametrize(("reference", "hypothesis", "expected"), CERS)
def test_cer(reference, hypothesis, expected):
    assert cer(reference, hypothesis) == pytest.approx(expected)


def test_cer_is_not_symmetric():
    assert cer("abc", "abcabc") == 1.0
    assert cer("abcabc", "abc") == 0.5


texts = st.text(st.characters(codec="utf-8"), max_size=40)


@given(texts)
def test_normalise_is_idempotent(text):
    assert normalise(normalise(text)) == normalise(text)


@given(texts)
def test_a_text_against_itself_is_zero(text):
    assert cer(text, text) == 0.0


@given(texts, texts)
def test_cer_bounds(reference, hypothesis):
    """At least 0; at most the longer side over the reference (every character replaced, the
    rest inserted); 0 only when both normalise alike."""
    value = cer(reference, hypothesis)
    ref, hyp = normalise(reference), normalise(hypothesis)
    assert value >= 0.0
    assert (value == 0.0) == (ref == hyp)
    if ref:
        assert value <= max(len(ref), len(hyp)) / len(ref)
        assert value >= abs(len(ref) - len(hyp)) / len(ref)


@given(texts, texts, texts)
def test_distance_is_a_metric(a, b, c):
    assert distance(a, b) == distance(b, a)
    assert distance(a, c) <= distance(a, b) + distance(b, c)
    assert (distance(a, b) == 0) == (a == b)
