"""WhisperTranscriber: the Transcriber the job path gets, over faster-whisper (CTranslate2).

Loaded once, on first use (or in the background at start-up with ASR_PRELOAD=on): the model's
directory comes from the source chain (asr/weights.py), then faster_whisper.WhisperModel loads
it on the TTS engine's device, float16 on CUDA and int8 on CPU unless ASR_COMPUTE_TYPE says
otherwise (docs/decisions/028). A failed load is remembered for RETRY_AFTER_S, so requests that
need the ASR fail fast with ASRUnavailable instead of each running the chain again, and the
companion tries again afterwards.

One transcription at a time (a lock): CTranslate2 runs its own threads inside each call, so
callers are job threads, never the engine's torch thread, which keeps synthesising meanwhile.
Decoding is greedy at temperature 0 with no previous-text conditioning, no VAD filter (inputs
are references and synthesised chunks, seconds long, with no long silences to skip) and a token
budget that grows with the audio's length, so a model that loops stops early. Timestamp tokens
only when word times are asked for (see transcribe).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from f5worker.asr.transcript import Transcript, Word
from f5worker.errors import ASRUnavailable, InternalError, InvalidInput, WorkerError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # Whisper's input rate
RETRY_AFTER_S = 60.0  # how long a failed load is answered from memory
# Decoding budget: about twice the densest speech's token rate (Chinese, Japanese), plus the
# few tokens a very short input needs; Whisper's 448-token window caps it.
TOKENS_PER_S = 12
MIN_TOKENS = 16
MAX_TOKENS = 440  # 448 less the prompt (start, language, task, no-timestamps)

Locate = Callable[[], Path]  # the model's directory, from the source chain (may raise)


def compute_type_for(device: str, requested: str = "auto") -> str:
    """CTranslate2's compute type: ASR_COMPUTE_TYPE, or float16 on CUDA and int8 on CPU."""
    if requested != "auto":
        return requested
    return "float16" if device == "cuda" else "int8"


class WhisperTranscriber:
    """A Transcriber over faster_whisper.WhisperModel, loaded lazily, once, thread-safely."""

    def __init__(
        self,
        locate: Locate,
        device: str = "cpu",
        compute_type: str = "auto",
        *,
        cpu_threads: int = 0,
        tokens_per_s: float = TOKENS_PER_S,
        name: str = "asr",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = device
        self.compute_type = compute_type_for(device, compute_type)
        self.name = name
        self._locate = locate
        self._cpu_threads = cpu_threads
        self._tokens_per_s = tokens_per_s  # the decoding budget's rate (benchmarks lower it)
        self._clock = clock
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._model: Any = None
        self._failure: tuple[float, ASRUnavailable] | None = None
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Find and load the model unless it is loaded; ASRUnavailable when it cannot be (the
        same error, from memory, for RETRY_AFTER_S)."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            if self._failure is not None and self._clock() < self._failure[0]:
                raise self._failure[1]
            started = time.perf_counter()
            try:
                self._model = self._load()
            except ASRUnavailable as err:
                self._failure = (self._clock() + RETRY_AFTER_S, err)
                raise
            self._failure = None
            self.load_seconds = time.perf_counter() - started
            log.info(
                "ASR model %s loaded on %s (%s) in %.2f s",
                self.name,
                self.device,
                self.compute_type,
                self.load_seconds,
            )

    def load_in_background(self) -> threading.Thread:
        """ASR_PRELOAD=on: load on a daemon thread; a failure is logged (requests that need the
        ASR then get it as their error)."""

        def run() -> None:
            try:
                self.load()
            except WorkerError as err:
                log.warning("ASR model %s not preloaded: %s: %s", self.name, err.code, err.message)

        thread = threading.Thread(target=run, name="asr-preload", daemon=True)
        thread.start()
        return thread

    def _load(self) -> Any:
        try:
            model_dir = self._locate()
        except WorkerError as err:
            if isinstance(err, ASRUnavailable):
                raise
            raise ASRUnavailable(f"ASR model {self.name}: {err.code}: {err.message}") from err
        try:
            from faster_whisper import WhisperModel

            return WhisperModel(
                str(model_dir),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self._cpu_threads,
            )
        except Exception as exc:  # ctranslate2 raises RuntimeError/ValueError for any bad model
            log.exception("ASR model %s failed to load from %s", self.name, model_dir)
            raise ASRUnavailable(
                f"ASR model {self.name} does not load: {type(exc).__name__}"
            ) from exc

    def transcribe(
        self,
        samples: np.ndarray,
        sample_rate: int,
        *,
        language: str | None = None,
        words: bool = False,
    ) -> Transcript:
        audio = _as_16k(samples, sample_rate)
        self.load()
        model = self._model
        if language is not None and language not in model.supported_languages:
            raise InvalidInput(f"language {language[:20]!r} is not one the ASR model knows")
        seconds = len(audio) / SAMPLE_RATE
        budget = min(MAX_TOKENS, MIN_TOKENS + math.ceil(self._tokens_per_s * min(seconds, 30.0)))
        with self._run_lock:
            started = time.perf_counter()
            try:
                segments, info = model.transcribe(
                    audio,
                    language=language,
                    task="transcribe",
                    beam_size=1,
                    temperature=0.0,
                    condition_on_previous_text=False,
                    vad_filter=False,
                    # Without word times, no timestamp tokens: one window per 30 s. With them,
                    # Whisper's own timestamps end the last segment; without those, faster-
                    # whisper re-decodes the audio after the last word in a window of its own
                    # (a second encoder pass, on the trailing silence of a chunk).
                    without_timestamps=not words,
                    word_timestamps=words,
                    max_new_tokens=budget,
                )
                segments = list(segments)  # decoding happens while iterating
            except Exception as exc:  # a CTranslate2 failure (CUDA out of memory, say)
                log.exception("ASR transcription failed (%.1f s of audio)", seconds)
                raise InternalError(f"ASR transcription failed: {type(exc).__name__}") from exc
            took = time.perf_counter() - started
        text = "".join(s.text for s in segments).strip()
        timed = tuple(
            Word(float(w.start), float(w.end), w.word.strip(), float(w.probability))
            for s in segments
            for w in (s.words or ())
        )
        return Transcript(text, info.language, timed, took)


def _as_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz; anything else is InvalidInput."""
    audio = np.asarray(samples)
    if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
        raise InvalidInput("ASR input must be mono floating-point samples")
    if sample_rate <= 0:
        raise InvalidInput(f"ASR input sample rate {sample_rate} is not positive")
    audio = np.nan_to_num(audio.astype(np.float32, copy=False))
    if sample_rate == SAMPLE_RATE or len(audio) == 0:
        return audio
    import soxr

    return soxr.resample(audio, sample_rate, SAMPLE_RATE).astype(np.float32, copy=False)
