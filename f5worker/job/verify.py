"""Each generated chunk checked by the ASR companion before it is joined and sent.

With `verify`, a chunk's own waveform (before the cross-fade: the chunk alone, as the engine
made it) is transcribed and compared with the chunk's text (asr/cer.py: the character error
rate over a documented normalisation). Above VERIFY_MAX_CER the chunk is made again with the
next seed, at most VERIFY_RETRIES times, stopping at the first try that passes; the try with
the lowest CER is kept (the first of equals), so verifying never makes a chunk worse, only the
job slower. With `captions: "words"` the same transcript, asked for with word times, times the
words (word_timings.py), and a job that does not verify only transcribes.

Seeds: chunk i of an utterance of n chunks is seeded seed + i (engine/plan.chunk_seed); its
k-th retry is seed + i + k * n, the next seed that no chunk of the utterance uses, so a result
names each kept chunk's seed and no two tries share their noise.

Language: each chunk's language is detected until one chunk matches its text; the language
heard there is then given for the rest of the job (detection on a short or garbled chunk is
the recogniser's weakest guess). The recogniser runs on the job's own thread, never on the
torch thread: while it listens, the model serves other requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from f5worker.asr.cer import cer
from f5worker.asr.transcript import Transcriber, Transcript
from f5worker.engine.plan import chunk_seed
from f5worker.job.prepared import Clock


@dataclass(frozen=True)
class ChunkCheck:
    """What the recogniser made of one chunk's kept waveform."""

    seed: int  # the kept try's seed
    retries: int  # how many times the chunk was made again
    cer: float  # the kept try's character error rate against the chunk's text
    passed: bool  # cer <= VERIFY_MAX_CER
    transcript: Transcript  # the kept try's (with word times for `captions: words`)

    def as_dict(self, chunk: int) -> dict[str, Any]:
        """One entry of a result's `verification`."""
        return {
            "chunk": chunk,
            "seed": self.seed,
            "cer": round(self.cer, 4),
            "retries": self.retries,
            "passed": self.passed,
            "transcript": self.transcript.text,
        }


def retry_seeds(seed: int, index: int, count: int, retries: int) -> list[int]:
    """The seeds chunk `index` of `count` may be made with: its own first, then its retries'."""
    return [chunk_seed(seed, index + k * count) for k in range(retries + 1)]


@dataclass
class Checker:
    """One job's checks: `verify` compares and retries, `words` asks for word times."""

    asr: Transcriber
    verify: bool
    words: bool
    max_cer: float
    retries: int
    language: str | None = None  # pinned by the first chunk that matched its text

    def check(
        self,
        text: str,
        wave: np.ndarray,
        sample_rate: int,
        seeds: Sequence[int],
        again: Callable[[int], np.ndarray],
        clock: Clock,
    ) -> tuple[np.ndarray, ChunkCheck]:
        """The chunk's kept waveform and its check. `seeds`: the chunk's seed, then its retry
        seeds (retry_seeds); `again(seed)`: the chunk made again with that seed."""
        best = self._heard(text, wave, sample_rate, seeds[0], clock)
        retries = 0
        for seed in seeds[1 : self.retries + 1] if self.verify else ():
            if best.cer <= self.max_cer:
                break
            with clock("retry"):
                made = again(seed)
            retries += 1
            attempt = self._heard(text, made, sample_rate, seed, clock)
            if attempt.cer < best.cer:
                best = attempt
        passed = best.cer <= self.max_cer
        if passed and self.language is None:
            self.language = best.transcript.language or None
        return best.wave, ChunkCheck(best.seed, retries, best.cer, passed, best.transcript)

    def _heard(
        self, text: str, wave: np.ndarray, sample_rate: int, seed: int, clock: Clock
    ) -> _Try:
        with clock("verify"):
            heard = self.asr.transcribe(wave, sample_rate, language=self.language, words=self.words)
        return _Try(wave, seed, heard, cer(text, heard.text))


@dataclass(frozen=True)
class _Try:
    wave: np.ndarray
    seed: int
    transcript: Transcript
    cer: float
