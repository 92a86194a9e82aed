"""The HTTP mode end to end behind a fake RunPod load-balancing gateway (testing/lb_gateway.py):
a normal request passes, a 31 MB body is refused at the gateway (413) and never reaches the
worker, and a request longer than the gateway's limit is cut (524 before its response starts,
the stream dropped after), the worker cancelling the job and freeing its slot."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from f5worker.serve.http.service import Service
from f5worker.startup.compose import make_worker
from f5worker.testing.http import http_settings, serving
from f5worker.testing.lb_gateway import MAX_BODY_BYTES, lb_gateway

pytestmark = pytest.mark.slow

SPEECH = {"input": "Through the gateway.", "quality": "fast", "seed": 5}
LONG = " ".join(f"This is sentence number {i} of a long text, spoken slowly." for i in range(40))
LIMIT_S = 1.5  # the gateway's request limit here (RunPod's is 5.5 minutes)


@pytest.fixture(scope="module")
def behind_gateway(engine) -> Iterator[tuple[str, Service, object]]:
    settings = http_settings(max_concurrency=1)
    service = Service(settings)
    service.ready(make_worker(engine, settings))
    with (
        serving(service) as worker_url,
        lb_gateway(worker_url, max_request_s=LIMIT_S) as (
            url,
            gateway,
        ),
    ):
        yield url, service, gateway


def wait_idle(service: Service) -> None:
    deadline = time.monotonic() + 30
    while service.admission.admitted:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_normal_request_passes_the_gateway(behind_gateway):
    url, _, _ = behind_gateway
    response = httpx.post(f"{url}/v1/audio/speech", json=SPEECH, timeout=60)
    assert response.status_code == 200 and len(response.content) > 1000
    assert httpx.get(f"{url}/ping", timeout=5).status_code == 200


def test_a_31_mb_body_is_refused_at_the_gateway(behind_gateway):
    url, service, gateway = behind_gateway
    requests = service.counters.requests
    body = b'{"input": "' + b"a" * (31 * 1000 * 1000) + b'"}'
    assert len(body) > MAX_BODY_BYTES
    response = httpx.post(
        f"{url}/v1/audio/speech",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413 and 413 in gateway.refused
    assert service.counters.requests == requests


def test_a_request_longer_than_the_gateway_allows_is_cut_and_the_worker_lets_go(behind_gateway):
    url, service, gateway = behind_gateway
    cut, cancelled = gateway.cut, service.counters.cancelled
    body = {"input": LONG, "response_format": "pcm", "quality": "fast", "seed": 5}
    started = time.monotonic()
    with (
        pytest.raises(httpx.HTTPError),  # the stream ends without its last chunk
        httpx.stream("POST", f"{url}/v1/audio/speech", json=body, timeout=60) as response,
    ):
        assert response.status_code == 200
        for _ in response.iter_raw():
            pass
    assert time.monotonic() - started < LIMIT_S + 5
    assert gateway.cut == cut + 1
    wait_idle(service)
    assert service.counters.cancelled == cancelled + 1
    # a native request that outlives the limit before its response starts: 524
    job = {"text": LONG, "format": "mp3", **FAST}  # mp3: well inside the inline budget
    native = httpx.post(f"{url}/runsync", json={"input": job}, timeout=60)
    assert native.status_code == 524 and 524 in gateway.refused
    wait_idle(service)
    assert httpx.post(f"{url}/v1/audio/speech", json=SPEECH, timeout=60).status_code == 200


FAST = {"quality": "fast", "seed": 5}
