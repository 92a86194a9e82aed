"""A scripted Transcriber for tests of the logic around the ASR (retry, keep-best, alignment,
caching): it answers from a list, or with a function of the audio, and records its calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from f5worker.asr.transcript import Transcript, Word


class ScriptedTranscriber:
    def __init__(
        self,
        answers: Sequence[str | Transcript] | Callable[[np.ndarray, int], str | Transcript],
        language: str = "en",
    ) -> None:
        self._answers = answers if callable(answers) else list(answers)
        self.language = language
        self.calls: list[tuple[int, int, str | None, bool]] = []  # (samples, rate, lang, words)

    def transcribe(
        self,
        samples: np.ndarray,
        sample_rate: int,
        *,
        language: str | None = None,
        words: bool = False,
    ) -> Transcript:
        self.calls.append((len(samples), sample_rate, language, words))
        if callable(self._answers):
            answer = self._answers(samples, sample_rate)
        else:
            answer = self._answers[min(len(self.calls), len(self._answers)) - 1]
        if isinstance(answer, Transcript):
            return answer
        return Transcript(
            answer,
            language or self.language,
            _even_words(answer, samples, sample_rate) if words else (),
        )


def _even_words(text: str, samples: np.ndarray, sample_rate: int) -> tuple[Word, ...]:
    """Words spread evenly over the audio: a stand-in for real word times."""
    tokens = text.split()
    if not tokens:
        return ()
    step = len(samples) / sample_rate / len(tokens)
    return tuple(Word(i * step, (i + 1) * step, w) for i, w in enumerate(tokens))
