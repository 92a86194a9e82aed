"""The routes of the HTTP mode (FastAPI); each composes the adapter's small modules.

- GET /ping: 204 while the model loads, 200 once warm, 503 when the worker is broken or every
  slot is stalled (RunPod's load-balancer contract); never behind HTTP_AUTH_TOKEN.
- POST /v1/audio/speech: OpenAI's speech API; the body is the audio itself, sent as each text
  chunk is synthesized (`stream_format: "audio"`), or OpenAI's speech events (`"sse"`).
- POST /runsync: the native contract: `{"input": {...}}` as a queue job, answered with
  `{"id", "status": "COMPLETED", "output": [items]}`, or the coded error with its status.
- GET /v1/models, GET /v1/audio/voices: what this worker serves.

Every failure before the first audio byte has its status (statuses.py). One after it cannot
change the status: an audio stream is cut off without its final chunk (the client sees an
incomplete body, not a short file), an event stream ends with an `error` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from f5worker.config import Settings
from f5worker.errors import (
    InternalError,
    InvalidInput,
    JobCancelled,
    MethodNotAllowed,
    RouteNotFound,
    Unauthorized,
    WorkerError,
)
from f5worker.job import openai_compat
from f5worker.job.codecs import MIME_TYPES
from f5worker.job.prepared import JobControl, PreparedJob
from f5worker.serve.http import sse
from f5worker.serve.http.admission import Slot
from f5worker.serve.http.body import read_json, require_json
from f5worker.serve.http.service import Service
from f5worker.serve.http.speech import AudioStream, Progress, encoded_chunks, prepare_speech
from f5worker.serve.http.statuses import Shape, error_response, payload_response
from f5worker.serve.http.writes import BoundedStreamingResponse, StreamAborted

if TYPE_CHECKING:
    from f5worker.job.voices import VoiceLibrary

log = logging.getLogger(__name__)

STREAM_FORMATS = ("audio", "sse")
NATIVE_KEYS = ("input",)
# RunPod's queue-job keys besides `input`: the platform acts on them, a worker never sees them.
# Accepted and ignored here, so a queue payload works unchanged against this route.
QUEUE_ONLY_KEYS = ("webhook", "policy", "s3Config")


class Quiet:
    """Outermost ASGI wrapper: a StreamAborted ends the response without its last chunk and
    without a traceback in the log (the failure is already logged with its code)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(StreamAborted):
            await self.app(scope, receive, send)


