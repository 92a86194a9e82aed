"""At most MAX_CONCURRENCY requests at work, HTTP_MAX_WAITING more waiting, the rest 429.

A load-balancing endpoint has no queue of its own (RunPod's documentation: requests are dropped
when workers are overloaded), so the worker bounds what it accepts: a short wait for a slot
keeps the GPU busy between requests, and beyond that a client is told to retry (OVERLOADED, 429
with Retry-After) instead of holding a connection open for minutes.

Every wait is bounded (HTTP_QUEUE_TIMEOUT_S) and given back as soon as its client leaves. A
request is admitted before its body is read (so at most limit + max_waiting bodies are held),
and counts as *reading* until its body is complete: when the full queue holds requests still
reading, which finish or time out within HTTP_BODY_TIMEOUT_S, a new request waits for a place
instead of being refused, so slow senders cannot lock everyone out. Each slot records when its
request last made progress (a chunk synthesized, a byte written): `stalled` is /ping's rule.
Used from the event loop only; slots are released on the loop too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from f5worker.errors import JobCancelled, Overloaded


class Slot:
    """A request at work: since when, and its last progress (set from any thread)."""

    def __init__(self) -> None:
        self.since = self.progress_at = time.monotonic()

    def touch(self) -> None:
        self.progress_at = time.monotonic()


class Admission:
    def __init__(self, limit: int, max_waiting: int) -> None:
        self.limit = limit
        self.max_waiting = max_waiting
        self._slots = asyncio.Semaphore(limit)
        self._admitted = 0  # working + waiting (reading included)
        self._reading = 0  # admitted, body not yet complete
        self._changed = asyncio.Event()
        self.held: set[Slot] = set()
        self.rejected = 0
        self.timed_out = 0  # waits for a place or a slot that ran out

    @property
    def admitted(self) -> int:
        return self._admitted

    @property
    def reading(self) -> int:
        return self._reading

    async def acquire(self) -> Slot:
        """Wait for a slot, or raise Overloaded at once when the wait queue is full."""
        self.admit()
        return await self.wait_for_slot()

    def admit(self) -> None:
        """Count a request in, or raise Overloaded when the wait queue is full."""
        if self._admitted >= self.limit + self.max_waiting:
            self.rejected += 1
            raise Overloaded(
                f"this worker is busy ({self.limit} at work, {self.max_waiting} waiting); retry"
            )
        self._admitted += 1

    async def enter(self, timeout_s: float | None = None) -> None:
        """admit() for a request about to read its body. While the full queue holds requests
        still reading theirs, wait (at most timeout_s) for one of them to finish or time out;
        a queue full of complete requests refuses at once."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while self._admitted >= self.limit + self.max_waiting and self._reading:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                self.timed_out += 1
                break
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)
        self.admit()
        self._reading += 1

    def body_read(self) -> None:
        """The request entered with enter() has its whole body."""
        self._reading -= 1
        self._notify()

    def withdraw(self, reading: bool = False) -> None:
        """An admitted request that leaves before it has a slot (bad body, client gone)."""
        self._admitted -= 1
        if reading:
            self._reading -= 1
        self._notify()

    async def wait_for_slot(
        self, timeout_s: float | None = None, gone: asyncio.Event | None = None
    ) -> Slot:
        """After admit(): wait for a slot, at most timeout_s (then Overloaded) and only while
        `gone` is unset (then JobCancelled): a request that leaves the queue withdraws itself."""
        acquire = asyncio.ensure_future(self._slots.acquire())
        left = asyncio.ensure_future(gone.wait()) if gone is not None else None
        waits = {acquire} if left is None else {acquire, left}
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this wait itself was cancelled
            if await self._settle(acquire, left):
                self._slots.release()
            self.withdraw()
            raise
        if not await self._settle(acquire, left):
            self.withdraw()
            if gone is not None and gone.is_set():
                raise JobCancelled("the client left while its request waited")
            self.timed_out += 1
            raise Overloaded(f"no slot became free within {timeout_s} s; retry")
        slot = Slot()
        self.held.add(slot)
        return slot

    def release(self, slot: Slot | None = None) -> None:
        self._admitted -= 1
        if slot is not None:
            self.held.discard(slot)
        self._slots.release()
        self._notify()

    def stalled(self, stall_s: float) -> bool:
        """Every slot held by a request that made no progress for stall_s: nothing this worker
        accepts will be served (a stuck engine, or stuck requests); /ping says so."""
        now = time.monotonic()
        held = list(self.held)
        return len(held) >= self.limit and all(now - s.progress_at > stall_s for s in held)

    @staticmethod
    async def _settle(acquire: asyncio.Future[Any], left: asyncio.Future[Any] | None) -> bool:
        """Stop both waits; whether the slot was acquired (it may win a race with the cancel)."""
        if left is not None:
            left.cancel()
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
        return not acquire.cancelled()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
