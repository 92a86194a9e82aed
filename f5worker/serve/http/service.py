"""What the routes share: the worker once it is ready, the start-up state /ping reports, the
admission bound and the thread pool that steps jobs."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from f5worker.config import Settings
from f5worker.errors import GPUError, NotReady
from f5worker.serve.http.admission import Admission
from f5worker.serve.http.metrics import Metrics

if TYPE_CHECKING:  # the worker module imports torch; /ping answers before it is imported
    from f5worker.job.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class Counters:
    requests: int = 0
    cancelled: int = 0  # streams stopped early because the client went away
    failed: int = 0  # streams cut by a failure after their first byte
    chunks: int = 0  # text chunks synthesized for streamed requests


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker: Worker | None = None  # set by ready()
        self.failure: str | None = None
        self.admission = Admission(settings.max_concurrency, settings.http_max_waiting)
        # One thread per admitted request steps its job; the engine's own thread does the
        # model work, so more threads would not make more GPU work happen at once.
        self.pool = ThreadPoolExecutor(settings.max_concurrency, thread_name_prefix="tts-http")
        limit = settings.first_chunk_max_bytes
        self.first_chunk_bytes: int | None = None if limit < 0 else limit
        self.counters = Counters()
        self.metrics = Metrics(self.admission, lambda: self.worker)  # this app's own registry

    @property
    def state(self) -> str:
        """/ping's answer: `stalled` (503, for as long as it lasts) while every slot is held by
        a request without progress for HTTP_STALL_S: a stuck engine, or requests stuck."""
        if self.failure is not None:
            return "unhealthy"
        if self.worker is None:
            return "initializing"
        return "stalled" if self.admission.stalled(self.settings.http_stall_s) else "healthy"

    def ready(self, worker: Worker) -> None:
        worker.on_fatal = lambda: self.fail("a fatal GPU error")
        self.worker = worker

    def fail(self, reason: str) -> None:
        """Unhealthy for good: /ping answers 503 and RunPod replaces the worker."""
        log.error("worker unhealthy: %s", reason)
        self.failure = reason

    def require_worker(self) -> Worker:
        if self.failure is not None:
            raise GPUError("this worker is unhealthy and being replaced; retry")
        if self.worker is None:
            raise NotReady("the worker is starting (model loading); retry shortly")
        return self.worker
