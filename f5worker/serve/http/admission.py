"""At most MAX_CONCURRENCY requests at work, HTTP_MAX_WAITING more waiting, the rest 429.

A load-balancing endpoint has no queue of its own (RunPod's documentation: requests are dropped
when workers are overloaded), so the worker bounds what it accepts: a short wait for a slot
keeps the GPU busy between requests, and beyond that a client is told at once to retry
(OVERLOADED, 429 with Retry-After) instead of holding a connection open for minutes.
Used from the event loop only; slots are released on the loop too.
"""

from __future__ import annotations

import asyncio

from f5worker.errors import Overloaded


class Admission:
    def __init__(self, limit: int, max_waiting: int) -> None:
        self.limit = limit
        self.max_waiting = max_waiting
        self._slots = asyncio.Semaphore(limit)
        self._admitted = 0  # working + waiting
        self.rejected = 0

    @property
    def admitted(self) -> int:
        return self._admitted

    async def acquire(self) -> None:
        """Wait for a slot, or raise Overloaded at once when the wait queue is full."""
        self.admit()
        await self.wait_for_slot()

    def admit(self) -> None:
        """Count a request in, or raise Overloaded when the wait queue is full. Routes call
        this before reading a body, so at most limit + max_waiting bodies are held at once."""
        if self._admitted >= self.limit + self.max_waiting:
            self.rejected += 1
            raise Overloaded(
                f"this worker is busy ({self.limit} at work, {self.max_waiting} waiting); retry"
            )
        self._admitted += 1

    def withdraw(self) -> None:
        """An admitted request that leaves before it has a slot (bad body, client gone)."""
        self._admitted -= 1

    async def wait_for_slot(self) -> None:
        """After admit(): wait for a slot; withdraws the request if the wait is cancelled."""
        try:
            await self._slots.acquire()
        except BaseException:  # the client left while waiting
            self.withdraw()
            raise

    def release(self) -> None:
        self._admitted -= 1
        self._slots.release()
