"""The routes of the HTTP mode (FastAPI): the app, its outer wrappers and the route table; each
route's work is in its own module (speech_route.py, native.py; requests.py for what they share).

- GET /ping: 204 while the model loads, 200 once warm, 503 when the worker is broken or every
  slot is stalled (RunPod's load-balancer contract); never behind HTTP_AUTH_TOKEN.
- POST /v1/audio/speech: OpenAI's speech API; the body is the audio itself, sent as each text
  chunk is synthesized (`stream_format: "audio"`), or OpenAI's speech events (`"sse"`).
- POST /runsync: the native contract: `{"input": {...}}` as a queue job, answered with
  `{"id", "status": "COMPLETED", "output": [items]}`, or the coded error with its status.
- GET /v1/models, GET /v1/audio/voices: what this worker serves.
- GET /metrics: Prometheus text (metrics.py); behind HTTP_AUTH_TOKEN, never behind admission.
- WS /v1/audio/speech/stream: text deltas in as an LLM writes them, each sentence's audio out
  as soon as it is complete (ws_route.py, ws_protocol.py).

Every failure before the first audio byte has its status (statuses.py). One after it cannot
change the status: an audio stream is cut off without its final chunk (the client sees an
incomplete body, not a short file), an event stream ends with an `error` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from f5worker.errors import (
    InvalidInput,
    MethodNotAllowed,
    RouteNotFound,
    Unauthorized,
    WorkerError,
)
from f5worker.serve.http import native, speech_route, ws_protocol, ws_route
from f5worker.serve.http.metrics import CONTENT_TYPE, RequestMetrics
from f5worker.serve.http.requests import (
    client_left,
    internal,
    native_error,
    new_request_id,
    openai_error,
    shape,
)
from f5worker.serve.http.service import Service
from f5worker.serve.http.statuses import error_response
from f5worker.serve.http.writes import StreamAborted

log = logging.getLogger(__name__)


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
    compared in constant time, answered 401 UNAUTHORIZED (with WWW-Authenticate) otherwise. A
    WebSocket's handshake is checked the same way, and refused with the same 401 response
    (the ASGI WebSocket denial response) before it is accepted."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] == "/ping":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.token):
            await self.app(scope, receive, send)
            return
        err = Unauthorized("send `Authorization: Bearer <HTTP_AUTH_TOKEN>`")
        await error_response(err, shape(scope["path"]))(scope, receive, send)


def create_app(service: Service) -> ASGIApp:
    app = FastAPI(title="F5-TTS worker", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(_routing_error(request, exc), shape(request.url.path))

    @app.get("/ping")
    async def ping() -> Response:
        state = service.state
        if state == "initializing":
            return Response(status_code=204)
        return JSONResponse({"status": state}, status_code=200 if state == "healthy" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:  # no admission: it answers when the worker is full
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> Response:
        return await native.answer_openai(lambda: native.models_list(service))

    @app.get("/v1/audio/voices")
    async def voices() -> Response:
        async def listing() -> dict[str, Any]:
            worker = service.require_worker()
            loop = asyncio.get_running_loop()
            # not the jobs' pool: a listing must not wait behind synthesis
            found = await loop.run_in_executor(None, native.list_voices, worker.voices)
            return {"object": "list", "data": found}

        return await native.answer_openai(listing)

    @app.post("/v1/audio/speech")
    async def speech(request: Request) -> Response:
        request_id = new_request_id()
        try:
            return await speech_route.speech(service, request, request_id)
        except ClientDisconnect:
            return client_left(request_id)
        except WorkerError as err:
            return openai_error(service, err, request_id)
        except Exception:  # a bug, not the input: still OpenAI's error shape, never plain text
            log.exception("request %s failed", request_id)
            return openai_error(service, internal(), request_id)

    @app.websocket(ws_protocol.ROUTE)
    async def speech_stream(websocket: WebSocket) -> None:
        await ws_route.speech_stream(service, websocket, new_request_id())

    @app.post("/runsync")
    async def runsync(request: Request) -> Response:
        request_id = new_request_id()
        try:
            return await native.runsync(service, request, request_id)
        except ClientDisconnect:
            return client_left(request_id)
        except WorkerError as err:
            return native_error(service, err, request_id)
        except Exception:  # Worker.run codes its own failures; this is the route's own bug
            log.exception("request %s failed", request_id)
            return native_error(service, internal(), request_id)

    token = service.settings.http_auth_token
    inner: ASGIApp = app if token is None else BearerAuth(app, token)
    return Quiet(RequestMetrics(inner, service.metrics))  # 401s and 404s are counted too


def _routing_error(request: Request, exc: HTTPException) -> WorkerError:
    """Starlette's own HTTP errors as coded ones; any other 4xx it raises is a bad request."""
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return RouteNotFound(f"{where} is not served here")
    if exc.status_code == 405:
        return MethodNotAllowed(f"{where} is not served here")
    if exc.status_code >= 500:
        return internal()
    return InvalidInput(str(exc.detail))
