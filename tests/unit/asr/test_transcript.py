"""The Transcriber seam: the scripted stand-in answers as the job path expects a recogniser to."""

from __future__ import annotations

import numpy as np

from f5worker.asr.transcript import Transcriber, Transcript
from f5worker.testing.asr import ScriptedTranscriber


def test_scripted_answers_in_order_then_repeats_the_last():
    asr: Transcriber = ScriptedTranscriber(["one", "two"])
    audio = np.zeros(24_000, np.float32)
    assert [asr.transcribe(audio, 24_000).text for _ in range(3)] == ["one", "two", "two"]


def test_scripted_word_times_cover_the_audio_in_order():
    asr = ScriptedTranscriber(["hello there world"])
    got = asr.transcribe(np.zeros(48_000, np.float32), 24_000, language="de", words=True)
    assert got.language == "de"
    assert [w.text for w in got.words] == ["hello", "there", "world"]
    assert got.words[0].start == 0.0 and got.words[-1].end == 2.0
    assert all(a.end <= b.start for a, b in zip(got.words, got.words[1:], strict=False))


def test_scripted_answers_may_be_a_function_of_the_audio():
    asr = ScriptedTranscriber(lambda s, r: Transcript(f"{len(s) / r:.0f} s", "en"))
    assert asr.transcribe(np.zeros(72_000, np.float32), 24_000).text == "3 s"
    assert asr.calls == [(72_000, 24_000, None, False)]
