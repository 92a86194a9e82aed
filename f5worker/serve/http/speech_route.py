"""POST /v1/audio/speech: OpenAI's speech API, the audio streamed as each chunk is made.

Admission before the body is read (a full worker holds no more bodies in memory), the body
within its deadline, the job prepared in a pool thread (every input error still gets its status),
then the audio (`stream_format: "audio"`) or OpenAI's speech events (`"sse"`), one chunk ahead of
the sender (speech.AudioStream). A failure after the first byte cannot change the status: the
audio is cut off without its final chunk, an event stream ends with an `error` event.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from f5worker.errors import InvalidInput, JobCancelled, WorkerError
from f5worker.job import openai_compat
from f5worker.job.codecs import MIME_TYPES
from f5worker.job.prepared import PreparedJob
from f5worker.job.usage import item_usage
from f5worker.serve.http import sse
from f5worker.serve.http.admission import Slot
from f5worker.serve.http.body import read_json, require_json
from f5worker.serve.http.metrics import Outcome, outcome_of
from f5worker.serve.http.requests import (
    cancel_on_disconnect,
    internal,
    job_control,
    payload,
    place_wait_s,
)
from f5worker.serve.http.service import Service
from f5worker.serve.http.speech import AudioStream, Progress, encoded_chunks, prepare_speech
from f5worker.serve.http.writes import BoundedStreamingResponse, StreamAborted

log = logging.getLogger(__name__)

STREAM_FORMATS = ("audio", "sse")
SPEECH = "/v1/audio/speech"


async def speech(service: Service, request: Request, request_id: str) -> Response:
    arrived = time.perf_counter()
    require_json(request.headers.get("content-type"))
    worker = service.require_worker()
    settings = service.settings
    admission = service.admission
    # before the body is read: a full worker holds no more bodies in memory
    await admission.enter(place_wait_s(settings))
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
        async with cancel_on_disconnect(request, cancel) as gone:
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
            control = job_control(cancel, progress, slot, live=True)
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
    first_audio_s = time.perf_counter() - arrived
    fmt = job.req.format
    if stream_format == "sse":
        body_iter = _sse_body(service, stream, first, job, progress, request_id, first_audio_s)
        media_type, headers = "text/event-stream", {"Cache-Control": "no-cache"}
    else:
        body_iter = _audio_body(service, stream, first, progress, request_id)
        media_type, headers = MIME_TYPES[fmt], {}
    headers |= usage_headers(job, first_audio_s)
    log.info(
        "request %s: speech %s/%s chars=%d chunks=%d first_byte_s=%.3f",
        request_id,
        fmt,
        stream_format,
        len(job.req.text),
        len(job.chunks),
        ttfb,
    )
    outcome = outcome_of(request.state)
    return BoundedStreamingResponse(
        _finishing(body_iter, stream, service, progress, job, outcome, request_id, started),
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
    first_audio_s: float,
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
    ours = item_usage(
        job,
        characters=len(job.req.text),
        chunks=progress.chunks_done,
        audio_s=progress.audio_s,
        first_audio_s=first_audio_s,
    )
    yield sse.done(len(job.req.text), progress.samples, ours, job.ref_text_fields())


def _failed_mid_stream(
    service: Service, exc: Exception, progress: Progress, request_id: str
) -> WorkerError:
    """Log a failure after the first byte (its code, or the traceback of a bug) and mark it."""
    progress.failed = True
    if isinstance(exc, WorkerError):
        payload(service, exc, request_id)
        progress.error_code = exc.code
        return exc
    log.error("request %s failed mid-stream", request_id, exc_info=exc)
    err = internal()
    progress.error_code = err.code
    return err


async def _finishing(
    body: AsyncIterator[bytes],
    stream: AudioStream,
    service: Service,
    progress: Progress,
    job: PreparedJob,
    outcome: Outcome,
    request_id: str,
    started: float,
) -> AsyncIterator[bytes]:
    """The body, and what happens however it ends: the stream is closed (which cancels the
    chunks not yet made when the client left early), the metrics are told, one line logged."""
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
        if progress.failed or not complete:  # the status (200) is already sent
            outcome.code = progress.error_code or JobCancelled.code
        engine_s = job.clock.stages.get("synthesis", 0.0)
        model = job.model.name
        service.metrics.audio_made(SPEECH, model, job.voice_kind, progress.audio_s, engine_s)
        ended = "failed" if progress.failed else "done" if complete else "stopped"
        log.info(
            "request %s %s: chunks=%d/%d audio_s=%.2f steps=%d engine_s=%.3f rtf=%.3f total_s=%.3f",
            request_id,
            ended,
            progress.chunks_done,
            progress.chunks_total,
            progress.audio_s,
            progress.chunks_done * job.params.nfe_step,
            engine_s,
            engine_s / max(progress.audio_s, 1e-6),
            time.perf_counter() - started,
        )


def usage_headers(job: PreparedJob, first_audio_s: float) -> dict[str, str]:
    """What is known of a speech response's usage before its body (the rest: the SSE `done`
    event, the log line). Values are the worker's own (a library voice's name is 1-64 of
    [A-Za-z0-9._-]), never the caller's text."""
    return {
        "X-Usage-Characters": str(len(job.req.text)),
        "X-Chunks": str(len(job.chunks)),
        "X-Model": job.model.name,
        "X-Quality": job.preset.name,
        "X-Nfe-Step": str(job.params.nfe_step),
        "X-Voice": job.voice_name,
        "X-Voice-Cached": str(job.voice_cached).lower(),
        "X-Reference-Cached": str(job.reference_cached).lower(),
        "X-Seed": str(job.params.seed),
        "X-First-Audio-S": f"{first_audio_s:.4f}",
    }