class BearerAuth:
    """With HTTP_AUTH_TOKEN set, every route but /ping needs `Authorization: Bearer <token>`;
    compared in constant time, answered 401 UNAUTHORIZED (with WWW-Authenticate) otherwise."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/ping":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.token):
            await self.app(scope, receive, send)
            return
        err = Unauthorized("send `Authorization: Bearer <HTTP_AUTH_TOKEN>`")
        await error_response(err, _shape(scope["path"]))(scope, receive, send)


def create_app(service: Service) -> ASGIApp:
    app = FastAPI(title="F5-TTS worker", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(_routing_error(request, exc), _shape(request.url.path))

    @app.get("/ping")
    async def ping() -> Response:
        state = service.state
        if state == "initializing":
            return Response(status_code=204)
        return JSONResponse({"status": state}, status_code=200 if state == "healthy" else 503)

    @app.get("/v1/models")
    async def models() -> Response:
        return await _answer_openai(lambda: _models_list(service))

    @app.get("/v1/audio/voices")
    async def voices() -> Response:
        async def listing() -> dict[str, Any]:
            worker = service.require_worker()
            loop = asyncio.get_running_loop()
            # not the jobs' pool: a listing must not wait behind synthesis
            found = await loop.run_in_executor(None, list_voices, worker.voices)
            return {"object": "list", "data": found}

        return await _answer_openai(listing)

    @app.post("/v1/audio/speech")
    async def speech(request: Request) -> Response:
        request_id = _request_id()
        try:
            return await _speech(service, request, request_id)
        except ClientDisconnect:
            return _client_left(request_id)
        except WorkerError as err:
            return _openai_error(service, err, request_id)
        except Exception:  # a bug, not the input: still OpenAI's error shape, never plain text
            log.exception("request %s failed", request_id)
            return _openai_error(service, _internal(), request_id)

    @app.post("/runsync")
    async def runsync(request: Request) -> Response:
        request_id = _request_id()
        try:
            return await _runsync(service, request, request_id)
        except ClientDisconnect:
            return _client_left(request_id)
        except WorkerError as err:
            return _native_error(service, err, request_id)
        except Exception:  # Worker.run codes its own failures; this is the route's own bug
            log.exception("request %s failed", request_id)
            return _native_error(service, _internal(), request_id)

    token = service.settings.http_auth_token
    return Quiet(app if token is None else BearerAuth(app, token))


# -- the OpenAI speech route -------------------------------------------------------------------


async def _speech(service: Service, request: Request, request_id: str) -> Response:
    require_json(request.headers.get("content-type"))
    worker = service.require_worker()
    settings = service.settings
    admission = service.admission
    # before the body is read: a full worker holds no more bodies in memory
    await admission.enter(_place_wait_s(settings))
    try:
        raw, stream_format = await _speech_input(request, settings.http_body_timeout_s)
    except BaseException:
        admission.withdraw(reading=True)
        raise
    admission.body_read()
    cancel = threading.Event()
    loop = asyncio.get_running_loop()
    stream: AudioStream | None = None
    slot: Slot | None = None
    try:
        # Watched from the queue on: a client that gives up while waiting leaves the queue.
        async with _cancel_on_disconnect(request, cancel) as gone:
            slot = await admission.wait_for_slot(settings.http_queue_timeout_s, gone)
            service.counters.requests += 1
            job = await loop.run_in_executor(
                service.pool,
                prepare_speech,
                worker,
                raw,
                request_id,
                service.first_chunk_bytes,
                cancel.is_set,
            )
            progress = Progress()
            control = _job_control(cancel, progress, slot)
            chunks = encoded_chunks(worker, job, job.req.format, control, progress)

            def closed() -> None:  # on the event loop, once the job thread is done
                service.counters.chunks += progress.chunks_done
                admission.release(slot)

            def closed_soon() -> None:  # from the job's thread
                loop.call_soon_threadsafe(closed)

            stream = AudioStream(chunks, service.pool, cancel, closed_soon)
            started = time.perf_counter()
            first = await stream.next()  # a failure here still gets its status
    except BaseException:
        if stream is not None:
            stream.close()
        elif slot is not None:
            admission.release(slot)
        raise  # (a wait cut short has withdrawn itself)
    ttfb = time.perf_counter() - started
    fmt = job.req.format
    if stream_format == "sse":
        body_iter = _sse_body(service, stream, first, job, progress, request_id)
        media_type, headers = "text/event-stream", {"Cache-Control": "no-cache"}
    else:
        body_iter = _audio_body(service, stream, first, progress, request_id)
        media_type, headers = MIME_TYPES[fmt], {}
    log.info(
        "request %s: speech %s/%s chars=%d chunks=%d first_byte_s=%.3f",
        request_id,
        fmt,
        stream_format,
        len(job.req.text),
        len(job.chunks),
        ttfb,
    )
    return BoundedStreamingResponse(
        _finishing(body_iter, stream, service, progress, request_id, started),
        write_timeout_s=settings.http_write_timeout_s,
        on_write=slot.touch,
        media_type=media_type,
        headers={**headers, "X-Request-Id": request_id},
    )


async def _speech_input(request: Request, timeout_s: float) -> tuple[dict[str, Any], str]:
    """The body as the worker's raw input, and its stream format; every failure coded."""
    body = await read_json(
        request.stream(), request.headers.get("content-length"), timeout_s=timeout_s
    )
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    stream_format = body.pop("stream_format", None) or "audio"  # null: the default, as elsewhere
    if stream_format not in STREAM_FORMATS:
        raise InvalidInput(f"stream_format must be one of {', '.join(STREAM_FORMATS)}")
    openai_compat.speech_to_native(body, "request")  # names unknown fields as this route's
    return {"openai_route": openai_compat.SPEECH_ROUTE, "openai_input": body}, stream_format


