"""GET /metrics: the HTTP mode's Prometheus text, from a registry of this app's own.

Each Service holds its own CollectorRegistry (never prometheus_client's global one), so tests
can build several apps in one process. What is counted as it happens (requests, latencies, audio)
is recorded by `RequestMetrics`, an ASGI wrapper outside the bearer check, so 401s and 404s count
too; what is a state (admission, resident models, the engine's busy time, GPU memory) is read at
scrape time by `_StateCollector`. The route answers outside admission, so a full worker still
answers it; it stays behind HTTP_AUTH_TOKEN when one is set (it reveals traffic).

Labels never carry user text: `route` is one of the served paths (anything else is `other`),
`code` an error code (`OK` on success), `voice` a class (job/usage.py), `model` one of the
operator's MODELS.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from f5worker.engine import torch_thread
from f5worker.serve.http.admission import Admission

if TYPE_CHECKING:
    from f5worker.job.worker import Worker

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROUTES = (
    "/v1/audio/speech",
    "/v1/audio/speech/stream",
    "/runsync",
    "/v1/models",
    "/v1/audio/voices",
    "/ping",
    "/metrics",
)
AUDIO_ROUTES = ("/v1/audio/speech", "/runsync")  # first-audio latency: the first body byte
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
RTF_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
OUTCOME = "f5worker_outcome"  # the scope's state key a route records its outcome under


@dataclass
class Outcome:
    """What a route tells the wrapper about its request beyond the status (scope state)."""

    code: str | None = None  # a failure after the response began (status already 200)


class Metrics:
    """The app's registry and what the routes record into it."""

    def __init__(self, admission: Admission, worker: Callable[[], Worker | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "f5worker_requests",
            "HTTP requests by route, status and error code (OK: none)",
            ["route", "status", "code"],
            registry=r,
        )
        self.first_audio = Histogram(
            "f5worker_first_audio_seconds",
            "Seconds from a request's arrival to its first audio byte",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "f5worker_request_seconds",
            "Seconds from a request's arrival to its last byte",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audio = Counter(
            "f5worker_audio_seconds",
            "Seconds of audio synthesized",
            ["route", "model", "voice"],
            registry=r,
        )
        self.rtf = Histogram(
            "f5worker_rtf",
            "Real-time factor per request: engine seconds / audio seconds",
            ["route"],
            buckets=RTF_BUCKETS,
            registry=r,
        )
        r.register(_StateCollector(admission, worker))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def audio_made(
        self, route: str, model: str, voice: str, audio_s: float, engine_s: float
    ) -> None:
        """A request's audio (its model, its voice's class) and the engine's time for it."""
        if audio_s <= 0:
            return
        self.audio.labels(route, model, voice).inc(audio_s)
        self.rtf.labels(route).observe(engine_s / audio_s)


class RequestMetrics:
    """ASGI wrapper: counts each request by route, status and code, and times it (arrival to
    first audio byte on the audio routes, arrival to the end of the body on every route)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else "other"
        outcome = Outcome()
        scope.setdefault("state", {})[OUTCOME] = outcome
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "code": None, "first": None}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                headers = dict(message.get("headers") or ())
                code = headers.get(b"x-error-code")
                seen["code"] = code.decode("latin-1") if code else None
            elif (
                message["type"] == "http.response.body"
                and seen["first"] is None
                and message.get("body")
            ):
                seen["first"] = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            status = int(seen["status"])
            code = outcome.code or seen["code"] or ("OK" if status < 400 else "HTTP_ERROR")
            self.metrics.requests.labels(route, str(status), code).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            if route in AUDIO_ROUTES and status == 200 and seen["first"] is not None:
                self.metrics.first_audio.labels(route).observe(seen["first"])


def outcome_of(state: Any) -> Outcome:
    """The request's Outcome from its `request.state` (a fresh one outside the wrapper)."""
    found = getattr(state, OUTCOME, None)
    return found if isinstance(found, Outcome) else Outcome()


class _StateCollector(Collector):
    """What is a state, read when scraped: admission, models, the engine thread, GPU memory."""

    def __init__(self, admission: Admission, worker: Callable[[], Worker | None]) -> None:
        self.admission = admission
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        adm = self.admission
        working = len(adm.held)
        yield _gauge("f5worker_admitted", "Requests admitted: at work and waiting", adm.admitted)
        yield _gauge("f5worker_working", "Requests holding a slot (at work)", working)
        yield _gauge(
            "f5worker_waiting",
            "Requests admitted and waiting for a slot (or their body)",
            max(adm.admitted - working, 0),
        )
        yield _gauge("f5worker_slots", "Slots (MAX_CONCURRENCY)", adm.limit)
        yield _counter(
            "f5worker_rejected", "Requests refused 429 at once (queue full)", adm.rejected
        )
        yield _counter(
            "f5worker_wait_timeouts",
            "Waits for a place or a slot that ran out (429)",
            adm.timed_out,
        )
        busy_s, wall_s = torch_thread.busy()
        yield _counter(
            "f5worker_engine_busy_seconds", "Seconds the torch thread spent working", busy_s
        )
        yield _gauge(
            "f5worker_engine_busy_ratio",
            "Busy seconds / wall seconds since the torch thread "
            "started (rate() of the counter gives it over a window)",
            busy_s / wall_s if wall_s > 0 else 0.0,
        )
        yield from _scheduler_metrics()
        gpu = torch_thread.gpu_memory_bytes()
        if gpu is not None:  # absent on CPU
            yield _gauge("f5worker_gpu_memory_bytes", "torch.cuda.memory_allocated()", gpu)
        worker = self.worker()
        if worker is None:  # still starting: no models yet
            return
        pool = worker.models
        yield _counter("f5worker_model_loads", "Models loaded on demand", pool.loads)
        yield _counter(
            "f5worker_model_evictions", "Models evicted (MAX_RESIDENT_MODELS)", pool.evictions
        )
        resident = GaugeMetricFamily(
            "f5worker_model_resident", "1 for each model in memory", labels=["model"]
        )
        for name in pool.resident():
            resident.add_metric([name], 1)
        yield resident


def _scheduler_metrics() -> Iterator[Metric]:
    """The engine's scheduler (engine/scheduler.py): how its choices went."""
    sched = torch_thread.scheduler()
    yield _gauge(
        "f5worker_scheduler_pending", "Work items waiting for the torch thread", sched.pending()
    )
    yield _counter(
        "f5worker_scheduler_dropped",
        "Work items of cancelled requests (or clients that left) dropped unrun",
        sched.dropped,
    )
    yield _counter(
        "f5worker_scheduler_batched",
        "Work items that ran in another request's pass (batching across requests)",
        sched.batched,
    )
    yield _counter(
        "f5worker_scheduler_due",
        "Streamed continuations that went before first chunks so their listener would not "
        "run out of audio",
        sched.due,
    )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)
