"""Slow, half-open and hostile HTTP clients against a live HTTP-mode worker (the demo model on
127.0.0.1, one slot, four waiting places): half header lines by the hundred, headers and one
byte of body, a client that never reads its stream, clients that leave while queued, bodies that
are not JSON, wrong tokens. In each, a normal request sent while the attackers are connected must
be served within its usual time plus the deadline that frees the worker from them; the deadlines
are small here (settings), the defaults are in docs/http.md "Client bounds".
`pytest tests/adversarial/test_http_clients.py -s` prints the figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from f5worker.serve.http.service import Service
from f5worker.startup.compose import make_worker
from f5worker.testing.http import (
    close_all,
    connect,
    half_header_lines,
    half_sent_bodies,
    http_settings,
    non_reading_stream,
    non_reading_websocket,
    post_until_served,
    request_head,
    serving,
)

pytestmark = pytest.mark.slow

HEADER_S, BODY_S, WRITE_S, QUEUE_S = 2, 2, 2, 1  # a queue wait shorter than the body deadline
MARGIN_S = 6.0  # two shared, busy cores: scheduling noise on top of usual + deadline
TOKEN = "adversarial-http-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEECH_FIELDS = {"quality": "fast", "seed": 5}
SPEECH = {"input": "A normal request among attackers.", **SPEECH_FIELDS}
LONG_JOB_BOUND_S = 60.0  # the demo model fills a 4 KiB window long before this
LONG = " ".join(f"This is sentence number {i} of a long text, spoken slowly." for i in range(40))


@dataclass
class Live:
    url: str
    service: Service
    usual_s: float  # a normal request's latency with nobody else connected


@pytest.fixture(scope="module")
def live(engine) -> Iterator[Live]:
    settings = http_settings(
        max_concurrency=1,
        http_max_waiting=4,
        http_header_timeout_s=HEADER_S,
        http_body_timeout_s=BODY_S,
        http_write_timeout_s=WRITE_S,
        http_queue_timeout_s=QUEUE_S,
        http_max_connections=100,
        http_auth_token=TOKEN,
    )
    service = Service(settings)
    service.ready(make_worker(engine, settings))
    with serving(service) as url:
        normal(url)  # warm
        usual = min(normal(url)[1] for _ in range(2))
        print(f"\nnormal request alone: {usual:.2f} s")
        yield Live(url, service, usual)


def normal(url: str, within_s: float = 120.0) -> tuple[httpx.Response, float]:
    response, took = post_until_served(
        f"{url}/v1/audio/speech", SPEECH, within_s, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200, response.text
    assert len(response.content) > 1000
    return response, took


def settle(live: Live) -> None:
    """Between cases: every slot and place given back."""
    deadline = time.monotonic() + 30
    while live.service.admission.admitted or live.service.admission.reading:
        assert time.monotonic() < deadline, "the worker kept a place"
        time.sleep(0.05)


def test_300_half_header_lines_are_closed_and_lock_nobody_out(live):
    attackers = half_header_lines(live.url, 300)
    try:
        _, took = normal(live.url)
        print(f"with 300 half header lines: {took:.2f} s")
        assert took < live.usual_s + HEADER_S + MARGIN_S
        assert httpx.get(f"{live.url}/ping", timeout=5).status_code == 200
        time.sleep(HEADER_S + 1)
        for sock in attackers[-50:]:  # the last ones, never evicted: closed at the deadline
            sock.settimeout(5)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408 ")
    finally:
        close_all(attackers)
    settle(live)


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/runsync"])
def test_five_half_sent_bodies_delay_a_normal_request_by_the_body_deadline_at_most(live, path):
    attackers = half_sent_bodies(live.url, 5, path, AUTH)
    try:
        time.sleep(0.3)  # they hold every place: one slot and four waiting
        assert live.service.admission.admitted == 5
        started = time.monotonic()  # one POST, no retry: it waits for a place, never 429
        response = httpx.post(f"{live.url}/v1/audio/speech", json=SPEECH, headers=AUTH, timeout=60)
        took = time.monotonic() - started
        assert response.status_code == 200, response.text
        print(f"with 5 half-sent bodies on {path}: {took:.2f} s")
        assert took < live.usual_s + BODY_S + MARGIN_S
    finally:
        close_all(attackers)
    settle(live)


def test_a_client_that_never_reads_its_stream_loses_its_slot(live):
    cancelled = live.service.counters.cancelled
    reader = non_reading_stream(live.url, LONG_PCM, AUTH)
    try:
        time.sleep(0.5)
        _, took = normal(live.url, within_s=240)
        print(f"with a client that never reads: {took:.2f} s")
        # the long job runs until its writes stall, then the write deadline frees the slot
        assert live.service.counters.cancelled == cancelled + 1
        assert took < LONG_JOB_BOUND_S + WRITE_S + live.usual_s + MARGIN_S
    finally:
        reader.close()
    settle(live)


def test_a_websocket_client_that_never_reads_loses_its_session_and_slot(live):
    cancelled = live.service.counters.cancelled
    messages = [
        json.dumps({"type": "session.config", "response_format": "pcm", **SPEECH_FIELDS}),
        json.dumps({"type": "input.text", "text": LONG}),
        json.dumps({"type": "input.done"}),
    ]
    reader = non_reading_websocket(live.url, "/v1/audio/speech/stream", messages, AUTH)
    try:
        time.sleep(0.5)
        _, took = normal(live.url, within_s=240)
        print(f"with a WebSocket client that never reads: {took:.2f} s")
        # sentence after sentence until its sends stall, then the write deadline ends it
        assert live.service.counters.cancelled == cancelled + 1
        assert took < LONG_JOB_BOUND_S + WRITE_S + live.usual_s + MARGIN_S
    finally:
        reader.close()
    settle(live)


def test_clients_that_leave_while_queued_give_their_places_back_at_once(live):
    busy = non_reading_stream(live.url, LONG_PCM, AUTH)
    leavers = []
    try:
        time.sleep(0.3)
        for _ in range(4):  # whole requests, queued behind the busy slot, then gone
            sock = connect(live.url)
            sock.sendall(request_head("/runsync", 26, AUTH) + b'{"input": {"text": "Hi."}}')
            leavers.append(sock)
        time.sleep(0.5)
        close_all(leavers)
        deadline = time.monotonic() + 5
        while live.service.admission.admitted > 1:
            assert time.monotonic() < deadline, "a client that left kept its place"
            time.sleep(0.05)
        # and a new client is served once the slot frees
        normal(live.url, within_s=240)
    finally:
        busy.close()
    settle(live)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json-seq",
        "multipart/form-data; boundary=x",
    ],
)
@pytest.mark.parametrize("path", ["/v1/audio/speech", "/runsync"])
def test_bodies_that_are_not_json_are_415_and_start_nothing(live, path, content_type):
    requests = live.service.counters.requests
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = b'{"input": "Hi.", "text": "Hi."}'
    response = httpx.post(f"{live.url}{path}", content=body, headers=headers, timeout=10)
    assert response.status_code == 415 and "UNSUPPORTED_MEDIA_TYPE" in response.text
    assert live.service.counters.requests == requests
    normal(live.url)


@pytest.mark.parametrize(
    ("authorization", "status"),
    [(None, 401), ("Bearer wrong", 401), ("Bearer " + "x" * 10000, 401), (f"Bearer {TOKEN}", 200)],
)
def test_the_token_is_required_except_for_ping(live, authorization, status):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = httpx.post(f"{live.url}/v1/audio/speech", json=SPEECH, headers=headers, timeout=120)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert httpx.get(f"{live.url}/ping", timeout=5).status_code == 200


LONG_PCM = {"input": LONG, "response_format": "pcm", "quality": "fast", "seed": 5}
