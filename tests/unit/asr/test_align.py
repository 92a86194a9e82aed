"""Word timings: the text's words aligned to the recogniser's timed words; missed words are
interpolated between their timed neighbours and flagged."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from f5worker.asr.align import TimedWord, align, text_words
from f5worker.asr.transcript import Word


def heard(*spec: tuple[str, float, float]) -> list[Word]:
    return [Word(a, b, text) for text, a, b in spec]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there, world.", ["Hello", "there,", "world."]),
        ("Wait \u2014 what?", ["Wait \u2014", "what?"]),  # a lone dash stays with its word
        ("\u201c Quoted", ["\u201c Quoted"]),  # before the first word: joined to it
        ("  ", []),
        ("... !", []),
    ],
)
def test_text_words(text, expected):
    assert text_words(text) == expected


def test_every_word_heard_takes_its_times():
    got = align(
        "Hello there, world.",
        heard(("hello", 0.1, 0.4), ("there", 0.5, 0.8), ("world", 0.9, 1.3)),
        0,
        2,
    )
    assert got == [
        TimedWord("Hello", 0.1, 0.4),
        TimedWord("there,", 0.5, 0.8),
        TimedWord("world.", 0.9, 1.3),
    ]


def test_a_missed_word_is_interpolated_between_its_neighbours_and_flagged():
    got = align("one two three", heard(("one", 0.0, 0.5), ("three", 1.5, 2.0)), 0, 2)
    assert got[1] == TimedWord("two", 0.5, 1.5, estimated=True)
    assert not got[0].estimated and not got[2].estimated


def test_a_missed_run_shares_its_gap_by_characters():
    got = align("a bbb cccc d", heard(("a", 0.0, 1.0), ("d", 8.0, 9.0)), 0, 9)
    assert [(w.start, w.end) for w in got[1:3]] == [(1.0, 4.0), (4.0, 8.0)]
    assert all(w.estimated for w in got[1:3])


def test_missed_words_at_the_edges_are_bounded_by_the_audio():
    got = align("first middle last", heard(("middle", 1.0, 2.0)), 0.5, 3.0)
    assert got[0] == TimedWord("first", 0.5, 1.0, estimated=True)
    assert got[2] == TimedWord("last", 2.0, 3.0, estimated=True)


def test_nothing_heard_spreads_the_text_over_the_audio():
    got = align("ab cd", [], 0.0, 1.0)
    assert got == [TimedWord("ab", 0.0, 0.5, True), TimedWord("cd", 0.5, 1.0, True)]


def test_a_misheard_word_pairs_with_the_word_it_stands_for():
    got = align("the red cat", heard(("the", 0, 1), ("bed", 1, 2), ("cat", 2, 3)), 0, 3)
    assert got[1] == TimedWord("red", 1, 2)


def test_heard_words_without_a_text_word_time_nothing():
    """A repeat the model made: the text's words keep the first hearing's times."""
    spoken = heard(("go", 0, 1), ("go", 1, 2), ("now", 2, 3))
    got = align("go now", spoken, 0, 3)
    assert [w.text for w in got] == ["go", "now"] and got[1] == TimedWord("now", 2, 3)
    assert not any(w.estimated for w in got)


def test_normalisation_decides_what_matches():
    got = align(
        "Don't stop, well-known",
        heard((" DONT", 0, 1), ("stop!", 1, 2), ("Well-known.", 2, 3)),
        0,
        3,
    )
    assert got == [
        TimedWord("Don't", 0, 1),
        TimedWord("stop,", 1, 2),
        TimedWord("well-known", 2, 3),
    ]


def test_times_outside_the_audio_are_clamped():
    got = align("late", heard(("late", 2.5, 4.0)), 0, 3)
    assert got == [TimedWord("late", 2.5, 3.0)]


words_st = st.lists(st.sampled_from(["a", "bb", "ccc", "dd", "e"]), max_size=12)


@given(words_st, words_st, st.data())
def test_every_text_word_is_timed_in_order_within_the_audio(text, said, data):
    times = sorted(
        data.draw(st.lists(st.floats(0, 10), min_size=2 * len(said), max_size=2 * len(said)))
    )
    spoken = [Word(times[2 * k], times[2 * k + 1], w) for k, w in enumerate(said)]
    got = align(" ".join(text), spoken, 0.0, 10.0)
    assert [w.text for w in got] == text
    assert all(0.0 <= w.start <= w.end <= 10.0 for w in got)
    assert all(a.start <= b.start for a, b in itertools.pairwise(got))
    if text == said:
        assert not any(w.estimated for w in got)
