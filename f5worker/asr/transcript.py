"""What the job path asks of a speech recogniser, and what it gets back.

The job layer sees only `Transcriber`: the faster-whisper engine implements it, and tests give
a scripted one (f5worker/testing/asr.py), so retry, keep-best, alignment and caching are tested
without a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Word:
    """One recognised word, its times in seconds from the start of the transcribed audio."""

    start: float
    end: float
    text: str
    probability: float = 1.0


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    words: tuple[Word, ...] = ()
    seconds: float = 0.0  # wall time the recogniser took


class Transcriber(Protocol):
    def transcribe(
        self,
        samples: np.ndarray,
        sample_rate: int,
        *,
        language: str | None = None,
        words: bool = False,
    ) -> Transcript:
        """Mono float32 samples -> their transcript (`words`: with word times). `language`
        None: detected. Raises errors.WorkerError subclasses only."""
        ...
