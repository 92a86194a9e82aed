"""Reference transcripts: the ASR's answer checked for words, cached by the clip's content and
language (bounded, thread-safe, one transcription for concurrent requests of one clip)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from f5worker.asr.transcript import Transcript
from f5worker.audio import Audio, Voice
from f5worker.errors import InvalidInput, ModelError, WorkerError
from f5worker.job.ref_transcripts import (
    NO_ASR,
    UNHEARD,
    RefTranscripts,
    content_key,
    has_words,
)
from f5worker.testing.asr import ScriptedTranscriber
from f5worker.testing.audio import noise

RATE = 24000
CLIP = noise(2, RATE)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Hello there.", True),
        ("Hi", True),
        ("42", True),
        ("你好", True),
        ("", False),
        ("   ", False),
        (".", False),
        ("a", False),
        ("[Music]", False),
        ("[Music] [Applause]", False),
        ("(upbeat music)", False),
        ("♪ ♪ ♪", False),
        ("♪ la la ♪", True),
        ("___", False),
    ],
)
def test_a_transcript_needs_words(text, words):
    assert has_words(text) is words


def test_the_transcript_is_cleaned_and_the_language_passed_or_detected():
    asr = ScriptedTranscriber(["  Hello,\n  world. ", Transcript("Bonjour.", "fr")])
    transcripts = RefTranscripts(asr)
    heard = transcripts.transcribe(CLIP, RATE, "en")
    assert (heard.text, heard.language, heard.cached) == ("Hello, world.", "en", False)
    assert heard.seconds > 0
    detected = transcripts.transcribe(noise(2, RATE, seed=1), RATE, None)
    assert (detected.text, detected.language) == ("Bonjour.", "fr")
    assert [(n, rate, lang) for n, rate, lang, _ in asr.calls] == [
        (len(CLIP), RATE, "en"),
        (len(CLIP), RATE, None),
    ]


def test_one_clip_is_transcribed_once_per_language():
    asr = ScriptedTranscriber(lambda samples, rate: "Same words.")
    transcripts = RefTranscripts(asr)
    first = transcripts.transcribe(CLIP, RATE, None)
    again = transcripts.transcribe(CLIP.copy(), RATE, None)  # equal content, another array
    assert (first.cached, again.cached, again.seconds, again.text) == (
        False,
        True,
        0.0,
        "Same words.",
    )
    transcripts.transcribe(CLIP, RATE, "de")  # asked in another language: heard again
    transcripts.transcribe(CLIP, 16000, None)  # the same numbers at another rate: another clip
    assert len(asr.calls) == 3


def test_the_key_is_the_content():
    assert content_key(CLIP, RATE, None) == content_key(CLIP.astype(np.float64), RATE, None)
    other = CLIP.copy()
    other[100] += 1e-3
    keys = {
        content_key(CLIP, RATE, None),
        content_key(other, RATE, None),
        content_key(CLIP, RATE, "en"),
        content_key(CLIP, 16000, None),
    }
    assert len(keys) == 4


def test_the_cache_is_bounded_least_recently_used_first():
    asr = ScriptedTranscriber(lambda samples, rate: "Words here.")
    transcripts = RefTranscripts(asr, max_entries=2)
    a, b, c = (noise(1, RATE, seed=s) for s in (1, 2, 3))
    transcripts.transcribe(a, RATE, None)
    transcripts.transcribe(b, RATE, None)
    assert transcripts.transcribe(a, RATE, None).cached  # a is now the most recent
    transcripts.transcribe(c, RATE, None)  # evicts b
    assert transcripts.cached_count() == 2
    assert transcripts.transcribe(a, RATE, None).cached
    assert not transcripts.transcribe(b, RATE, None).cached
    assert len(asr.calls) == 4


def test_concurrent_requests_for_one_clip_share_one_transcription():
    release = threading.Event()

    def slow(samples: np.ndarray, rate: int) -> str:
        release.wait(5)
        return "Shared words."

    asr = ScriptedTranscriber(slow)
    transcripts = RefTranscripts(asr)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(transcripts.transcribe, CLIP, RATE, None) for _ in range(4)]
        while not asr.calls:  # the first is transcribing; the others must wait for it
            threading.Event().wait(0.01)
        release.set()
        heard = [f.result(5) for f in futures]
    assert len(asr.calls) == 1
    assert {h.text for h in heard} == {"Shared words."}
    assert sorted(h.cached for h in heard) == [False, True, True, True]


class _Failing:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def transcribe(self, samples, sample_rate, *, language=None, words=False) -> Transcript:
        self.calls += 1
        raise self.error


def test_the_asrs_coded_errors_pass_unchanged_and_are_not_cached():
    error = ModelError("ASR weights for large-v3-turbo were found nowhere")
    asr = _Failing(error)
    transcripts = RefTranscripts(asr)
    for _ in range(2):
        with pytest.raises(ModelError) as info:
            transcripts.transcribe(CLIP, RATE, None)
        assert info.value is error
    assert asr.calls == 2 and transcripts.cached_count() == 0


@pytest.mark.parametrize("heard", ["", "[Music]", "♪"])
def test_no_words_is_bad_ref_audio_asking_for_ref_text(heard):
    transcripts = RefTranscripts(ScriptedTranscriber([heard]))
    for _ in range(2):  # cached: the same clip is refused again without a second run
        with pytest.raises(WorkerError) as info:
            transcripts.transcribe(CLIP, RATE, None)
        assert (info.value.code, info.value.message) == ("BAD_REF_AUDIO", UNHEARD)
    assert "ref_text" in UNHEARD


def test_without_an_asr_the_refusal_says_what_to_send_or_enable():
    transcripts = RefTranscripts(None)
    assert not transcripts.available
    with pytest.raises(InvalidInput) as info:
        transcripts.require()
    assert info.value.code == "INVALID_INPUT" and info.value.message == NO_ASR
    with pytest.raises(InvalidInput):
        transcripts.transcribe(CLIP, RATE, None)


def test_a_voice_gets_its_transcript_as_its_text():
    voice = Voice(Audio(CLIP, RATE), "", name="custom")
    transcripts = RefTranscripts(ScriptedTranscriber(["Words of the clip."]))
    heard_voice, heard = transcripts.voice_with_text(voice, "en")
    assert heard_voice.audio is voice.audio and heard_voice.name == "custom"
    assert heard_voice.text == heard.text == "Words of the clip."
