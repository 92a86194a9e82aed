"""The values a job passes between its stages: a prepared job, its pieces, its control, its clock.

Kept apart from worker.py so that the worker, the batch path and the transports share them
without importing one another (the transports import this module, which imports no torch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from f5worker import presets
from f5worker.audio import Audio, Voice
from f5worker.job.output import Delivery
from f5worker.job.ref_transcripts import RefTranscript
from f5worker.job.schema import TTSRequest
from f5worker.model_ref import ModelRef

if TYPE_CHECKING:  # the engine imports torch; these are only annotations here
    from f5worker.engine.f5tts import F5TTSEngine
    from f5worker.engine.plan import SynthesisParams
    from f5worker.job.verify import Checker, ChunkCheck


@dataclass(frozen=True)
class JobControl:
    """What a serving adapter tells a running job, and hears from it between chunks.

    cancelled: true once the job should stop (a RunPod cancel, an HTTP client that went away);
        checked before each chunk, so the engine is free after the chunk in progress.
    progress: called with (chunks done, chunks in all) after each chunk.
    live: the client plays the audio as it comes (a streamed HTTP body, a WebSocket), so the
        engine's scheduler keeps its listener from running dry (a queue job is live when it
        asks for `stream`).
    """

    cancelled: Callable[[], bool] = lambda: False
    progress: Callable[[int, int], None] = lambda _done, _total: None
    live: bool = False


@dataclass(frozen=True)
class Piece:
    """One text chunk's audio as the engine made it (before any output processing).

    check: what the ASR companion heard in the chunk (verify.py), None when nothing listened.
    lead, wave: where the chunk's own waveform lies in the piece: it starts `lead` samples in
    (0 unless the chunk is shorter than the cross-fade) and lasts `wave` samples, its last
    cross-fade's worth held back for the next piece."""

    index: int
    count: int
    text: str
    audio: Audio
    check: ChunkCheck | None = None
    lead: int = 0
    wave: int = 0

    @property
    def last(self) -> bool:
        return self.index == self.count - 1


@dataclass(frozen=True)
class VoiceChoice:
    """The voice a request speaks with, and what results and metrics say about it.

    name: what results give (`ref_audio`, a library voice after VOICE_ALIASES, or `default`).
    kind: its class for metric labels, never a name: library, alias, default or ref_audio.
    cached: whether it came from the worker's memory (False: read from S3, or sent with the job).
    transcript: the ASR's, for a reference sent without ref_text (None otherwise).
    """

    name: str
    voice: Voice
    kind: str
    cached: bool
    transcript: RefTranscript | None = None


@dataclass
class PreparedJob:
    """A validated job, ready for its first model step (Worker.prepare)."""

    req: TTSRequest
    model: ModelRef
    engine: F5TTSEngine
    voice: Voice
    params: SynthesisParams
    preset: presets.Preset
    chunks: list[str]
    deliver: Delivery
    clock: Clock
    voice_name: str = "default"  # `ref_audio`, a library voice, or `default`
    model_license: str = "unknown"
    voice_kind: str = "default"  # VoiceChoice.kind: library, alias, default or ref_audio
    voice_cached: bool = True
    # Set by the engine call that looked the voice's reference up (reference_cache.Seen).
    reference_cached: bool | None = None
    ref_transcript: RefTranscript | None = None  # VoiceChoice.transcript
    # The ASR companion's checks of each chunk (verify, captions: words); None: no listening.
    checker: Checker | None = None

    def saw_reference(self, hit: bool) -> None:
        self.reference_cached = hit

    @property
    def chars(self) -> int:
        return len(self.req.text)

    @property
    def fade_samples(self) -> int:
        """The cross-fade the engine holds back at the end of each piece but the last."""
        return int(self.params.cross_fade_duration * self.engine.sample_rate)

    def stamp(self, worker_version: str) -> dict[str, Any]:
        """What every item of this job says about how it was made."""
        return {
            "seed": self.params.seed,
            "model": self.model.name,
            "model_license": self.model_license,
            "voice": self.voice_name,
            "quality": self.preset.name,
            "nfe_step": self.params.nfe_step,
            "ref_audio_s": round(self.voice.audio.duration_s, 3),
            "worker_version": worker_version,
        } | self.ref_text_fields()

    def ref_text_fields(self) -> dict[str, Any]:
        """For a reference sent with the job: the transcript the model was given with it
        (`ref_text_used`: the caller's or the ASR's, as cut with the clip) and where it came
        from; with the ASR's, the language it was heard in."""
        if self.voice_kind != "ref_audio":
            return {}
        heard = self.ref_transcript
        if heard is None:
            return {"ref_text_used": self.voice.text, "ref_text_source": "request"}
        return {
            "ref_text_used": self.voice.text,
            "ref_text_source": "asr",
            "ref_language": heard.language,
        }


class Clock:
    """`with clock("stage"):` adds the stage's wall time in seconds to the current item."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self.stages: dict[str, float] = {}
        self.now = now
        self.started = now()  # the job's start: streams' first_audio_s is measured from it

    def __call__(self, name: str) -> _Stage:
        return _Stage(self, name)

    def reset(self) -> None:
        self.stages = {}

    def drop(self, name: str) -> None:
        self.stages.pop(name, None)

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.stages.items()}


class _Stage:
    def __init__(self, clock: Clock, name: str) -> None:
        self.clock = clock
        self.name = name
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = self.clock.now()

    def __exit__(self, *exc: object) -> None:
        elapsed = self.clock.now() - self.start
        self.clock.stages[self.name] = self.clock.stages.get(self.name, 0.0) + elapsed
