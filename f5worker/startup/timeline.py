"""The start-up timeline: each step's duration, and how much of it really ran side by side.

Start-up runs the model step (S3 sync or hub fetch: I/O) on a thread while the main thread
checks flash-attn and imports torch and f5-tts. The `ready:` line reports `overlap_saved`: the
time during which steps on different threads both ran, less the time a step spent waiting for
another (the demo generator needs the f5-tts import the main thread is doing). Summing the steps
and subtracting the total would count such waiting as saved time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Span:
    start: float
    end: float
    thread: int

    def overlap(self, other: Span) -> float:
        return max(0.0, min(self.end, other.end) - max(self.start, other.start))


class Timeline:
    """`with timeline.step("name"):` logs the step's duration and keeps it for the summary;
    `with timeline.waiting():` inside a step marks time spent blocked on another thread."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.started = clock()
        self.spans: dict[str, Span] = {}
        self.waits: list[Span] = []
        self._lock = threading.Lock()

    @property
    def steps(self) -> dict[str, float]:
        return {name: span.end - span.start for name, span in self.spans.items()}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        with self._span() as record:
            yield
        with self._lock:
            self.spans[name] = record[0]
        log.info("step %s took %.2f s", name, record[0].end - record[0].start)

    @contextmanager
    def waiting(self) -> Iterator[None]:
        with self._span() as record:
            yield
        with self._lock:
            self.waits.append(record[0])

    @contextmanager
    def _span(self) -> Iterator[list[Span]]:
        record: list[Span] = []
        start = self.clock()
        try:
            yield record
        finally:
            record.append(Span(start, self.clock(), threading.get_ident()))

    def overlap(self) -> float:
        """Seconds during which steps on different threads both did work."""
        spans = list(self.spans.values())
        both = sum(
            a.overlap(b)
            for i, a in enumerate(spans)
            for b in spans[i + 1 :]
            if a.thread != b.thread
        )
        waited = sum(w.overlap(s) for w in self.waits for s in spans if s.thread != w.thread)
        return max(0.0, both - waited)

    def summary(self, **extra: str) -> str:
        total = self.clock() - self.started
        parts = [f"{k}={v:.2f}s" for k, v in self.steps.items()]
        parts.append(f"overlap_saved={self.overlap():.2f}s")
        parts += [f"{k}={v}" for k, v in extra.items()]
        return f"total={total:.2f}s " + " ".join(parts)
