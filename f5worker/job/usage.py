"""What a result cost: the `usage` object on each item, and the per-job figures both modes share.

`item_usage` is stamped on every item that carries audio (synthesis.whole_item for a whole
utterance or a batch entry, synthesis.stream_items for a streamed chunk; the HTTP speech route
sends the same fields as headers and in the SSE `done` event). `JobFigures` sums a job's items
into the figures the HTTP mode exports as Prometheus metrics (serve/http/metrics.py) and the
queue mode logs as one JSON line per job (`job <id> metrics {...}`: RunPod has no scrape path
for queue workers).

Nothing here carries user text: characters are counted, not kept, and a voice is named only by
its class (`library`, `alias`, `default`, `ref_audio`), so a label or a log line never holds a
caller's text, voice names beyond the library's own classes, or URLs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from f5worker.job.prepared import PreparedJob

VOICE_KINDS = ("library", "alias", "default", "ref_audio")


def item_usage(
    job: PreparedJob,
    *,
    characters: int,
    chunks: int,
    audio_s: float,
    first_audio_s: float | None = None,
    retries: int = 0,
) -> dict[str, Any]:
    """The `usage` of one item: the text it covers (`characters`, `chunks` of it), its audio,
    the engine's time for it (the clock's `synthesis` stage, and `retry` for the chunks
    verification made again, `retries` of them) and how the job was served."""
    engine_s = job.clock.stages.get("synthesis", 0.0) + job.clock.stages.get("retry", 0.0)
    usage: dict[str, Any] = {
        "characters": characters,
        "audio_s": round(audio_s, 3),
        "steps": job.params.nfe_step * (chunks + retries),
        "engine_s": round(engine_s, 4),
        "rtf": round(engine_s / audio_s, 4) if audio_s > 0 else None,
        "model": job.model.name,
        "quality": job.preset.name,
        "voice_cached": job.voice_cached,
        "reference_cached": job.reference_cached,
    }
    if first_audio_s is not None:
        usage["first_audio_s"] = round(first_audio_s, 4)
    return usage


@dataclass
class JobFigures:
    """One job's figures, summed over its items (no user text: see the module docstring)."""

    status: str = "ok"  # ok or error
    code: str = "OK"  # the coded error of a failed job
    items: int = 0
    characters: int = 0
    audio_s: float = 0.0
    steps: int = 0
    engine_s: float = 0.0
    total_s: float = 0.0
    first_audio_s: float | None = None  # seconds to the first item with audio
    model: str | None = None
    quality: str | None = None
    voice: str | None = None  # the voice's class, never its name
    voice_cached: bool | None = None
    reference_cached: bool | None = None
    ref_transcribe_s: float = 0.0  # the ASR's time on a reference sent without ref_text

    def add(self, item: dict[str, Any], since_start_s: float) -> None:
        """Count one result item, `since_start_s` after the job began."""
        self.items += 1
        usage = item.get("usage")
        if not isinstance(usage, dict):  # a failed batch entry, a voice action
            return
        if self.first_audio_s is None:
            self.first_audio_s = since_start_s
        self.characters += int(usage.get("characters", 0))
        self.audio_s += float(usage.get("audio_s", 0.0))
        self.steps += int(usage.get("steps", 0))
        self.engine_s += float(usage.get("engine_s", 0.0))
        self.model = usage.get("model", self.model)
        self.quality = usage.get("quality", self.quality)
        self.voice_cached = usage.get("voice_cached", self.voice_cached)
        self.reference_cached = usage.get("reference_cached", self.reference_cached)
        timings = item.get("timings")
        if isinstance(timings, dict):
            self.ref_transcribe_s += float(timings.get("ref_transcribe", 0.0))

    def failed(self, code: str) -> None:
        self.status, self.code = "error", code

    @property
    def rtf(self) -> float | None:
        return self.engine_s / self.audio_s if self.audio_s > 0 else None

    def as_json(self) -> str:
        """One line of JSON, numbers rounded."""
        figures = asdict(self) | {"rtf": self.rtf}
        rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
        return json.dumps(rounded, separators=(",", ":"), sort_keys=True)
