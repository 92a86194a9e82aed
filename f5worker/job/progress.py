"""A job's progress reports, sent in order, newest first, never holding up the job.

The job calls the reporter from its thread after each chunk; one background thread per job
posts what was reported, skipping any report a newer one replaced while a post was under way
(a client wants where the job is, not every step). `close` waits (bounded) for the last post,
so a progress report cannot arrive after the job's result, which RunPod would show instead of
the result. A post that fails is logged and dropped: progress never fails a job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 5.0


class ProgressSender:
    """`sender(done, total)` from the job; `post(text)` runs on the sender's own thread."""

    def __init__(self, post: Callable[[str], None], name: str = "progress") -> None:
        self._post = post
        self._name = name
        self._pending: str | None = None
        self._closed = False
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def __call__(self, done: int, total: int) -> None:
        with self._wake:
            if self._closed:
                return
            self._pending = f"{done}/{total} chunks"
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._wake.notify()

    def close(self, timeout: float = FLUSH_TIMEOUT_S, flush: bool = True) -> None:
        """Stop taking reports; with flush, wait up to `timeout` for what is pending to go."""
        with self._wake:
            self._closed = True
            if not flush:
                self._pending = None
            self._wake.notify()
            thread = self._thread
        if thread is not None and flush:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                text, self._pending = self._pending, None
            if text is None:
                return  # closed and nothing left
            try:
                self._post(text)
            except Exception as exc:
                log.warning("progress report not sent: %s", type(exc).__name__)
