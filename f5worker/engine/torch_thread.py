"""One long-lived thread for all of the process's torch work.

torch's CPU operators run on OpenMP, and libgomp gives every OS thread that runs a parallel
region a team of worker threads of its own. Once a process holds more OpenMP threads than
cores, libgomp shortens its spin-waits, so between the many small operators of a sampling
step the workers fall asleep and every region pays a futex wake-up. A worker that imports and
loads on its main thread and synthesizes on job threads holds two or more teams. Measured on 2
cores (scripts/bench_threads.py, docs/benchmarks.md): a demo-model sentence takes 1.27-1.44x as
long that way as when one thread does all the torch work; with one intra-op thread the gap
mostly goes.

So importing f5-tts, loading, warm-up and every synthesis run here, whichever thread asks. The
engine's work is serial anyway (one model, one job on it at a time), so one thread costs nothing.
Which pending call runs next is the scheduler's choice (scheduler.py: SCHEDULER=fair, first
chunks before continuations, then round-robin across requests; or fifo): `run_for` names the
request and whether the call makes its first audio; plain `run` is a request of its own.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, ParamSpec, TypeVar

from f5worker.engine.scheduler import Batchable, Scheduler, WorkTag

P = ParamSpec("P")
T = TypeVar("T")

_ident: int | None = None  # the torch thread's, once it has started
_since: float | None = None  # monotonic time the torch thread started
_busy_s = 0.0  # seconds the torch thread has spent running work; only that thread adds to it
_scheduler = Scheduler()
_start = threading.Lock()
_thread: threading.Thread | None = None


def _loop() -> None:
    global _ident, _since, _busy_s
    _ident = threading.get_ident()
    _since = time.monotonic()
    while True:
        item = _scheduler.next()
        start = time.perf_counter()
        try:
            done = item.execute()
        finally:
            _busy_s += time.perf_counter() - start
        if not done:
            _scheduler.resume(item)


def _started() -> None:
    """The thread starts with the first call, not at import."""
    global _thread
    with _start:
        if _thread is None:
            _thread = threading.Thread(target=_loop, name="torch", daemon=True)
            _thread.start()


def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """fn(*args, **kwargs) on the torch thread: its result or its exception, as a direct call
    would give. Called from the torch thread itself it runs inline (no self-deadlock)."""
    return run_for(None, True, fn, *args, **kwargs)


def run_for(
    tag: WorkTag | None, first: bool, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """run() as part of request `tag` (None: a request of its own); `first`: the call makes
    (or prepares) the request's first audio. JobCancelled when the request is cancelled before
    the call starts: it then never runs."""
    if is_current():
        return fn(*args, **kwargs)
    _started()
    item = _scheduler.submit(tag or WorkTag(), first, functools.partial(fn, *args, **kwargs))
    result: T = _scheduler.wait(item)
    return result


def run_steps_for(
    tag: WorkTag | None,
    first: bool,
    steps: Callable[[], Generator[Any, None, T]],
    batch: Batchable | None = None,
    rows: int = 1,
) -> T:
    """run_for() of a generator function, a step at a time: between its steps the torch thread
    may run other requests' work (scheduler.py). Its return value is the result. Called from
    the torch thread itself it runs to its end inline. `batch`: how the call may instead share
    a pass with other requests' calls (scheduler.Batchable; only when batching is on); `rows`:
    the chunks the call makes (the scheduler's estimate of a request's next pass is per row)."""
    if is_current():
        gen = steps()
        while True:
            try:
                next(gen)
            except StopIteration as done:
                result: T = done.value
                return result
    _started()
    item = _scheduler.submit(tag or WorkTag(), first, steps, steps=True, batch=batch, rows=rows)
    value: T = _scheduler.wait(item)
    return value


def use_policy(policy: str) -> None:
    """SCHEDULER: `fair`, `strict` or `fifo` (scheduler.POLICIES), from the next pick on."""
    _scheduler.policy = policy


def use_batching(max_rows: int, window_s: float = 0.0) -> None:
    """BATCH_MAX_ITEMS and BATCH_WINDOW_MS: rows one pass may gather across requests (1: none)
    and how long a pass that could gather more waits for them."""
    _scheduler.max_rows = max_rows
    _scheduler.window_s = window_s


def batching() -> bool:
    """Whether passes may gather other requests' items (callers then describe theirs)."""
    return _scheduler.max_rows > 1


def scheduler() -> Scheduler:
    """The process's one scheduler (its counters, for tests and benchmarks)."""
    return _scheduler


def is_current() -> bool:
    """Whether the caller is the torch thread."""
    return threading.get_ident() == _ident


def busy() -> tuple[float, float]:
    """(seconds the torch thread spent working, seconds since it started): a monotonic counter
    and the wall time it is measured against (both 0 before the first call)."""
    if _since is None:
        return 0.0, 0.0
    return _busy_s, time.monotonic() - _since


def gpu_memory_bytes() -> int | None:
    """torch.cuda.memory_allocated() where torch is already imported and has a GPU, else None.
    Never imports torch: a caller that must not wait for it (the HTTP metrics) may ask."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return int(torch.cuda.memory_allocated())
