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
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_ident: int | None = None  # the torch thread's, once it has started
_since: float | None = None  # monotonic time the torch thread started
_busy_s = 0.0  # seconds the torch thread has spent running work; only that thread adds to it


def _started() -> None:
    global _ident, _since
    _ident = threading.get_ident()
    _since = time.monotonic()


def _timed(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    global _busy_s
    start = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        _busy_s += time.perf_counter() - start


# The thread starts with the first call, not at import.
_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch", initializer=_started)


def run(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """fn(*args, **kwargs) on the torch thread: its result or its exception, as a direct call
    would give. Called from the torch thread itself it runs inline (no self-deadlock)."""
    if is_current():
        return fn(*args, **kwargs)
    return _pool.submit(_timed, fn, *args, **kwargs).result()


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
