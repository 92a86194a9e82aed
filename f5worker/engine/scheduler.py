"""Which pending piece of model work the torch thread runs next (docs/design.md, decision 027).

Every call into the model is a work item: one group of a request's text chunks (or its
reference, a load, a warm-up). A request's thread submits one item and waits for it, so each
request has at most one item pending and its chunks still come out in order. With several
requests at work, the order in which the one torch thread (torch_thread.py) takes their items is
the fairness of the worker:

- `fair` (the default): first chunks before continuations, so a new request's first audio never
  waits behind another request's page; then round-robin, the request served least recently
  first (ties: the item that came first). So that a stream of new requests cannot starve a
  page, a continuation passed over by MAX_PASSED first chunks goes next. One exception keeps a
  page's listener from hearing a gap (decision 035): a *live* request (its audio played as it
  comes: a streamed body or stream items) has a playback clock, started at its first audio.
  At each pick, its continuation is *due* when the audio its listener still has would not
  outlast the rest of the continuation's pass (DUE_MARGIN times what is left of the expected
  time: the request's last pass, per row) plus one more first chunk (the last first pass's
  time) plus DUE_GUARD_S; a due continuation goes before first chunks. So a first chunk goes
  first whenever the page can afford it, even between the page's steps, and waits only when
  it would make the page's listener run dry. A listener already out of audio (a device slower
  than real time) gets no such turn: its stall is not avoidable by making everyone else wait.
- `strict`: `fair` without the playback clock: first chunks always go first (kept for the
  benchmark, which measures what the clock costs and saves).
- `fifo`: the order of submission, as a plain executor would (kept for the benchmark).

A sampling pass is an item in steps (`submit(..., steps=True)`: fn returns a generator that
yields between the sampler's steps and returns the result). After each step the item goes back
among the pending ones, so a new request's first chunk waits for one step of a running page,
not for the page's whole pass (decision 033). Within a rank an item already started goes first:
work is pre-empted only by a higher rank, never interleaved with its peers, so each request's
chunk still finishes as soon as it would alone. Under `fifo` a started item is the oldest and
runs to its end, as before.

Batches across requests (`BATCH_MAX_ITEMS` > 1, the default on CUDA): an item may say it can
share a pass (`Batchable`: a key, its rows, and how to run several items' payloads as one
pass). When the thread starts such an item it takes with it the pending items of other requests
that have not started and share its key, in the rule's order, up to max_rows rows; with
`window_s` it first waits that long for more to arrive. Each member's future gets its own share
of the pass's result. The merged pass runs while any member's request still wants it.

A cancelled request's pending item never runs on: it is dropped when its request's
`cancelled()` says so (checked when the thread picks, and by the waiting submitter every
POLL_S), or at once by `cancel(tag)`; its submitter gets JobCancelled. An item in steps stops at
its next step (its generator is closed, so its `finally` blocks run); a plain item already
running finishes. Nothing here imports torch; tests drive it with plain callables and `take()`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from f5worker.errors import JobCancelled

POLICIES = ("fair", "strict", "fifo")
POLL_S = 0.05  # how often a waiting submitter reads its request's cancel flag
MAX_PASSED = 8  # first chunks that may go ahead of one waiting continuation
DUE_MARGIN = 1.5  # what is left of a live continuation's pass, as its listener must cover it
DUE_GUARD_S = 0.25  # ... plus this: the job's encoding and the network after the pass
REMEMBERED = 4096  # requests whose last turn is remembered (the oldest forgotten first)


def _never() -> bool:
    return False


class WorkTag:
    """One request, as the scheduler sees it: compared by identity, so two requests never share
    a turn even with the same name. `cancelled` is the request's cancel flag (JobControl's).

    `live`: its audio is played as it comes, so it has a playback clock: `produced` (told by the
    engine as each pass's audio is handed out) starts it and counts the audio; `row_s` is what
    its last pass took per row, set by the scheduler."""

    __slots__ = ("audio_s", "cancelled", "heard_from", "live", "name", "row_s")

    def __init__(
        self, name: str = "-", cancelled: Callable[[], bool] = _never, live: bool = False
    ) -> None:
        self.name = name
        self.cancelled = cancelled
        self.live = live
        self.heard_from: float | None = None  # monotonic time of its first audio
        self.audio_s = 0.0
        self.row_s = 0.0

    def produced(self, seconds: float) -> None:
        """The request handed out `seconds` more audio."""
        if self.heard_from is None:
            self.heard_from = time.monotonic()
        self.audio_s += seconds

    def buffered(self, now: float) -> float | None:
        """Seconds of audio a listener playing from the first piece still has (negative: it
        ran out that long ago); None when nobody listens as it comes, or nothing came yet."""
        if not self.live or self.heard_from is None:
            return None
        return self.heard_from + self.audio_s - now

    def __repr__(self) -> str:
        return f"WorkTag({self.name!r})"


@dataclass(frozen=True)
class Batchable:
    """How an item can share a pass with other requests' items: equal keys may go together;
    `run` takes the members' payloads (in order) and returns a generator of one pass's steps
    whose value is one result per payload."""

    key: Hashable
    rows: int
    payload: Any
    run: Callable[[list[Any]], Generator[None, None, list[Any]]]


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
    batch: Batchable | None = None
    rows: int = 1  # chunks in its pass (what its run time is per row of)
    due: bool = False  # a live continuation whose listener is about to run out (at the last pick)
    was_due: bool = False
    ran_s: float = 0.0  # seconds its steps have run
    members: list[WorkItem] = field(default_factory=list)  # a merged pass's items
    on_done: Callable[[WorkItem], None] | None = None  # told once it has a result

    @property
    def started(self) -> bool:
        return self.running is not None

    def execute(self) -> bool:
        """Run fn, or the next step of an item in steps; True once the future is settled (the
        caller has marked it running). False: a step ran and more are to come."""
        start = time.perf_counter()
        try:
            return self._execute()
        finally:
            self.ran_s += time.perf_counter() - start

    def _execute(self) -> bool:
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
        if self.on_done is not None:
            self.on_done(self)
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
    def __init__(self, policy: str = "fair", max_rows: int = 1, window_s: float = 0.0) -> None:
        self.policy = policy
        self.max_rows = max_rows  # rows one pass may gather across requests (1: no batching)
        self.window_s = window_s  # how long a pass that could gather more waits for them
        self.batched = 0  # items that ran in another request's pass
        self._cond = threading.Condition()
        self._pending: list[WorkItem] = []
        self._turns: OrderedDict[WorkTag, int] = OrderedDict()  # tag -> its last turn
        self._seq = itertools.count()
        self._turn = 0
        self.dropped = 0  # items that never ran because their request was cancelled
        self.due = 0  # live continuations that were due (went ahead of first chunks)
        self.first_s = 0.0  # what the last first chunk's pass took

    @property
    def policy(self) -> str:
        return self._policy

    @policy.setter
    def policy(self, value: str) -> None:
        if value not in POLICIES:
            raise ValueError(f"unknown scheduler policy {value!r}; one of {', '.join(POLICIES)}")
        self._policy = value

    def submit(
        self,
        tag: WorkTag,
        first: bool,
        fn: Callable[[], Any],
        steps: bool = False,
        batch: Batchable | None = None,
        rows: int = 1,
    ) -> WorkItem:
        """Queue fn for the torch thread; a request already cancelled gets JobCancelled.
        `steps`: fn returns a generator, run a step at a time (its return value is the result).
        `batch`: the item may instead run in one pass with other requests' items. `rows`: the
        chunks its pass makes (batch.rows when batch is given)."""
        rows = batch.rows if batch is not None else rows
        item = WorkItem(tag, first, fn, next(self._seq), steps, batch=batch, rows=rows)
        item.on_done = self._timed
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
        """take(), waiting until there is something to take (the torch thread's loop); a pass
        that could gather more rows waits up to window_s for them first."""
        with self._cond:
            while not self._pending:
                self._cond.wait()
            deadline = time.monotonic() + self.window_s
            while self._could_gather() and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
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
        if self._policy == "fair":
            self._mark_due(time.monotonic())
        item = min(self._pending, key=self._order)
        self._pending.remove(item)
        if item.started:  # its turn and passes were counted when it started
            return item
        if item.first:
            for other in self._pending:
                other.passed += not other.first
        if not item.future.set_running_or_notify_cancel():  # cancelled through its future
            return self._take()
        self._served(item.tag)
        peers = self._peers(item)
        return item if not peers else self._merged(item, peers)

    def _mark_due(self, now: float) -> None:
        """Read the playback clocks: which live continuations cannot let a first chunk go first."""
        for item in self._pending:
            item.due = self._is_due(item, now)
            if item.due and not item.was_due:
                item.was_due = True
                self.due += 1

    def _is_due(self, item: WorkItem, now: float) -> bool:
        if item.first:
            return False
        left = item.tag.buffered(now)
        if left is None or left <= 0:
            return False
        rest = max(item.tag.row_s * item.rows - item.ran_s, 0.0)  # of its pass, expected
        return left < DUE_MARGIN * rest + self.first_s + DUE_GUARD_S

    def _timed(self, item: WorkItem) -> None:
        """A pass is done: its request (each member's, for a merged pass) learns what it took
        per row; a first chunk's pass is the next estimate of what letting one go first costs."""
        rows = sum(m.rows for m in item.members) if item.members else item.rows
        for each in item.members or [item]:
            each.tag.row_s = item.ran_s / max(rows, 1)
        if item.first and item.steps:
            self.first_s = item.ran_s

    def _served(self, tag: WorkTag) -> None:
        self._turn += 1
        self._turns[tag] = self._turn
        self._turns.move_to_end(tag)
        while len(self._turns) > REMEMBERED:
            self._turns.popitem(last=False)

    def _candidates(self, item: WorkItem) -> list[WorkItem]:
        """Pending items that may share item's pass, in the rule's order."""
        if item.batch is None or self.max_rows <= 1:
            return []
        key = item.batch.key
        same = [
            p
            for p in self._pending
            if p is not item and p.batch and p.batch.key == key and not p.started
        ]
        return sorted(same, key=self._order)

    def _could_gather(self) -> bool:
        """Whether the pass about to start could take more rows than are pending for it."""
        if self.window_s <= 0 or self.max_rows <= 1 or not self._pending:
            return False
        item = min(self._pending, key=self._order)
        if item.started or item.batch is None:
            return False
        rows = item.batch.rows + sum(p.batch.rows for p in self._candidates(item) if p.batch)
        return rows < self.max_rows

    def _peers(self, item: WorkItem) -> list[WorkItem]:
        """Take the pending items that join item's pass (their futures marked running)."""
        rows, peers = item.batch.rows if item.batch else 0, []
        for other in self._candidates(item):
            if other.batch is None or rows + other.batch.rows > self.max_rows:
                continue
            self._pending.remove(other)
            if other.future.set_running_or_notify_cancel():
                rows += other.batch.rows
                peers.append(other)
                self._served(other.tag)
        return peers

    def _merged(self, item: WorkItem, peers: list[WorkItem]) -> WorkItem:
        """One item in steps that runs the members' pass and hands each its share."""
        members = [item, *peers]
        assert item.batch is not None
        run, payloads = item.batch.run, [m.batch.payload for m in members if m.batch]
        everyone_left = lambda: all(m.tag.cancelled() for m in members)  # noqa: E731
        tag = WorkTag(f"{item.tag.name}+{len(peers)}", everyone_left)
        merged = WorkItem(
            tag, item.first, lambda: run(payloads), item.seq, steps=True, members=members
        )
        merged.on_done = self._timed
        merged.future.set_running_or_notify_cancel()
        merged.future.add_done_callback(lambda done: _share(done, members))
        self.batched += len(peers)
        return merged

    def _order(self, item: WorkItem) -> tuple[int, ...]:
        if self._policy == "fifo":
            return (item.seq,)
        rank = 0 if item.passed >= MAX_PASSED else 1 if item.due else 2 if item.first else 3
        return (rank, not item.started, self._turns.get(item.tag, 0), item.seq)

    def _drop(self, item: WorkItem) -> None:
        self.dropped += 1
        item.stop(JobCancelled(f"request {item.tag.name} was cancelled"))


def _share(done: Future[Any], members: list[WorkItem]) -> None:
    """Each member of a merged pass gets its own result, or the pass's error."""
    exc = done.exception()
    results = [None] * len(members) if exc is not None else done.result()
    for member, result in zip(members, results, strict=True):
        if exc is not None:
            member.future.set_exception(exc)
        else:
            member.future.set_result(result)
