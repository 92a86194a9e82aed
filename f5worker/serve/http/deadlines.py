"""Connection bounds uvicorn lacks: a deadline for a request's headers and a cap on connections.

uvicorn (h11 or httptools) waits for headers as long as a client likes: its only timer is the
keep-alive one, cancelled by the first byte of the next request, so half a header line holds a
connection forever. Its `limit_concurrency` counts open connections but only answers *requests*
503 once over the limit, /ping included, while the connections that never finish their headers
stay open: idle attackers would make the worker refuse everyone, and look unhealthy.

So the server's protocol is uvicorn's own, subclassed (docs/decisions/026-http-client-bounds.md):
- a timer starts when a connection opens, and when the first byte of a request arrives on a
  kept-alive connection; uvicorn making a new request cycle (the headers are complete) cancels
  it. When it fires first, the client is answered 408 REQUEST_TIMEOUT and the connection closed.
- with more than `max_connections` open, the oldest connection still waiting for headers (or
  idle between requests) is closed to make room; when every one is in a request, the new
  connection is answered 503 TOO_MANY_CONNECTIONS and closed.
The body, the queue and the writes have their deadlines in the app (body.py, admission.py,
streams.py), where a request's slot is known.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from f5worker.errors import RequestTimeout, TooManyConnections
from f5worker.serve.http.statuses import raw_response

log = logging.getLogger(__name__)


class Bounds:
    """One connection's header deadline; attached to the uvicorn protocol it watches."""

    def __init__(self, proto: Any, header_timeout_s: float, max_connections: int) -> None:
        self.proto = proto
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.waiting_since = self.loop.time()  # since when it waits for headers (or is idle)
        self.armed_for: object = None  # the request cycle that was current when armed

    @property
    def idle(self) -> bool:
        """Waiting for headers, or between requests: what may be closed to make room."""
        cycle = self.proto.cycle
        return self.timer is not None or cycle is None or bool(cycle.response_complete)

    def opened(self) -> None:
        self.arm()
        connections = self.proto.connections
        if len(connections) > self.max_connections:
            self.make_room(connections)

    def received(self) -> None:
        """After uvicorn parsed the bytes: headers complete, or a new request begun."""
        cycle = self.proto.cycle
        if self.timer is not None:
            if cycle is not self.armed_for:
                self.disarm()  # uvicorn made a request cycle: the headers are complete
        elif cycle is None or cycle.response_complete:
            self.arm()  # the first bytes of the next request on a kept-alive connection

    def arm(self) -> None:
        self.disarm()
        self.armed_for = self.proto.cycle
        self.waiting_since = self.loop.time()
        self.timer = self.loop.call_later(self.header_timeout_s, self.expired)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expired(self) -> None:
        self.timer = None
        if self.proto.cycle is self.armed_for:
            self.refuse(RequestTimeout(f"no complete request headers in {self.header_timeout_s} s"))

    def refuse(self, err: RequestTimeout | TooManyConnections) -> None:
        self.disarm()
        transport = self.proto.transport
        if transport is None or transport.is_closing():
            return
        log.info("closing a connection: %s", err.code)
        transport.write(raw_response(err))
        transport.close()

    def make_room(self, connections: set[Any]) -> None:
        idle = [b for c in connections if (b := _bounds(c)) and b is not self and b.idle]
        if idle:
            oldest = min(idle, key=lambda b: b.waiting_since)
            oldest.refuse(RequestTimeout("the server is at its connection limit"))
        else:
            self.refuse(TooManyConnections("this worker is at its connection limit; retry"))


def _bounds(proto: Any) -> Bounds | None:
    found = getattr(proto, "bounds", None)
    return found if isinstance(found, Bounds) else None


class _Bounded:
    """What both of uvicorn's HTTP protocols get: the header deadline and the connection cap,
    armed when a connection opens, fed as bytes arrive, disarmed when it closes. Mixed in
    before the protocol class, so each call goes on to uvicorn's own (super())."""

    header_timeout_s: float = 10.0
    max_connections: int = 100
    bounds: Bounds | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self.bounds = Bounds(self, self.header_timeout_s, self.max_connections)
        self.bounds.opened()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self.bounds is not None:
            self.bounds.received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.bounds is not None:
            self.bounds.disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def handle_websocket_upgrade(self, *args: Any) -> None:
        # The headers are complete, and the connection is the WebSocket protocol's from now on
        # (its own bounds: ws_route.py): a header deadline left armed would write a 408 into it.
        if self.bounds is not None:
            self.bounds.disarm()
            self.bounds = None
        super().handle_websocket_upgrade(*args)  # type: ignore[misc]


class BoundedH11(_Bounded, H11Protocol):
    pass


def _httptools_class() -> type[asyncio.Protocol] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # uvicorn's own choice ("auto") falls back to h11 the same way
        return None

    class BoundedHttpTools(_Bounded, HttpToolsProtocol):
        pass

    return BoundedHttpTools


def bounded_protocol(
    header_timeout_s: float, max_connections: int, parser: str = "auto"
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, as uvicorn's "auto"; or "h11") with
    the header deadline and the connection cap; passed as uvicorn.Config(http=...)."""
    base = _httptools_class() if parser in ("auto", "httptools") else None
    if base is None:
        base = BoundedH11
    attrs = {"header_timeout_s": header_timeout_s, "max_connections": max_connections}
    return type(f"{base.__name__}Configured", (base,), attrs)
