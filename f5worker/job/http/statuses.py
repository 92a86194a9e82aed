"""Coded errors -> HTTP statuses, and the two error bodies (native and OpenAI-shaped).

The native routes answer with the queue's error payload (`error`, `error_code`, `retryable`), so
a client keeps its error handling when it switches endpoint types. The OpenAI route answers in
OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`) with our code in `code`, so
the official client raises the exception class that matches the status.
Only INTERNAL_ERROR is a 500: every other failure says what went wrong in its status.
"""

from __future__ import annotations

from typing import Any

from f5worker.errors import WorkerError

STATUS_BY_CODE: dict[str, int] = {
    "INVALID_INPUT": 400,
    "UNSUPPORTED_FORMAT": 400,
    "BAD_REF_AUDIO": 400,
    "VOICE_NOT_FOUND": 404,
    "MODEL_NOT_FOUND": 404,
    "VOICE_WRITES_DISABLED": 403,  # the operator made the voice library read-only
    "VOICE_EXISTS": 409,
    "VOICE_CHANGED": 409,  # replaced by another writer while this one deleted it
    "VOICE_LIMIT_REACHED": 409,
    "TEXT_TOO_LONG": 413,
    "REQUEST_TOO_LARGE": 413,
    "OUTPUT_TOO_LARGE": 413,
    "SYNTHESIS_FAILED": 422,
    "OVERLOADED": 429,
    "CANCELLED": 499,  # the client went away; nobody reads this status
    "STORAGE_ERROR": 502,  # S3 (voice library, references, output bucket) failed
    "INITIALIZING": 503,
    "MODEL_ERROR": 503,
    "GPU_ERROR": 503,
    "CONFIG_ERROR": 503,  # start-up codes, listed so that no code falls back to 500
    "FLASH_ATTN_UNAVAILABLE": 503,
    "INTERNAL_ERROR": 500,
}
RETRY_AFTER_S = 1  # Retry-After of a 429 or 503: one short synthesis frees a slot


def status_of(code: str) -> int:
    return STATUS_BY_CODE.get(code, 500)


def retry_headers(code: str) -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_S)} if status_of(code) in (429, 503) else {}


def native_body(payload: dict[str, Any], request_id: str) -> dict[str, Any]:
    """A failed native request: RunPod's failed-job fields plus the coded payload."""
    return {"id": request_id, "status": "FAILED", **payload}


def openai_body(err: WorkerError) -> dict[str, Any]:
    status = status_of(err.code)
    if status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return {"error": {"message": err.message, "type": kind, "param": None, "code": err.code}}
