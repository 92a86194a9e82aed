"""Word captions placed on an item's audio: each chunk's heard words counted from where its own
waveform starts, through pause shortening and resampling, missed words flagged. Synthetic
pieces at 100 samples a second, so a sample is 10 ms."""

from __future__ import annotations

import numpy as np
import pytest

from f5worker.asr.transcript import Transcript, Word
from f5worker.audio import Audio
from f5worker.job.captions import Placement
from f5worker.job.prepared import Piece
from f5worker.job.verify import ChunkCheck
from f5worker.job.word_timings import word_fields

RATE = 100


def piece(index: int, text: str, heard: list[Word], samples: int, wave: int, lead: int = 0):
    check = ChunkCheck(index, 0, 0.0, True, Transcript(text, "en", tuple(heard)))
    audio = Audio(np.zeros(samples, np.float32), RATE)
    return Piece(index, 2, text, audio, check, lead, wave)


FIRST = piece(0, "One two three.", [Word(0.0, 0.3, "one"), Word(0.7, 1.1, "three")], 100, 110)
SECOND = piece(1, "Four five", [Word(0.1, 0.5, " Four"), Word(0.5, 0.9, " five")], 100, 100)


def times(words):
    return [(w["text"], w["start"], w["end"], w["estimated"]) for w in words]


def test_words_are_placed_where_their_chunk_starts_and_missed_ones_flagged():
    got = word_fields([FIRST, SECOND], RATE, Placement(10, None, 200, 2.0))
    assert times(got) == [
        ("One", 0.0, 0.3, False),
        ("two", 0.3, 0.7, True),  # not heard: between its neighbours
        ("three.", 0.7, 1.1, False),  # spoken in the cross-fade the second piece fades into
        ("Four", 1.1, 1.5, False),
        ("five", 1.5, 1.9, False),
    ]


def test_a_streamed_item_is_timed_from_the_utterances_start_and_clipped_to_itself():
    got = word_fields(
        [FIRST], RATE, Placement(10, None, 100, 1.0, offset_s=5.0, ends_utterance=False)
    )
    assert times(got)[-1] == ("three.", 5.7, 6.0, False)  # its fade-out tail is the next item's


def test_times_follow_pause_shortening_and_resampling():
    keep = np.ones(200, bool)
    keep[140:160] = False  # 0.2 s cut out of the second chunk, between its words
    got = word_fields([FIRST, SECOND], RATE, Placement(10, keep, 180, 0.9))  # 0.005 s a sample
    assert times(got)[3:] == [("Four", 0.55, 0.7, False), ("five", 0.7, 0.85, False)]


def test_a_chunk_shorter_than_the_fade_starts_after_its_lead():
    short = piece(1, "Hi", [Word(0.0, 0.05, "hi")], 8, 5, lead=3)
    got = word_fields([short], RATE, Placement(0, None, 8, 0.08))
    assert times(got) == [("Hi", 0.03, 0.08, False)]


def test_pieces_nothing_listened_to_time_no_words():
    bare = Piece(0, 1, "Unheard words", Audio(np.zeros(50, np.float32), RATE))
    assert word_fields([bare], RATE, Placement(0, None, 50, 0.5)) == []


@pytest.mark.parametrize("rate_out", [0.5, 2.0])
def test_every_word_lies_within_the_item(rate_out):
    got = word_fields([FIRST, SECOND], RATE, Placement(10, None, 200, 2.0 * rate_out))
    assert all(0 <= w["start"] <= w["end"] <= 2.0 * rate_out for w in got)
    assert [w["text"] for w in got] == ["One", "two", "three.", "Four", "five"]
