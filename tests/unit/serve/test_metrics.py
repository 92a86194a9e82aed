"""GET /metrics on the app without a model: requests counted by route, status and code (a good
one, a bad body's 400, an unknown route's 404, a 401), admission state read at scrape time, a
registry per app, the route never behind admission and behind the token. (A real synthesis
moving the audio counters: tests/integration/test_http_native.py.)"""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from f5worker.errors import WorkerError
from f5worker.serve.http.app import create_app
from f5worker.serve.http.service import Service
from f5worker.testing.http import http_settings


class StubWorker:
    on_fatal = None

    class models:  # the pool: what the collector reads
        loads, evictions = 2, 1

        @staticmethod
        def resident() -> list[str]:
            return ["F5TTS_v1_Base"]

    def error_payload(self, err: WorkerError, job_id: str) -> dict:
        return err.to_payload()


def call(app, method: str, path: str, body: bytes = b"", headers=None) -> tuple[int, bytes]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": base + (headers or []),
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def scrape(app, headers=None) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    status, text = call(app, "GET", "/metrics", headers=headers)
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def requests(samples: dict, route: str, status: str, code: str) -> float:
    labels = tuple(sorted({"route": route, "status": status, "code": code}.items()))
    return samples.get(("f5worker_requests_total", labels), 0.0)


def test_requests_are_counted_by_route_status_and_code():
    service = Service(http_settings())
    service.ready(StubWorker())
    app = create_app(service)
    before = scrape(app)
    assert call(app, "GET", "/ping")[0] == 200
    assert call(app, "GET", "/ping")[0] == 200
    assert call(app, "POST", "/runsync", b"{not json")[0] == 400
    assert call(app, "POST", "/v1/audio/speech", b"[1]")[0] == 400
    assert call(app, "GET", "/no/such/route?text=secret")[0] == 404
    after = scrape(app)

    def moved(route: str, status: str, code: str) -> float:
        return requests(after, route, status, code) - requests(before, route, status, code)

    assert moved("/ping", "200", "OK") == 2
    assert moved("/runsync", "400", "INVALID_INPUT") == 1
    assert moved("/v1/audio/speech", "400", "INVALID_INPUT") == 1
    assert moved("other", "404", "NOT_FOUND") == 1  # the path itself is never a label
    assert moved("/metrics", "200", "OK") == 1  # the first scrape
    latency = ("f5worker_request_seconds_count", (("route", "/ping"),))
    assert after[latency] - before.get(latency, 0) == 2
    # labels hold routes, statuses and codes only: no path, query or text from a request
    assert not any("secret" in str(key) or "/no/" in str(key) for key in after)
    # the model pool and the engine's thread, read at scrape time
    assert after[("f5worker_model_loads_total", ())] == 2
    assert after[("f5worker_model_resident", (("model", "F5TTS_v1_Base"),))] == 1
    assert ("f5worker_engine_busy_seconds_total", ()) in after
    for name in ("dropped", "batched", "due"):  # the scheduler's choices, as counters
        assert (f"f5worker_scheduler_{name}_total", ()) in after
    assert after[("f5worker_scheduler_pending", ())] == 0
    assert ("f5worker_gpu_memory_bytes", ()) not in after  # no GPU here: absent, not 0


def test_metrics_answer_when_the_worker_is_full_and_show_admission():
    service = Service(http_settings(max_concurrency=1, http_max_waiting=1))
    service.ready(StubWorker())
    service.admission.admit()
    service.admission.admit()  # full: a speech request is refused ...
    app = create_app(service)
    assert call(app, "POST", "/v1/audio/speech", b"{}")[0] == 429
    samples = scrape(app)  # ... and /metrics still answers
    assert samples[("f5worker_admitted", ())] == 2
    assert samples[("f5worker_waiting", ())] == 2 and samples[("f5worker_working", ())] == 0
    assert samples[("f5worker_rejected_total", ())] == 1
    assert requests(samples, "/v1/audio/speech", "429", "OVERLOADED") == 1


def test_metrics_stay_behind_the_token_and_count_the_refusals():
    service = Service(http_settings(http_auth_token="s3cret"))
    service.ready(StubWorker())
    app = create_app(service)
    assert call(app, "GET", "/metrics")[0] == 401
    samples = scrape(app, headers=[(b"authorization", b"Bearer s3cret")])
    assert requests(samples, "/metrics", "401", "UNAUTHORIZED") == 1


def test_each_app_has_its_own_registry_and_answers_before_the_model_is_ready():
    first, second = Service(http_settings()), Service(http_settings())
    first_app, second_app = create_app(first), create_app(second)
    call(first_app, "GET", "/no-such")
    assert requests(scrape(second_app), "other", "404", "NOT_FOUND") == 0
    assert ("f5worker_model_loads_total", ()) not in scrape(second_app)  # no worker yet
