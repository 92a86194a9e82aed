"""Which pending piece of model work the torch thread runs next (docs/design.md, decision 027).

Every call into the model is a work item: one group of a request's text chunks (or its
reference, a load, a warm-up). A request's thread submits one item and waits for it, so each
request has at most one item pending and its chunks still come out in order. With several
requests at work, the order in which the one torch thread (torch_thread.py) takes their items is
the fairness of the worker:

- `fair` (the default): first chunks before continuations, so a new request's first audio never
  waits behind another request's page; then round-robin, the request served least recently
  first (ties: the item that came first). So that a stream of new requests cannot starve a
  page, a continuation passed over by MAX_PASSED first chunks goes next.
- `fifo`: the order of submission, as a plain executor would (kept for the benchmark).

A sampling pass is an item in steps (`submit(..., steps=True)`: fn returns a generator that
yields between the sampler's steps and returns the result). After each step the item goes back
among the pending ones, so a new request's first chunk waits for one step of a running page,
not for the page's whole pass (decision 033). Within a rank an item already started goes first:
work is pre-empted only by a higher rank, never interleaved with its peers, so each request's
chunk still finishes as soon as it would alone. Under `fifo` a started item is the oldest and
runs to its end, as before.

A cancelled request's pending item never runs on: it is dropped when its request's
`cancelled()` says so (checked when the thread picks, and by the waiting submitter every
POLL_S), or at once by `cancel(tag)`; its submitter gets JobCancelled. An item in steps stops at
its next step (its generator is closed, so its `finally` blocks run); a plain item already
running finishes. Nothing here imports torch; tests drive it with plain callables and `take()`.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from f5worker.errors import JobCancelled

POLICIES = ("fair", "fifo")
POLL_S = 0.05  # how often a waiting submitter reads its request's cancel flag
MAX_PASSED = 8  # first chunks that may go ahead of one waiting continuation
REMEMBERED = 4096  # requests whose last turn is remembered (the oldest forgotten first)


def _never() -> bool:
    return False


class WorkTag:
    """One request, as the scheduler sees it: compared by identity, so two requests never share
    a turn even with the same name. `cancelled` is the request's cancel flag (JobControl's)."""

    __slots__ = ("cancelled", "name")

    def __init__(self, name: str = "-", cancelled: Callable[[], bool] = _never) -> None:
        self.name = name
        self.cancelled = cancelled

    def __repr__(self) -> str:
        return f"WorkTag({self.name!r})"


@dataclass(eq=False)
class WorkItem:
    tag: WorkTag
    first: bool  # the request's first audio (or what comes before it): goes before the rest
    fn: Callable[[], Any]
    seq: int
    steps: bool = False  # fn returns a generator: run a step at a time
    future: Future[Any] = field(default_factory=Future)
    passed: int = 0  # first chunks taken ahead of this continuation
    running: Generator[Any, None, Any] | None = None  # an item in steps, once started

    @property
    def started(self) -> bool:
        return self.running is not None

    def execute(self) -> bool:
        """Run fn, or the next step of an item in steps; True once the future is settled (the
        caller has marked it running). False: a step ran and more are to come."""
        try:
            if self.steps:
                if self.running is None:
                    self.running = self.fn()
                try:
                    next(self.running)
                    return False
                except StopIteration as done:
                    result = done.value
            else:
                result = self.fn()
        except BaseException as exc:  # handed to the submitter, as an executor does
            self.running = None
            self.future.set_exception(exc)
            return True
        self.running = None
        self.future.set_result(result)
        return True

    def stop(self, exc: BaseException) -> None:
        """Settle a pending item with exc without running it on (its generator closed)."""
        running, self.running = self.running, None
        if running is not None:
            running.close()
            self.future.set_exception(exc)
        elif self.future.set_running_or_notify_cancel():
            self.future.set_exception(exc)


class Scheduler:
    def __init__(self, policy: str = "fair") -> None:
        self.policy = policy
        self._cond = threading.Condition()
        self._pending: list[WorkItem] = []
        self._turns: OrderedDict[WorkTag, int] = OrderedDict()  # tag -> its last turn
        self._seq = itertools.count()
        self._turn = 0
        self.dropped = 0  # items that never ran because their request was cancelled

    @property
    def policy(self) -> str:
        return self._policy

    @policy.setter
    def policy(self, value: str) -> None:
        if value not in POLICIES:
            raise ValueError(f"unknown scheduler policy {value!r}; one of {', '.join(POLICIES)}")
        self._policy = value

    def submit(
        self, tag: WorkTag, first: bool, fn: Callable[[], Any], steps: bool = False
    ) -> WorkItem:
        """Queue fn for the torch thread; a request already cancelled gets JobCancelled.
        `steps`: fn returns a generator, run a step at a time (its return value is the result)."""
        item = WorkItem(tag, first, fn, next(self._seq), steps)
        with self._cond:
            if tag.cancelled():
                self._drop(item)
            else:
                self._pending.append(item)
                self._cond.notify()
        return item

    def resume(self, item: WorkItem) -> None:
        """Put an item in steps back among the pending after a step (the torch thread)."""
        with self._cond:
            if item.tag.cancelled():
                self._drop(item)
            else:
                self._pending.append(item)
                self._cond.notify()

    def take(self) -> WorkItem | None:
        """The item to run now (marked running, its request's turn recorded), or None when
        nothing is pending. Items of cancelled requests are dropped on the way."""
        with self._cond:
            return self._take()

    def next(self) -> WorkItem:
        """take(), waiting until there is something to take (the torch thread's loop)."""
        with self._cond:
            while (item := self._take()) is None:
                self._cond.wait()
            return item

    def wait(self, item: WorkItem) -> Any:
        """The item's result, as fn would give it; JobCancelled as soon as its request is
        cancelled while the item is still pending (it then never runs)."""
        if item.tag.cancelled is _never:
            return item.future.result()
        while True:
            try:
                return item.future.result(timeout=POLL_S)
            except TimeoutError:
                if item.tag.cancelled():
                    self.withdraw(item)

    def withdraw(self, item: WorkItem) -> bool:
        """Drop the item if it is still pending (its future raises JobCancelled)."""
        with self._cond:
            if item not in self._pending:
                return False
            self._pending.remove(item)
            self._drop(item)
            return True

    def cancel(self, tag: WorkTag) -> int:
        """Drop every pending item of the request; how many were dropped."""
        with self._cond:
            mine = [i for i in self._pending if i.tag is tag]
            for item in mine:
                self._pending.remove(item)
                self._drop(item)
            return len(mine)

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def _take(self) -> WorkItem | None:
        for item in [i for i in self._pending if i.tag.cancelled()]:
            self._pending.remove(item)
            self._drop(item)
        if not self._pending:
            return None
        item = min(self._pending, key=self._order)
        self._pending.remove(item)
        if item.started:  # its turn and passes were counted when it started
            return item
        if item.first:
            for other in self._pending:
                other.passed += not other.first
        if not item.future.set_running_or_notify_cancel():  # cancelled through its future
            return self._take()
        self._turn += 1
        self._turns[item.tag] = self._turn
        self._turns.move_to_end(item.tag)
        while len(self._turns) > REMEMBERED:
            self._turns.popitem(last=False)
        return item

    def _order(self, item: WorkItem) -> tuple[int, ...]:
        if self._policy == "fifo":
            return (item.seq,)
        rank = 0 if item.passed >= MAX_PASSED else 1 if item.first else 2
        return (rank, not item.started, self._turns.get(item.tag, 0), item.seq)

    def _drop(self, item: WorkItem) -> None:
        self.dropped += 1
        item.stop(JobCancelled(f"request {item.tag.name} was cancelled"))
