"""The models one worker serves: the default one always resident, the others loaded on demand.

MODELS lists them (config.py); a job's `model` field picks one by its name (or its storage key);
unset or `default` is the first. At most MAX_RESIDENT_MODELS engines stay loaded: loading one
more evicts the least recently used (never the one being loaded), drops the pool's reference and
asks the torch thread to collect and empty CUDA's cache, so GPU memory stays bounded. A job that
is still running on an evicted engine keeps it alive until it finishes, so with
MAX_CONCURRENCY > 1 one extra engine can briefly outlive its eviction.

Loads happen one at a time (the load lock), outside the dict's lock, so jobs on resident models
never wait for another model's load. A model's files are found (`fetch`, the source chain)
before anything is evicted, so a job naming a model that is nowhere gets its coded error and
costs the resident models nothing. A model that failed to prepare or load is remembered for
FAILED_MODEL_TTL_S: the jobs naming it meanwhile get MODEL_ERROR (not retryable: the same job
fails the same way until then) at once, without the load lock and without rerunning the source
chain. A fatal error (a broken GPU) is never remembered: the worker is replaced anyway.
Never imports torch itself (the loader and `free` do).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from f5worker.errors import ModelError, ModelNotFound, WorkerError, describe_names
from f5worker.model_ref import ModelRef

log = logging.getLogger(__name__)

DEFAULT_NAME = "default"
FAILED_MODEL_TTL_S = 60.0  # how long a model that failed to prepare or load is not retried
E = TypeVar("E")


class ModelPool(Generic[E]):
    def __init__(
        self,
        refs: Sequence[ModelRef],
        load: Callable[[ModelRef], E],
        max_resident: int,
        free: Callable[[], None] = lambda: None,
        fetch: Callable[[ModelRef], object] = lambda ref: None,
        failed_ttl_s: float = FAILED_MODEL_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not refs:
            raise ValueError("a pool needs at least one model")
        self.refs = tuple(refs)
        self.default = self.refs[0]
        self._by_name = {r.name: r for r in self.refs} | {
            r.key: r for r in self.refs if r.key not in {x.name for x in self.refs}
        }
        self._load = load
        self._free = free
        self._fetch = fetch
        self.max_resident = max(1, max_resident)
        self._engines: OrderedDict[str, E] = OrderedDict()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self.loads = 0
        self.evictions = 0
        self._failed_ttl_s = failed_ttl_s
        self._clock = clock
        self._failed: dict[str, tuple[float, WorkerError]] = {}  # name -> (when, why)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.refs]

    def resident(self) -> list[str]:
        with self._lock:
            return list(self._engines)

    def resident_engine(self, ref: ModelRef) -> E | None:
        """The engine of a loaded model, without touching its place in the LRU order."""
        with self._lock:
            return self._engines.get(ref.name)

    def resolve(self, requested: str | None) -> ModelRef:
        if requested is None or requested.strip() in ("", DEFAULT_NAME):
            return self.default
        ref = self._by_name.get(requested.strip())
        if ref is None:
            raise ModelNotFound(
                f"this worker does not serve that model; available: {describe_names(self.names)}"
                f" (or `{DEFAULT_NAME}`)"
            )
        return ref

    def add(self, ref: ModelRef, engine: E) -> None:
        """A model loaded at start-up (the default, or MODELS_PRELOAD=all)."""
        with self._lock:
            self._engines[ref.name] = engine
            self._engines.move_to_end(ref.name)

    def get(self, requested: str | None) -> tuple[ModelRef, E, float | None]:
        """(model, engine, seconds this call spent loading it or waiting for its load)."""
        ref = self.resolve(requested)
        engine = self._resident(ref)
        if engine is not None:
            return ref, engine, None
        self._raise_if_failed(ref)
        started = time.perf_counter()
        with self._load_lock:
            engine = self._resident(ref)  # another job may have loaded it meanwhile
            if engine is None:
                self._raise_if_failed(ref)  # or failed to, while this one waited
                engine = self._load_once(ref)
        return ref, engine, time.perf_counter() - started

    def _load_once(self, ref: ModelRef) -> E:
        try:
            self._fetch(ref)
            self._evict_for_one_more()
            log.info("loading model %s on first use", ref.key)
            engine = self._load(ref)
        except WorkerError as err:
            if not err.fatal:
                with self._lock:
                    self._failed[ref.name] = (self._clock(), err)
            raise
        self.loads += 1
        self.add(ref, engine)
        return engine

    def _raise_if_failed(self, ref: ModelRef) -> None:
        with self._lock:
            failed = self._failed.get(ref.name)
            if failed is None:
                return
            when, err = failed
            left = self._failed_ttl_s - (self._clock() - when)
            if left <= 0:
                del self._failed[ref.name]
                return
        raise ModelError(
            f"model {ref.name} is unavailable ({err.code}: {err.message}); "
            f"not retried for another {left:.0f} s"
        )

    def _resident(self, ref: ModelRef) -> E | None:
        with self._lock:
            engine = self._engines.get(ref.name)
            if engine is not None:
                self._engines.move_to_end(ref.name)
            return engine

    def _evict_for_one_more(self) -> None:
        evicted = []
        with self._lock:
            while len(self._engines) >= self.max_resident:
                name, _ = self._engines.popitem(last=False)
                evicted.append(name)
        if evicted:
            self.evictions += len(evicted)
            log.info("evicted model(s) %s (MAX_RESIDENT_MODELS=%d)", evicted, self.max_resident)
            self._free()