async def _audio_body(
    service: Service,
    stream: AudioStream,
    first: bytes | None,
    progress: Progress,
    request_id: str,
) -> AsyncIterator[bytes]:
    data = first
    while data is not None:
        yield data
        try:
            data = await stream.next()
        except Exception as exc:
            _failed_mid_stream(service, exc, progress, request_id)
            raise StreamAborted from None


async def _sse_body(
    service: Service,
    stream: AudioStream,
    first: bytes | None,
    job: PreparedJob,
    progress: Progress,
    request_id: str,
) -> AsyncIterator[bytes]:
    data = first
    while data is not None:
        yield sse.delta(data)
        try:
            data = await stream.next()
        except Exception as exc:
            err = _failed_mid_stream(service, exc, progress, request_id)
            yield sse.error(err.code, err.message)
            return
    yield sse.done(len(job.req.text), progress.samples)


def _failed_mid_stream(
    service: Service, exc: Exception, progress: Progress, request_id: str
) -> WorkerError:
    """Log a failure after the first byte (its code, or the traceback of a bug) and mark it."""
    progress.failed = True
    if isinstance(exc, WorkerError):
        _payload(service, exc, request_id)
        return exc
    log.error("request %s failed mid-stream", request_id, exc_info=exc)
    return _internal()


async def _finishing(
    body: AsyncIterator[bytes],
    stream: AudioStream,
    service: Service,
    progress: Progress,
    request_id: str,
    started: float,
) -> AsyncIterator[bytes]:
    """The body, and what happens however it ends: the stream is closed (which cancels the
    chunks not yet made when the client left early) and one line is logged."""
    complete = False
    try:
        async for data in body:
            yield data
        complete = True
    finally:
        stream.close()
        if progress.failed:
            service.counters.failed += 1
        elif not complete:
            service.counters.cancelled += 1
        outcome = "failed" if progress.failed else "done" if complete else "stopped"
        log.info(
            "request %s %s: chunks=%d/%d audio_s=%.2f total_s=%.3f",
            request_id,
            outcome,
            progress.chunks_done,
            progress.chunks_total,
            progress.audio_s,
            time.perf_counter() - started,
        )


# -- the native route -------------------------------------------------------------------------


async def _runsync(service: Service, request: Request, request_id: str) -> Response:
    require_json(request.headers.get("content-type"))
    worker = service.require_worker()
    settings = service.settings
    admission = service.admission
    await admission.enter(_place_wait_s(settings))  # before the body is read, as for speech
    try:
        job = await _native_input(request, request_id, settings.http_body_timeout_s)
    except BaseException:
        admission.withdraw(reading=True)
        raise
    admission.body_read()
    cancel = threading.Event()
    started = time.perf_counter()
    async with _cancel_on_disconnect(request, cancel) as gone:
        slot = await admission.wait_for_slot(settings.http_queue_timeout_s, gone)
        try:
            service.counters.requests += 1
            if cancel.is_set():
                raise JobCancelled("the client left while its request waited")
            control = _job_control(cancel, Progress(), slot)
            loop = asyncio.get_running_loop()
            items = await loop.run_in_executor(service.pool, lambda: list(worker.run(job, control)))
        finally:
            admission.release(slot)
    if items and "error" in items[-1]:
        return payload_response(items[-1], request_id)
    took_ms = round((time.perf_counter() - started) * 1000)
    return JSONResponse(
        {"id": request_id, "status": "COMPLETED", "output": items, "executionTime": took_ms}
    )


