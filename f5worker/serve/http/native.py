"""POST /runsync (the native contract, a queue job answered in one response) and the listings
(GET /v1/models, GET /v1/audio/voices)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from f5worker.errors import InvalidInput, JobCancelled, WorkerError
from f5worker.job.usage import JobFigures
from f5worker.serve.http.body import read_json, require_json
from f5worker.serve.http.requests import cancel_on_disconnect, internal, job_control, place_wait_s
from f5worker.serve.http.service import Service
from f5worker.serve.http.speech import Progress
from f5worker.serve.http.statuses import error_response, payload_response

if TYPE_CHECKING:
    from f5worker.job.voices import VoiceLibrary

log = logging.getLogger(__name__)

NATIVE_KEYS = ("input",)
# RunPod's queue-job keys besides `input`: the platform acts on them, a worker never sees them.
# Accepted and ignored here, so a queue payload works unchanged against this route.
QUEUE_ONLY_KEYS = ("webhook", "policy", "s3Config")


async def runsync(service: Service, request: Request, request_id: str) -> Response:
    require_json(request.headers.get("content-type"))
    worker = service.require_worker()
    settings = service.settings
    admission = service.admission
    await admission.enter(place_wait_s(settings))  # before the body is read, as for speech
    try:
        job = await _native_input(request, request_id, settings.http_body_timeout_s)
    except BaseException:
        admission.withdraw(reading=True)
        raise
    admission.body_read()
    cancel = threading.Event()
    started = time.perf_counter()
    async with cancel_on_disconnect(request, cancel) as gone:
        slot = await admission.wait_for_slot(settings.http_queue_timeout_s, gone)
        try:
            service.counters.requests += 1
            if cancel.is_set():
                raise JobCancelled("the client left while its request waited")
            control = job_control(cancel, Progress(), slot)
            loop = asyncio.get_running_loop()
            figures = JobFigures()
            run = lambda: list(worker.run(job, control, figures))  # noqa: E731
            items = await loop.run_in_executor(service.pool, run)
        finally:
            admission.release(slot)
    if figures.model is not None:
        made = (figures.model, figures.voice or "default", figures.audio_s, figures.engine_s)
        service.metrics.audio_made("/runsync", *made)
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


def models_list(service: Service) -> dict[str, Any]:
    worker = service.require_worker()
    data = [
        {
            "id": ref.name,
            "object": "model",
            "created": 0,
            "owned_by": "f5worker",
            "license": worker.licence_of(ref, worker.models.resident_engine(ref)),
        }
        for ref in worker.models.refs
    ]
    return {"object": "list", "data": data}


def list_voices(library: VoiceLibrary) -> list[dict[str, Any]]:
    """Every voice, "default" first: the same list as the `voice.list` job action."""
    return [dataclasses.asdict(info) for info in library.list_voices()]


async def answer_openai(make: Callable[[], Any]) -> Response:
    try:
        result = make()
        if isinstance(result, Awaitable):
            result = await result
    except WorkerError as err:
        return error_response(err, "openai")
    except Exception:
        log.exception("listing failed")
        return error_response(internal(), "openai")
    return JSONResponse(result)
