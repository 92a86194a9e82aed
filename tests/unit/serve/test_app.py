"""The HTTP adapter's small parts: statuses per code, the admission bound, SSE framing and
bounded JSON bodies; and the routes' paths that need no model, called as an ASGI app. No server
and no model."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator

import pytest
from starlette.exceptions import HTTPException

from f5worker import errors
from f5worker.errors import InvalidInput, Overloaded, RequestTooLarge, WorkerError
from f5worker.serve.http import sse
from f5worker.serve.http.admission import Admission
from f5worker.serve.http.app import create_app
from f5worker.serve.http.body import parse_json, read_json
from f5worker.serve.http.service import Service
from f5worker.serve.http.statuses import error_response, openai_body
from f5worker.testing.http import http_settings


def test_every_code_has_its_own_status_and_only_internal_errors_are_500():
    # Imported so that the error classes defined outside errors.py are in the tree too.
    import f5worker.job.voice_store
    import f5worker.s3
    import f5worker.startup.flash_attn  # noqa: F401

    classes = errors.error_classes()
    assert len(classes) > 20
    assert {c.code for c in classes if c.http_status == 500} == {"INTERNAL_ERROR"}
    assert all(400 <= c.http_status < 600 for c in classes)
    assert errors.http_status_of("SOMETHING_NEW") == 500
    assert errors.http_status_of("VOICE_NOT_FOUND") == 404


def test_busy_and_starting_say_when_to_retry():
    assert error_response(errors.Overloaded("busy"), "openai").headers["Retry-After"] == "1"
    assert error_response(errors.NotReady("wait"), "native").headers["Retry-After"] == "1"
    assert "Retry-After" not in error_response(errors.InvalidInput("no"), "native").headers


def test_the_openai_error_shape_carries_our_code():
    body = openai_body(errors.VoiceNotFound("no voice named x"))
    assert body == {
        "error": {
            "message": "no voice named x",
            "type": "invalid_request_error",
            "param": None,
            "code": "VOICE_NOT_FOUND",
        }
    }
    assert openai_body(errors.Overloaded("busy"))["error"]["type"] == "rate_limit_error"
    assert openai_body(errors.GPUError("gone"))["error"]["type"] == "server_error"


def test_admission_lets_limit_work_and_max_waiting_wait_then_refuses():
    async def scenario() -> list[str]:
        admission = Admission(limit=1, max_waiting=1)
        await admission.acquire()  # at work
        waiter = asyncio.create_task(admission.acquire())  # waits
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await admission.acquire()
        admission.release()
        await asyncio.wait_for(waiter, 1)
        waiting = asyncio.create_task(admission.acquire())
        await asyncio.sleep(0)
        waiting.cancel()  # a client that leaves while waiting gives its place back
        await asyncio.gather(waiting, return_exceptions=True)
        admission.release()
        return [str(admission.admitted), str(admission.rejected)]

    assert asyncio.run(scenario()) == ["0", "1"]


def test_sse_events_are_data_lines_with_a_type():
    event = sse.delta(b"\x00\x01")
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[6:]) == {
        "type": "speech.audio.delta",
        "audio": base64.b64encode(b"\x00\x01").decode(),
    }
    done = json.loads(sse.done(characters=10, samples=256 * 94)[6:])
    assert done["usage"] == {"input_tokens": 10, "output_tokens": 94, "total_tokens": 104}


async def chunks_of(*parts: bytes):
    for part in parts:
        yield part


@pytest.mark.parametrize(
    ("parts", "length", "error"),
    [
        ((b"x" * 10, b"y" * 10), None, RequestTooLarge),  # counted while reading
        ((b"{}",), "100", RequestTooLarge),  # refused from its Content-Length
        ((b"",), None, InvalidInput),
        ((b"{,}",), None, InvalidInput),
    ],
)
def test_bodies_are_bounded_and_parsed_or_coded(parts, length, error):
    with pytest.raises(error):
        asyncio.run(read_json(chunks_of(*parts), length, limit=16))


def test_json_that_python_accepts_reaches_the_schema():
    assert parse_json(b'{"speed": NaN, "text": "\\ud800"}')["text"] == "\ud800"


class StubWorker:
    """Enough of a Worker for routes that must answer before using it."""

    on_fatal = None

    def error_payload(self, err: WorkerError, job_id: str) -> dict:
        return err.to_payload()


async def call_app(app, method: str, path: str, receive) -> list[dict]:
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
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"16000000")],
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


def test_a_client_that_leaves_while_queued_is_never_prepared():
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
        assert service.admission.admitted == 2
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

    @app.app.get(f"{prefix}/raises")  # Quiet wraps the FastAPI app
    async def raises() -> None:
        raise HTTPException(status, "bad")

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent = asyncio.run(call_app(app, "GET", f"{prefix}/raises", receive))
    body = json.loads(sent[1]["body"])
    assert sent[0]["status"] == status
    assert (body["error"]["code"] if prefix else body["error_code"]) == code