async def _native_input(request: Request, request_id: str, timeout_s: float) -> dict[str, Any]:
    body = await read_json(
        request.stream(), request.headers.get("content-length"), timeout_s=timeout_s
    )
    if not isinstance(body, dict) or "input" not in body:
        raise InvalidInput('the request body must be a JSON object {"input": {...}}')
    ignored = [k for k in QUEUE_ONLY_KEYS if k in body]
    if ignored:
        log.debug("request %s: ignoring the queue-only keys %s", request_id, ", ".join(ignored))
    extra = [k for k in body if k not in NATIVE_KEYS and k not in QUEUE_ONLY_KEYS]
    if extra:
        raise InvalidInput(f"only `input` is read here; remove: {', '.join(map(str, extra))[:200]}")
    return {"id": request_id, "input": body["input"]}


# -- listings ---------------------------------------------------------------------------------


def _models_list(service: Service) -> dict[str, Any]:
    worker = service.require_worker()
    names = worker.models.names
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "f5worker"} for name in names]
    return {"object": "list", "data": data}


def list_voices(library: VoiceLibrary) -> list[dict[str, Any]]:
    """Every voice, "default" first: the same list as the `voice.list` job action."""
    return [dataclasses.asdict(info) for info in library.list_voices()]


async def _answer_openai(make: Callable[[], Any]) -> Response:
    try:
        result = make()
        if isinstance(result, Awaitable):
            result = await result
    except WorkerError as err:
        return error_response(err, "openai")
    except Exception:
        log.exception("listing failed")
        return error_response(_internal(), "openai")
    return JSONResponse(result)


# -- shared -----------------------------------------------------------------------------------


def _place_wait_s(settings: Settings) -> float:
    """How long a request may wait for a place held by bodies still arriving: each of them is
    complete or dropped within the body deadline, so this wait ends with a place or a full queue
    of complete requests (then 429), never with a slow sender still in the way."""
    return max(settings.http_queue_timeout_s, settings.http_body_timeout_s + 1)


def _request_id() -> str:
    return "http-" + secrets.token_hex(6)


def _job_control(cancel: threading.Event, progress: Progress, slot: Slot) -> JobControl:
    def progressed(done: int, total: int) -> None:  # each chunk: progress for /ping's rule
        progress(done, total)
        slot.touch()

    return JobControl(cancelled=cancel.is_set, progress=progressed)


def _payload(service: Service, err: WorkerError, request_id: str) -> dict[str, Any]:
    """The coded payload; also logs the code and runs the fatal-error hook (worker.py)."""
    if service.worker is not None:
        return service.worker.error_payload(err, request_id)
    return err.to_payload()


def _client_left(request_id: str) -> Response:
    # Not an error of ours: nobody reads this answer (499: nginx's "client closed request").
    log.info("request %s: the client left while sending its body", request_id)
    return Response(status_code=499)


def _internal() -> InternalError:
    return InternalError("unexpected error; see the worker log")


def _native_error(service: Service, err: WorkerError, request_id: str) -> Response:
    return payload_response(_payload(service, err, request_id), request_id)


def _openai_error(service: Service, err: WorkerError, request_id: str) -> Response:
    _payload(service, err, request_id)
    return error_response(err, "openai", request_id)


def _shape(path: str) -> Shape:
    return "openai" if path.startswith("/v1/") else "native"


def _routing_error(request: Request, exc: HTTPException) -> WorkerError:
    """Starlette's own HTTP errors as coded ones; any other 4xx it raises is a bad request."""
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return RouteNotFound(f"{where} is not served here")
    if exc.status_code == 405:
        return MethodNotAllowed(f"{where} is not served here")
    if exc.status_code >= 500:
        return _internal()
    return InvalidInput(str(exc.detail))


@contextlib.asynccontextmanager
async def _cancel_on_disconnect(
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
