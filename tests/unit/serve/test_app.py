"""The HTTP app's routes on the paths that need no model, called as an ASGI app: admission before
the body, a bad body's place given back, clients that leave, Starlette's own errors. No server
and no model. (Statuses, admission, SSE and bodies alone: test_statuses, test_admission,
test_sse, test_body beside this file.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from starlette.exceptions import HTTPException

from f5worker.errors import WorkerError
from f5worker.serve.http.admission import Admission
from f5worker.serve.http.app import create_app
from f5worker.serve.http.service import Service
from f5worker.testing.http import http_settings


class StubWorker:
    """Enough of a Worker for routes that must answer before using it."""

    on_fatal = None

    def error_payload(self, err: WorkerError, job_id: str) -> dict:
        return err.to_payload()


async def call_app(
    app, method: str, path: str, receive, headers: list[tuple[bytes, bytes]] | None = None
) -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers
        if headers is not None
        else [(b"content-type", b"application/json"), (b"content-length", b"16000000")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
    }
    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/runsync"])
def test_a_full_worker_refuses_a_request_before_reading_its_body(path):
    service = Service(http_settings(max_concurrency=1, http_max_waiting=1))
    service.ready(StubWorker())
    service.admission.admit()  # at work
    service.admission.admit()  # waiting
    reads = 0

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b" " * 16_000_000, "more_body": False}

    sent = asyncio.run(call_app(create_app(service), "POST", path, receive))
    assert sent[0]["status"] == 429 and (b"retry-after", b"1") in sent[0]["headers"]
    assert b"OVERLOADED" in sent[1]["body"]
    assert reads == 0 and service.admission.admitted == 2


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/runsync"])
def test_a_bad_body_gives_its_admitted_place_back(path):
    service = Service(http_settings(max_concurrency=1, http_max_waiting=0))
    service.ready(StubWorker())

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{not json", "more_body": False}

    for _ in range(2):  # the second would be refused if the first kept its place
        sent = asyncio.run(call_app(create_app(service), "POST", path, receive))
        assert sent[0]["status"] == 400
    assert service.admission.admitted == 0


def test_a_client_that_leaves_while_queued_leaves_the_queue_at_once_and_is_never_prepared():
    prepared: list[object] = []

    class Worker(StubWorker):
        def prepare(self, *args: object) -> None:
            prepared.append(args)

    service = Service(http_settings(max_concurrency=1, http_max_waiting=1))
    service.ready(Worker())
    messages: Iterator[dict] = iter([])

    async def receive() -> dict:
        message = next(messages, None)
        if message is None:  # the body, then the client hangs up
            await asyncio.sleep(0.01)
            return {"type": "http.disconnect"}
        return message

    async def scenario(path: str) -> list[dict]:
        nonlocal messages
        service.admission = Admission(1, 1)  # bound to this run's event loop
        messages = iter([{"type": "http.request", "body": b'{"input": {}}', "more_body": False}])
        await service.admission.acquire()  # the slot is busy
        queued = asyncio.create_task(call_app(create_app(service), "POST", path, receive))
        await asyncio.sleep(0.1)
        # it left the queue when it left, not when the slot freed
        assert queued.done() and service.admission.admitted == 1
        service.admission.release()
        return await asyncio.wait_for(queued, 5)

    for path in ["/v1/audio/speech", "/runsync"]:
        sent = asyncio.run(scenario(path))
        assert b"CANCELLED" in sent[1]["body"], sent
        assert service.admission.admitted == 0
    assert prepared == []


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/runsync"])
def test_a_client_that_leaves_mid_body_is_no_bug(path, caplog):
    service = Service(http_settings())
    service.ready(StubWorker())

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    sent = asyncio.run(call_app(create_app(service), "POST", path, receive))
    assert sent[0]["status"] == 499 and service.admission.admitted == 0
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, "NOT_FOUND"),
        (405, "METHOD_NOT_ALLOWED"),
        (400, "INVALID_INPUT"),
        (500, "INTERNAL_ERROR"),
    ],
)
@pytest.mark.parametrize("prefix", ["/v1/audio", ""])
def test_starlettes_http_errors_get_the_matching_code(status, code, prefix):
    app = create_app(Service(http_settings()))

    @app.app.app.get(f"{prefix}/raises")  # Quiet wraps RequestMetrics, which wraps FastAPI
    async def raises() -> None:
        raise HTTPException(status, "bad")

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent = asyncio.run(call_app(app, "GET", f"{prefix}/raises", receive))
    body = json.loads(sent[1]["body"])
    assert sent[0]["status"] == status
    assert (body["error"]["code"] if prefix else body["error_code"]) == code


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/runsync"])
@pytest.mark.parametrize(
    "content_type",
    [
        None,
        b"text/plain",
        b"application/x-www-form-urlencoded",
        b"multipart/form-data; b=x",
        b"application/json-seq",
    ],
)
def test_a_body_that_is_not_json_is_415_before_it_is_read(path, content_type):
    service = Service(http_settings())
    service.ready(StubWorker())
    reads = 0

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b'{"input": {}}', "more_body": False}

    headers = [] if content_type is None else [(b"content-type", content_type)]
    sent = asyncio.run(call_app(create_app(service), "POST", path, receive, headers))
    assert sent[0]["status"] == 415 and b"UNSUPPORTED_MEDIA_TYPE" in sent[1]["body"]
    assert reads == 0 and service.admission.admitted == 0


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/runsync"])
def test_a_body_too_slow_is_408_and_its_place_given_back(path):
    service = Service(http_settings(http_body_timeout_s=1, max_concurrency=1, http_max_waiting=0))
    service.ready(StubWorker())
    first = True

    async def receive() -> dict:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b'{"in', "more_body": True}
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    sent = asyncio.run(call_app(create_app(service), "POST", path, receive, JSON))
    assert sent[0]["status"] == 408 and b"REQUEST_TIMEOUT" in sent[1]["body"]
    assert (b"connection", b"close") in sent[0]["headers"]
    assert service.admission.admitted == 0 and service.admission.reading == 0


JSON = [(b"content-type", b"application/json")]
TOKEN = "s3cret-token"


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        (b"Bearer wrong", 401),
        (b"Basic " + TOKEN.encode(), 401),
        (b"Bearer " + TOKEN.encode(), 400),  # past the check: the empty body is the problem
        (b"bearer " + TOKEN.encode(), 400),
    ],
)
@pytest.mark.parametrize("path", ["/v1/audio/speech", "/runsync"])
def test_the_bearer_token_is_checked_when_set(path, authorization, status):
    service = Service(http_settings(http_auth_token=TOKEN))
    service.ready(StubWorker())

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    headers = JSON + ([] if authorization is None else [(b"authorization", authorization)])
    sent = asyncio.run(call_app(create_app(service), "POST", path, receive, headers))
    assert sent[0]["status"] == status
    if status == 401:
        assert (b"www-authenticate", b"Bearer") in sent[0]["headers"]
        assert b"UNAUTHORIZED" in sent[1]["body"] and TOKEN.encode() not in sent[1]["body"]


def test_ping_needs_no_token():
    service = Service(http_settings(http_auth_token=TOKEN))

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent = asyncio.run(call_app(create_app(service), "GET", "/ping", receive, []))
    assert sent[0]["status"] == 204


def test_ping_is_503_while_every_slot_is_stalled():
    service = Service(http_settings(http_stall_s=10))
    service.ready(StubWorker())

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def scenario() -> list[int]:
        service.admission = Admission(1, 0)
        slot = await service.admission.acquire()
        statuses = [(await call_app(create_app(service), "GET", "/ping", receive, []))[0]["status"]]
        slot.progress_at -= 11  # no chunk, no write for longer than HTTP_STALL_S
        statuses.append(
            (await call_app(create_app(service), "GET", "/ping", receive, []))[0]["status"]
        )
        slot.touch()
        statuses.append(
            (await call_app(create_app(service), "GET", "/ping", receive, []))[0]["status"]
        )
        return statuses

    assert asyncio.run(scenario()) == [200, 503, 200]


async def handshake(app, headers: list[tuple[bytes, bytes]] | None = None) -> list[dict]:
    """A WebSocket handshake on the speech stream route, as uvicorn hands it to the app."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/v1/audio/speech/stream",
        "raw_path": b"/v1/audio/speech/stream",
        "query_string": b"",
        "headers": headers or [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "scheme": "ws",
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
    }
    await app(scope, receive, send)
    return sent


def denial(sent: list[dict]) -> tuple[int, str]:
    start, body = sent[0], sent[-1]
    assert (start["type"], body["type"]) == (
        "websocket.http.response.start",
        "websocket.http.response.body",
    )
    return start["status"], json.loads(body["body"])["error"]["code"]


@pytest.mark.parametrize(
    ("ready", "held", "expected"),
    [(False, 0, (503, "INITIALIZING")), (True, 2, (429, "OVERLOADED"))],
)
def test_a_websocket_handshake_is_refused_with_the_coded_status_before_it_is_accepted(
    ready, held, expected
):
    service = Service(http_settings(max_concurrency=1, http_max_waiting=1))
    if ready:
        service.ready(StubWorker())  # type: ignore[arg-type]
    for _ in range(held):  # every place taken
        service.admission.admit()
    sent = asyncio.run(handshake(create_app(service)))
    assert denial(sent) == expected
    assert service.admission.admitted == held  # nothing taken by the refused one


def test_a_websocket_handshake_needs_the_bearer_token_when_set():
    service = Service(http_settings(http_auth_token="t0ken"))
    sent = asyncio.run(handshake(create_app(service), [(b"authorization", b"Bearer nope")]))
    assert denial(sent) == (401, "UNAUTHORIZED")
