"""Reference trimming: only where the transcript's sentence ends and the audio's pauses agree."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from f5worker.audio import Audio, Voice
from f5worker.job.ref_trim import (
    FRAME_S,
    MIN_KEEP_S,
    MIN_PAUSE_S,
    cut_at_sentence,
    find_pauses,
    sentence_ends,
)
from f5worker.job.voices import (
    DEFAULT_VOICE_TEXT,
    MAX_REF_SECONDS,
    default_voice,
    fit_voice,
    prepare_voice,
    voice_from_bytes,
)
from f5worker.testing.audio import noise, spoken_sentences, wav_bytes

RATE = 24000


@pytest.mark.parametrize(
    ("text", "ends"),
    [
        ("One. Two! Three? Four", ["One.", "One. Two!", "One. Two! Three?"]),
        ("It costs 3.5 euros. Fine.", ["It costs 3.5 euros."]),  # no end inside a number
        ('He said "stop." Then left.', ['He said "stop."']),
        ("Wait... what? ", ["Wait..."]),  # the transcript's last end is no cut point
        ("你好。我很好。谢谢！", ["你好。", "你好。我很好。"]),
        ("no punctuation at all", []),
        ("Commas, semicolons; and colons: are not sentence ends.", []),
    ],
)
def test_sentence_ends(text, ends):
    assert [text[:e] for e in sentence_ends(text)] == ends


def test_pauses_of_real_speech_include_the_comma_and_the_gaps():
    samples, rate, _ = spoken_sentences(3)
    pauses, speaking = find_pauses(samples, rate)
    gaps = [p for p in pauses if p.end - p.start >= 0.4 * rate]
    assert len(gaps) >= 4  # two gaps between sentences, one comma pause in each sentence
    assert 0 < speaking < len(samples) / rate


@pytest.mark.parametrize(
    ("bound", "sentences"),
    [(15.0, 2), (12.0, 2), (9.0, 1), (6.0, 1), (MIN_KEEP_S + 0.5, 0)],
)
def test_real_speech_is_cut_after_whole_sentences(bound, sentences):
    samples, rate, text = spoken_sentences(3)
    cut = cut_at_sentence(samples, rate, text, bound)
    if sentences == 0:
        assert cut is None  # one sentence is longer than the bound: no cut
        return
    kept, kept_text = cut
    assert kept_text == " ".join([DEFAULT_VOICE_TEXT] * sentences)
    assert len(kept) <= bound * rate
    one, gap = len(spoken_sentences(1)[0]), 0.45 * rate
    spoken = sentences * one + (sentences - 1) * gap
    assert spoken < len(kept) < spoken + gap  # inside the gap after the last kept sentence


def test_no_sentence_end_no_cut():
    samples, rate, text = spoken_sentences(3)
    assert cut_at_sentence(samples, rate, text.replace(".", ","), 6.0) is None


def test_no_pause_no_cut():
    assert cut_at_sentence(noise(15), RATE, "One two three. Four five six.", 12.0) is None


def blocks(layout: list[tuple[str, float]]) -> np.ndarray:
    """('s', seconds) of noise as speech, ('p', seconds) of silence as a pause."""
    parts = [
        noise(s, seed=i) if kind == "s" else np.zeros(int(s * RATE), np.float32)
        for i, (kind, s) in enumerate(layout)
    ]
    return np.concatenate(parts)


def test_a_pause_far_from_where_the_text_ends_a_sentence_is_not_a_cut():
    # The sentence ends at a quarter of the text; the only pause is at three quarters.
    audio = blocks([("s", 6.0), ("p", 0.5), ("s", 2.0)])
    text = "Short one. " + "then a much longer second sentence follows here"
    assert cut_at_sentence(audio, RATE, text, 12.0) is None


def test_two_pauses_near_one_sentence_end_is_a_guess_and_no_cut():
    audio = blocks([("s", 4.0), ("p", 0.3), ("s", 0.3), ("p", 0.3), ("s", 4.0)])
    text = "Four seconds of words here. And four more seconds of words."
    assert cut_at_sentence(audio, RATE, text, 6.0) is None


def test_the_cut_keeps_at_least_min_keep_seconds():
    audio = blocks([("s", 2.0), ("p", 0.5), ("s", 8.0)])
    text = "Two secs. " + "eight seconds of words follow this first sentence here now ok"
    assert cut_at_sentence(audio, RATE, text, 6.0) is None


@given(
    lengths=st.lists(st.floats(1.0, 4.0), min_size=2, max_size=6),
    gaps=st.lists(st.floats(0.0, 0.8), min_size=5, max_size=5),
    bound=st.floats(3.0, 14.0),
)
def test_a_cut_is_always_inside_a_pause_and_after_a_sentence(lengths, gaps, bound):
    """Sentences of noise at one pace (bytes per second), separated by gaps of any length
    (0 = none): whatever is cut ends in silence, and its text is whole sentences."""
    layout, words = [], []
    for i, seconds in enumerate(lengths):
        if i:
            layout.append(("p", gaps[i - 1]))
        layout.append(("s", seconds))
        words.append("x" * max(1, int(seconds * 15) - 1) + ".")
    audio, text = blocks(layout), " ".join(words)
    cut = cut_at_sentence(audio, RATE, text, bound)
    if cut is None:
        return
    kept, kept_text = cut
    assert text.startswith(kept_text) and kept_text.endswith(".")
    half = int(MIN_PAUSE_S / 2 * RATE) - int(FRAME_S * RATE)
    assert not np.any(audio[len(kept) - half : len(kept) + half])  # silence on both sides
    assert MIN_KEEP_S * RATE <= len(kept) <= bound * RATE


def test_a_long_reference_is_cut_at_a_sentence_with_its_transcript():
    samples, rate, text = spoken_sentences(3)  # about 15.7 s
    voice = voice_from_bytes(wav_bytes(samples, rate), text)
    assert voice.text == " ".join([DEFAULT_VOICE_TEXT] * 2)
    assert 9.5 < voice.audio.duration_s <= MAX_REF_SECONDS


def test_without_agreement_a_long_reference_is_clipped_as_upstream():
    # No sentence end in the text: upstream's clip at the latest pause after 6 s ...
    audio = blocks([("s", 7.0), ("p", 0.5), ("s", 8.0)])
    voice = prepare_voice(Audio(audio, RATE), "no sentence end here")
    assert voice.text == "no sentence end here" and 6.9 < voice.audio.duration_s < 7.2
    # ... else at 12 s, the transcript kept whole.
    voice = prepare_voice(Audio(noise(20), RATE), "One. Two.")
    assert voice.text == "One. Two." and voice.audio.duration_s == pytest.approx(12.05, abs=0.02)


def test_fit_voice_shortens_only_where_a_sentence_allows():
    samples, rate, text = spoken_sentences(2)
    voice = prepare_voice(Audio(samples, rate), text)
    short = fit_voice(voice, 6.0)
    assert short.text == DEFAULT_VOICE_TEXT and short.audio.duration_s < 6.0
    assert fit_voice(voice, 12.0) is voice  # already within the bound
    assert fit_voice(default_voice(), 6.0) is default_voice()
    unpunctuated = Voice(voice.audio, text.replace(".", ""), "x")
    assert fit_voice(unpunctuated, 6.0) is unpunctuated  # no agreement: not trimmed
