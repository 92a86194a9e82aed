"""A job's progress reports, sent in order, newest first, never holding up the job.

The job calls the reporter from its thread after each chunk; one background thread per job
posts what was reported, skipping any report a newer one replaced while a post was under way
(a client wants where the job is, not every step). The thread keeps one event loop for the job,
so a post can reuse what the previous one opened (RunPod's HTTP session).

Nothing is posted after `close` returns, because RunPod would show a late progress report
instead of the job's result: every post is cancelled after POST_TIMEOUT_S, strictly shorter than
the flush wait, and once `close` is called no post may run past its deadline. A post that fails
or times out is logged and dropped: progress never fails a job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 5.0
POST_TIMEOUT_S = 3.0  # < FLUSH_TIMEOUT_S: a post in flight when close() is called ends first
CLOSE_TIMEOUT_S = 1.0  # for the post's own clean-up (closing its HTTP session)


class ProgressPost(Protocol):
    """Posts one report; called and closed on the sender's event loop."""

    async def __call__(self, text: str) -> None: ...

    async def aclose(self) -> None: ...


class ProgressSender:
    """`sender(done, total)` from the job; the post runs on the sender's own thread."""

    def __init__(
        self, post: ProgressPost, name: str = "progress", post_timeout: float = POST_TIMEOUT_S
    ) -> None:
        self._post = post
        self._name = name
        self._post_timeout = post_timeout
        self._pending: str | None = None
        self._deadline: float | None = None  # monotonic; set by close
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def __call__(self, done: int, total: int) -> None:
        with self._wake:
            if self._deadline is not None:
                return
            self._pending = f"{done}/{total} chunks"
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._wake.notify()

    def close(self, timeout: float = FLUSH_TIMEOUT_S, flush: bool = True) -> None:
        """Stop taking reports; with flush, send what is pending if it can go within `timeout`.
        No post outlives the call: any still under way by then is cancelled."""
        with self._wake:
            self._deadline = time.monotonic() + (timeout if flush else 0.0)
            if not flush:
                self._pending = None
            self._wake.notify()
            thread = self._thread
        if thread is not None and flush:
            thread.join(timeout + CLOSE_TIMEOUT_S)

    def _run(self) -> None:
        with asyncio.Runner() as runner:
            try:
                while (job := self._next()) is not None:
                    runner.run(self._send(*job))
            finally:
                runner.run(self._aclose())

    def _next(self) -> tuple[str, float] | None:
        """The next report and how long its post may take; None when closed and done."""
        with self._wake:
            while self._pending is None and self._deadline is None:
                self._wake.wait()
            text, self._pending = self._pending, None
            limit = self._post_timeout
            if self._deadline is not None:
                limit = min(limit, self._deadline - time.monotonic())
        return None if text is None or limit <= 0 else (text, limit)

    async def _send(self, text: str, limit: float) -> None:
        try:
            await asyncio.wait_for(self._post(text), limit)
        except Exception as exc:  # TimeoutError included
            log.warning("progress report not sent: %s", type(exc).__name__)

    async def _aclose(self) -> None:
        try:
            await asyncio.wait_for(self._post.aclose(), CLOSE_TIMEOUT_S)
        except Exception as exc:
            log.debug("progress post not closed cleanly: %s", type(exc).__name__)
