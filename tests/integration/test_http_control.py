"""The HTTP mode's control paths on 127.0.0.1: /ping through start-up, overload (429), a
client that leaves mid-stream, and failures before and after the first byte."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from f5worker.errors import SynthesisFailed
from f5worker.job.prepared import JobControl
from f5worker.job.worker import Worker
from f5worker.serve.http.service import Service
from f5worker.startup.compose import make_worker
from f5worker.testing.http import http_settings, serving
from f5worker.testing.s3_servers import free_port

FAST = {"quality": "fast", "seed": 5}
SPEECH = {"input": "A sentence or two to keep the engine busy for a while.", **FAST}
LONG = " ".join(f"This is sentence number {i} of a long text, spoken slowly." for i in range(40))


def wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_ping_says_initializing_then_healthy_and_other_routes_wait(engine):
    settings = http_settings()
    service = Service(settings)
    with serving(service) as url:
        assert httpx.get(f"{url}/ping").status_code == 204
        speech = httpx.post(f"{url}/v1/audio/speech", json=SPEECH)
        assert speech.status_code == 503 and speech.headers["retry-after"]
        assert speech.json()["error"]["code"] == "INITIALIZING"
        native = httpx.post(f"{url}/runsync", json={"input": {"text": "Hi."}})
        assert native.status_code == 503 and native.json()["error_code"] == "INITIALIZING"

        service.ready(make_worker(engine, settings))
        ping = httpx.get(f"{url}/ping")
        assert (ping.status_code, ping.json()) == (200, {"status": "healthy"})

        service.fail("a test")
        assert httpx.get(f"{url}/ping").status_code == 503
        assert httpx.post(f"{url}/v1/audio/speech", json=SPEECH).status_code == 503


def test_ping_on_its_own_port():
    settings = http_settings(port_health=free_port())
    with serving(Service(settings)):
        assert httpx.get(f"http://127.0.0.1:{settings.port_health}/ping").status_code == 204


@pytest.fixture
def busy(engine) -> Iterator[tuple[str, Service]]:
    settings = http_settings(max_concurrency=1, http_max_waiting=1)
    service = Service(settings)
    service.ready(make_worker(engine, settings))
    with serving(service) as url:
        yield url, service


def test_more_requests_than_slots_get_429_and_every_accepted_one_completes(busy):
    url, service = busy
    results: list[httpx.Response] = []
    start = threading.Barrier(6)

    def call() -> None:
        start.wait()
        results.append(httpx.post(f"{url}/v1/audio/speech", json=SPEECH, timeout=120))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads)
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 200, 429, 429, 429, 429]  # 1 at work + 1 waiting
    for r in results:
        if r.status_code == 429:
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "OVERLOADED"
        else:
            assert len(r.content) > 1000
    # a slot is released once the job thread is done, which may be just after the last byte
    wait_for(lambda: service.admission.admitted == 0)
    assert service.admission.rejected == 4


def test_a_client_that_leaves_mid_stream_stops_the_chunks_not_yet_made(busy, engine):
    url, service = busy
    body = {"input": LONG, "response_format": "pcm", **FAST}
    job = service.worker.prepare(
        {"openai_route": "/v1/audio/speech", "openai_input": body},
        first_chunk_bytes=service.first_chunk_bytes,
    )
    total = len(job.chunks)
    assert total >= 8
    with httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert next(response.iter_raw())  # the first chunk's audio, then hang up
    wait_for(lambda: service.counters.cancelled == 1 and service.admission.admitted == 0)
    # the chunk in progress (on CPU a pair side by side) may finish; nothing after it starts
    assert service.counters.chunks <= 3 < total
    # and the worker serves the next request at once
    assert httpx.post(f"{url}/v1/audio/speech", json=SPEECH, timeout=120).status_code == 200


class FailingWorker(Worker):
    """The real worker whose engine fails at chunk `fail_at`."""

    fail_at = 0

    def pieces(self, job, control):
        for piece in super().pieces(job, control):
            if piece.index == self.fail_at:
                raise SynthesisFailed("the model could not synthesize this chunk")
            yield piece


@pytest.fixture
def failing(engine) -> Iterator[tuple[str, FailingWorker, Service]]:
    settings = http_settings()
    service = Service(settings)
    worker = make_worker(engine, settings, worker_cls=FailingWorker)
    service.ready(worker)
    with serving(service) as url:
        yield url, worker, service


def test_a_failure_in_the_first_chunk_gets_its_status(failing):
    url, worker, _ = failing
    worker.fail_at = 0
    for route, body in [
        ("/v1/audio/speech", SPEECH),
        ("/runsync", {"input": {"text": SPEECH["input"], **FAST}}),
    ]:
        response = httpx.post(f"{url}{route}", json=body, timeout=120)
        assert response.status_code == 422, response.text
        assert "SYNTHESIS_FAILED" in response.text


def test_a_failure_after_the_first_byte_cuts_audio_and_ends_sse_with_an_error(failing, caplog):
    url, worker, service = failing
    worker.fail_at = 1
    body = {"input": LONG[:600], "response_format": "pcm", **FAST}
    with (
        pytest.raises(httpx.RemoteProtocolError),  # no final chunk: not a short "valid" file
        httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=120) as response,
    ):
        assert response.status_code == 200
        for _ in response.iter_raw():
            pass
    # logged once with its code, not as a traceback from the server
    assert "failed: SYNTHESIS_FAILED" in caplog.text and "Traceback" not in caplog.text
    with httpx.stream(
        "POST", f"{url}/v1/audio/speech", json={**body, "stream_format": "sse"}, timeout=120
    ) as response:
        events = [json.loads(x[6:]) for x in response.iter_lines() if x.startswith("data: ")]
    assert events[0]["type"] == "speech.audio.delta"
    assert events[-1] == {
        "type": "error",
        "error": {
            "code": "SYNTHESIS_FAILED",
            "message": "the model could not synthesize this chunk",
        },
    }
    wait_for(lambda: service.admission.admitted == 0)
    assert (service.counters.failed, service.counters.cancelled) == (2, 0)


def test_the_voices_route_serves_the_voice_list_action(engine):
    settings = http_settings()  # no bucket: the library holds the default voice only
    service = Service(settings)
    worker = make_worker(engine, settings)
    service.ready(worker)
    with serving(service) as url:
        listing = httpx.get(f"{url}/v1/audio/voices").json()
    action = list(worker.run({"id": "v", "input": {"action": "voice.list"}}, JobControl()))
    assert listing["data"] == action[0]["voices"]
    assert [v["name"] for v in listing["data"]] == ["default"]
    assert set(listing["data"][0]) == {
        "name",
        "duration_s",
        "created",
        "transcript_preview",
        "consent",
    }


class BrokenWorker(Worker):
    """A bug outside the coded errors: prepare raises what no route expects."""

    def prepare(self, *args, **kwargs):
        raise RuntimeError("a bug")

    def run(self, *args, **kwargs):
        raise RuntimeError("a bug")


def test_an_unexpected_exception_gets_the_coded_500_not_plain_text(engine, caplog):
    settings = http_settings()
    service = Service(settings)
    service.ready(make_worker(engine, settings, worker_cls=BrokenWorker))
    with serving(service) as url:
        speech = httpx.post(f"{url}/v1/audio/speech", json=SPEECH, timeout=30)
        native = httpx.post(f"{url}/runsync", json={"input": {"text": "Hi."}}, timeout=30)
        assert service.admission.admitted == 0
    assert speech.status_code == 500 and speech.json()["error"]["code"] == "INTERNAL_ERROR"
    assert native.status_code == 500 and native.json()["error_code"] == "INTERNAL_ERROR"
    assert "a bug" in caplog.text
