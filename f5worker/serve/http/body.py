"""Request bodies: read with a byte bound, parsed as JSON, every failure a coded error.

FastAPI's pydantic bodies would answer bad input with its own 422 shape and its own bounds;
here the body is plain JSON handed to the job schema, so HTTP and queue jobs are validated by
the same code. Whatever a JSON parser accepts (NaN, huge integers, lone surrogates) reaches the
schema, which gives it a code; what it rejects is INVALID_INPUT here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from f5worker.errors import InvalidInput, RequestTimeout, RequestTooLarge, UnsupportedMediaType

# The largest valid job: a 14 MB base64 reference plus text and fields.
MAX_BODY_BYTES = 16 * 1024 * 1024


def require_json(content_type: str | None) -> None:
    """`application/json` (parameters such as `; charset=utf-8` allowed), checked before the body
    is read: a web page can send text/plain or a form without a CORS preflight, never JSON."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType("send the body as JSON with `Content-Type: application/json`")


async def read_json(
    chunks: AsyncIterator[bytes],
    content_length: str | None,
    limit: int = MAX_BODY_BYTES,
    timeout_s: float | None = None,
) -> Any:
    """The body, at most `limit` bytes, all of it within `timeout_s` (else REQUEST_TIMEOUT)."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise RequestTooLarge(f"request body is larger than {limit} bytes")
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    parts: list[bytes] = []
    size = 0
    iterator = aiter(chunks)
    while True:
        try:
            if deadline is None:
                chunk = await anext(iterator)
            else:
                chunk = await asyncio.wait_for(anext(iterator), max(0.0, deadline - loop.time()))
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise RequestTimeout(f"the request body did not arrive within {timeout_s} s") from None
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"request body is larger than {limit} bytes")
        parts.append(chunk)
    return parse_json(b"".join(parts))


def parse_json(data: bytes) -> Any:
    if not data.strip():
        raise InvalidInput("request body is empty; send a JSON object")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # bad JSON or UTF-8, over-long integers, deep nesting
        raise InvalidInput("request body is not valid JSON") from None
