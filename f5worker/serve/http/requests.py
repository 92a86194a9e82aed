"""What every HTTP route shares about one request: its id, its job control, its coded error
responses (in the route's shape), and the watch for a client that disconnects before the
response starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from f5worker.config import Settings
from f5worker.errors import InternalError, WorkerError
from f5worker.job.prepared import JobControl
from f5worker.serve.http.admission import Slot
from f5worker.serve.http.service import Service
from f5worker.serve.http.speech import Progress
from f5worker.serve.http.statuses import Shape, error_response, payload_response

log = logging.getLogger(__name__)


def place_wait_s(settings: Settings) -> float:
    """How long a request may wait for a place held by bodies still arriving: each of them is
    complete or dropped within the body deadline, so this wait ends with a place or a full queue
    of complete requests (then 429), never with a slow sender still in the way."""
    return max(settings.http_queue_timeout_s, settings.http_body_timeout_s + 1)


def new_request_id() -> str:
    return "http-" + secrets.token_hex(6)


def job_control(
    cancel: threading.Event, progress: Progress, slot: Slot, live: bool = False
) -> JobControl:
    """`live`: the response streams the audio as it is made (the speech route)."""

    def progressed(done: int, total: int) -> None:  # each chunk: progress for /ping's rule
        progress(done, total)
        slot.touch()

    return JobControl(cancelled=cancel.is_set, progress=progressed, live=live)


def payload(service: Service, err: WorkerError, request_id: str) -> dict[str, Any]:
    """The coded payload; also logs the code and runs the fatal-error hook (worker.py)."""
    if service.worker is not None:
        return service.worker.error_payload(err, request_id)
    return err.to_payload()


def client_left(request_id: str) -> Response:
    # Not an error of ours: nobody reads this answer (499: nginx's "client closed request").
    log.info("request %s: the client left while sending its body", request_id)
    return Response(status_code=499)


def internal() -> InternalError:
    return InternalError("unexpected error; see the worker log")


def native_error(service: Service, err: WorkerError, request_id: str) -> Response:
    return payload_response(payload(service, err, request_id), request_id)


def openai_error(service: Service, err: WorkerError, request_id: str) -> Response:
    payload(service, err, request_id)
    return error_response(err, "openai", request_id)


def shape(path: str) -> Shape:
    return "openai" if path.startswith("/v1/") else "native"


@contextlib.asynccontextmanager
async def cancel_on_disconnect(
    request: Request, cancel: threading.Event
) -> AsyncIterator[asyncio.Event]:
    """Set `cancel` if the client disconnects while the body is (being) answered in full, and
    the event yielded (a queued request leaves the queue at once: admission.wait_for_slot).
    Only before a response starts: StreamingResponse then listens for the disconnect itself."""
    gone = asyncio.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        cancel.set()
        gone.set()

    watcher = asyncio.create_task(watch())
    try:
        yield gone
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
