"""The checker behind `verify`, without a model: a chunk that does not match its text is made
again with its next seed, at most VERIFY_RETRIES times, and the best try is kept. (On the demo
engine, through the job path: tests/integration/test_verify.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from f5worker.asr.transcript import Transcript
from f5worker.engine.plan import SEED_MASK
from f5worker.job.prepared import Clock
from f5worker.job.verify import Checker, retry_seeds
from f5worker.testing.asr import ScriptedTranscriber

TEXT = "Hello there, world."
RATE = 24_000


def wave(seed: int) -> np.ndarray:
    """A waveform that says which seed made it (its length)."""
    return np.zeros(1000 + seed, np.float32)


def run(answers, *, verify=True, words=False, retries=2, max_cer=0.15, language=None):
    asr = ScriptedTranscriber(answers)
    checker = Checker(asr, verify, words, max_cer, retries, language)
    made: list[int] = []

    def again(seed: int) -> np.ndarray:
        made.append(seed)
        return wave(seed)

    clock = Clock()
    kept, check = checker.check(TEXT, wave(10), RATE, [10, 13, 16], again, clock)
    return kept, check, made, asr, clock, checker


def test_a_matching_chunk_is_kept_as_made():
    kept, check, made, asr, clock, _ = run(["hello there world"])
    assert made == [] and len(kept) == 1010
    assert (check.seed, check.retries, check.cer, check.passed) == (10, 0, 0.0, True)
    assert "verify" in clock.stages and "retry" not in clock.stages
    assert asr.calls == [(1010, RATE, None, False)]


def test_a_bad_chunk_is_made_again_with_the_next_seed_until_one_passes():
    kept, check, made, *_ = run(["jello", "hello there world", "never asked"])
    assert made == [13] and len(kept) == 1013
    assert (check.seed, check.retries, check.cer, check.passed) == (13, 1, 0.0, True)
    assert check.transcript.text == "hello there world"


def test_the_best_try_is_kept_when_none_passes():
    kept, check, made, _, clock, _ = run(["hello", "hello there", "xyz"])
    assert made == [13, 16]
    assert (check.seed, check.retries, check.passed) == (13, 2, False)
    assert check.cer == pytest.approx(6 / 17)  # "hello there" against "hello there world"
    assert len(kept) == 1013 and clock.stages["retry"] >= 0.0


def test_ties_keep_the_earlier_try():
    _, check, made, *_ = run(["abc", "xyz", "abc"])
    assert made == [13, 16] and check.seed == 10


def test_no_retries_only_measures():
    kept, check, made, *_ = run(["jello"], retries=0)
    assert made == [] and check.retries == 0 and not check.passed and len(kept) == 1010


def test_captions_alone_transcribe_with_word_times_but_never_retry():
    _, check, made, asr, *_ = run(["jello"], verify=False, words=True)
    assert made == [] and asr.calls[0][3] is True
    assert [w.text for w in check.transcript.words] == ["jello"]


def test_the_language_is_pinned_by_the_first_chunk_that_matches():
    answers = [Transcript("jello", "nn"), Transcript("hello there world", "en")]
    *_, asr, _, checker = run(answers)
    assert checker.language == "en"  # not "nn", heard in a chunk that did not match
    checker.check(TEXT, wave(1), RATE, [1], wave, Clock())
    assert asr.calls[-1][2] == "en"


def test_an_operators_language_is_kept():
    *_, asr, _, checker = run(["hello there world"], language="de")
    assert asr.calls[0][2] == "de" and checker.language == "de"


def test_the_check_as_a_result_entry():
    _, check, *_ = run(["jello", "hello there world"])
    assert check.as_dict(3) == {
        "chunk": 3,
        "seed": 13,
        "cer": 0.0,
        "retries": 1,
        "passed": True,
        "transcript": "hello there world",
    }


def test_retry_seeds_are_the_next_seeds_no_chunk_of_the_utterance_uses():
    assert retry_seeds(100, 0, 1, 2) == [100, 101, 102]  # one chunk: seed, seed+1, seed+2
    seeds = [retry_seeds(100, i, 3, 2) for i in range(3)]
    assert seeds == [[100, 103, 106], [101, 104, 107], [102, 105, 108]]
    assert len({s for row in seeds for s in row}) == 9
    assert retry_seeds(SEED_MASK, 1, 2, 1) == [0, 2]  # in the positive int64 range
