"""Every error response of the HTTP mode is built here, in one of two shapes.

The native routes answer with the queue's error payload (`error`, `error_code`, `retryable`), so
a client keeps its error handling when it switches endpoint types. The OpenAI routes (`/v1/...`)
answer in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`) with our code in
`code`, so the official client raises the exception class that matches the status. The status
itself is the error class's `http_status` (errors.py), never restated here.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, Literal

from fastapi.responses import JSONResponse

from f5worker.errors import WorkerError, http_status_of

RETRY_AFTER_S = 1  # Retry-After of a 429 or 503: one short synthesis frees a slot
Shape = Literal["native", "openai"]


def retry_headers(status: int) -> dict[str, str]:
    """The headers a status needs: Retry-After on 429 and 503, the challenge on 401, and on
    408 `Connection: close` (the rest of a slow body is never read)."""
    if status in (429, 503):
        return {"Retry-After": str(RETRY_AFTER_S)}
    if status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if status == 408:
        return {"Connection": "close"}
    return {}


def openai_body(err: WorkerError) -> dict[str, Any]:
    if err.http_status == 429:
        kind = "rate_limit_error"
    elif err.http_status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return {"error": {"message": err.message, "type": kind, "param": None, "code": err.code}}


def error_response(err: WorkerError, shape: Shape, request_id: str | None = None) -> JSONResponse:
    """The response for `err`; a native one carries RunPod's failed-job fields too."""
    if shape == "openai":
        return _response(openai_body(err), err.http_status, request_id, err.code)
    return payload_response(err.to_payload(), request_id)


def payload_response(payload: dict[str, Any], request_id: str | None) -> JSONResponse:
    """A native failed request from a job's coded error item (Worker.run's last item)."""
    code = str(payload.get("error_code", ""))
    body = payload if request_id is None else {"id": request_id, "status": "FAILED", **payload}
    return _response(body, http_status_of(code), request_id, code)


def _response(body: dict[str, Any], status: int, request_id: str | None, code: str) -> JSONResponse:
    headers = retry_headers(status) | {"X-Error-Code": code}  # the code, for /metrics' labels
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers)


def raw_response(err: WorkerError) -> bytes:
    """A whole HTTP/1.1 response for a connection the app never saw (headers too slow, too many
    connections): the native payload, `Connection: close`. The path is unknown, so no shape."""
    body = json.dumps(err.to_payload(), separators=(",", ":")).encode()
    status = err.http_status
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json"]
    headers = {**retry_headers(status), "Connection": "close"}
    head += [f"{name}: {value}" for name, value in headers.items()]
    head += [f"content-length: {len(body)}", "", ""]
    return "\r\n".join(head).encode("ascii") + body
