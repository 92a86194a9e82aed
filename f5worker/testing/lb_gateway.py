"""A fake RunPod load-balancing gateway on 127.0.0.1, in front of an HTTP-mode worker.

It enforces what RunPod documents for load-balancing endpoints (docs/operations.md): a request
body of at most 30 MB (413 at the gateway, the worker never sees it), 5.5 minutes per request
(then the gateway answers 524, or cuts a response already started), and no queue: every request
goes straight to the worker, whose own 429 reaches the client. The limits are arguments, so a
test can use a short one. `refused` and `cut` record what the gateway did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.types import Receive, Scope, Send

from f5worker.testing.s3_servers import free_port

MAX_BODY_BYTES = 30 * 1000 * 1000  # RunPod: "30 MB" per load-balancing request
MAX_REQUEST_S = 330.0  # RunPod: 5.5 minutes per request, then 524
HOP_BY_HOP = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length"}


class Cut(Exception):
    """The request outlived the gateway's limit after its response began: drop the connection."""


@dataclass
class LBGateway:
    upstream: str
    max_body_bytes: int = MAX_BODY_BYTES
    max_request_s: float = MAX_REQUEST_S
    refused: list[int] = field(default_factory=list)  # statuses the gateway answered itself
    cut: int = 0  # responses cut off mid-stream at the time limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = False

        async def answer(status: int, message: str) -> None:
            self.refused.append(status)
            body = json.dumps({"error": message}).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        try:
            async with asyncio.timeout(self.max_request_s):
                body = await self._body(scope, receive)
                if body is None:
                    await answer(413, "request body over the gateway's limit")
                    return
                async with (
                    httpx.AsyncClient(timeout=None) as client,
                    client.stream(
                        scope["method"],
                        self.upstream + scope["path"],
                        params=scope["query_string"].decode(),
                        content=body,
                        headers=[
                            (k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP
                        ],
                    ) as response,
                ):
                    headers = [
                        (k.lower(), v)
                        for k, v in response.headers.raw
                        if k.lower() not in HOP_BY_HOP - {b"content-length"}
                    ]
                    await send(
                        {
                            "type": "http.response.start",
                            "status": response.status_code,
                            "headers": headers,
                        }
                    )
                    started = True
                    async for chunk in response.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b""})
        except TimeoutError:
            if not started:
                await answer(524, "the request took longer than the gateway allows")
                return
            self.cut += 1
            raise Cut from None
        except httpx.TransportError:
            if not started:
                await answer(502, "the worker did not answer")
                return
            raise Cut from None

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None when it is over the limit (by its length or as it arrives)."""
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return None
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Cut
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(parts)


class _Quiet:
    """Swallow Cut: uvicorn then closes the connection without the response's end."""

    def __init__(self, app: LBGateway) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(Cut):
            await self.app(scope, receive, send)


@contextlib.contextmanager
def lb_gateway(
    upstream: str,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_request_s: float = MAX_REQUEST_S,
    start_timeout_s: float = 20.0,
) -> Iterator[tuple[str, LBGateway]]:
    """The gateway in a thread until the block ends; yields its base URL and its record."""
    gateway = LBGateway(upstream, max_body_bytes, max_request_s)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            _Quiet(gateway),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            h11_max_incomplete_event_size=64 * 1024,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", gateway
    finally:
        server.should_exit = True
        thread.join(timeout=30)
