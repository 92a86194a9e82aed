"""Streamed responses with a write-progress deadline: a client that stops reading loses its slot.

uvicorn applies flow control: once the socket's buffers are full, the app's `send` waits until
the client reads. Starlette's StreamingResponse would wait forever, holding the request's slot
(and the GPU behind it) for a client that may never read again. Here every `send` must finish
within HTTP_WRITE_TIMEOUT_S; one that does not cuts the response (StreamAborted: uvicorn closes
the connection without the final chunk) and the body iterator is closed at once, which cancels
the job and releases the slot (app.py's `_finishing`). Each completed send is progress for the
request's slot (admission.Slot.touch).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class StreamAborted(Exception):
    """Raised inside a started response to cut the connection (app.py's Quiet swallows it)."""


class WriteTimedOut(StreamAborted):
    """No write progress for the write deadline: the client stopped reading."""


class BoundedStreamingResponse(StreamingResponse):
    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        write_timeout_s: float,
        on_write: Callable[[], None] = lambda: None,
        **kwargs: Any,
    ) -> None:
        super().__init__(content, **kwargs)
        self.write_timeout_s = write_timeout_s
        self.on_write = on_write

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def bounded(message: Message) -> None:
            try:
                await asyncio.wait_for(send(message), self.write_timeout_s)
            except TimeoutError:
                log.info("a stream made no write progress for %s s: cut", self.write_timeout_s)
                raise WriteTimedOut from None
            self.on_write()

        try:
            await super().__call__(scope, receive, bounded)
        finally:  # however it ended: the body's own cleanup runs now, not at garbage collection
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
