"""Request bodies: read with a byte bound, parsed as JSON, every failure a coded error.

FastAPI's pydantic bodies would answer bad input with its own 422 shape and its own bounds;
here the body is plain JSON handed to the job schema, so HTTP and queue jobs are validated by
the same code. Whatever a JSON parser accepts (NaN, huge integers, lone surrogates) reaches the
schema, which gives it a code; what it rejects is INVALID_INPUT here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from f5worker.errors import InvalidInput, RequestTooLarge

# The largest valid job: a 14 MB base64 reference plus text and fields.
MAX_BODY_BYTES = 16 * 1024 * 1024


async def read_json(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int = MAX_BODY_BYTES
) -> Any:
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise RequestTooLarge(f"request body is larger than {limit} bytes")
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
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
