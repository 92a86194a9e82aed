"""The connection bounds on a real socket (uvicorn in a thread, no model): half a header line is
answered 408 and closed at the header deadline, also on a kept-alive connection; a connection
over the cap closes the oldest idle one, or is refused 503 when none is idle; /ping answers
throughout."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from f5worker.serve.http.deadlines import bounded_protocol
from f5worker.serve.http.service import Service
from f5worker.testing.http import http_settings, serving


class StubWorker:
    """Enough of a worker for a route to admit a request and read its body."""

    on_fatal = None


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_all(sock: socket.socket, timeout_s: float = 10.0) -> bytes:
    """Everything until the server closes (bounded by timeout_s)."""
    sock.settimeout(timeout_s)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.fixture
def server() -> Iterator[str]:
    with serving(Service(http_settings(http_header_timeout_s=1, http_max_connections=6))) as url:
        yield url


def test_half_a_header_line_is_answered_408_and_closed_at_the_deadline(server):
    sock = connect(server)
    started = time.monotonic()
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: aaa")
    answer = read_all(sock)
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 ") and b"REQUEST_TIMEOUT" in answer, answer
    assert 0.8 < took < 3.0
    assert httpx.get(f"{server}/ping", timeout=5).status_code == 204


def test_a_silent_connection_is_closed_at_the_deadline(server):
    sock = connect(server)
    assert read_all(sock).startswith(b"HTTP/1.1 408 ")


def test_the_next_request_on_a_kept_alive_connection_has_its_deadline_too(server):
    sock = connect(server)
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(5)
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 204 ")
    sock.sendall(b"GET /ping HTTP/1.1\r\nHo")  # and never the rest
    assert read_all(sock).startswith(b"HTTP/1.1 408 ")


def test_complete_headers_in_slow_pieces_are_served(server):
    sock = connect(server)
    for piece in (b"GET /ping HT", b"TP/1.1\r\nHost: x\r\n", b"\r\n"):
        sock.sendall(piece)
        time.sleep(0.2)
    sock.settimeout(5)
    assert sock.recv(65536).startswith(b"HTTP/1.1 204 ")


def test_over_the_cap_the_oldest_idle_connection_makes_room(server):
    held = [connect(server) for _ in range(6)]
    for sock in held:
        sock.sendall(b"GET /ping HTTP/1.1\r\nX-Half: ")
    time.sleep(0.1)
    # a seventh connection (a normal client) closes the oldest idle one and is served
    response = httpx.get(f"{server}/ping", timeout=5)
    assert response.status_code == 204
    held[0].settimeout(2)
    assert held[0].recv(65536).startswith(b"HTTP/1.1 408 ")
    for sock in held:
        sock.close()


def test_over_the_cap_with_every_connection_in_a_request_a_new_one_is_refused_503():
    settings = http_settings(http_header_timeout_s=5, http_max_connections=4)
    service = Service(settings)
    service.ready(StubWorker())  # type: ignore[arg-type]
    with serving(service) as url:
        # requests whose headers are complete and whose bodies never come: not idle
        held = [connect(url) for _ in range(4)]
        for sock in held:
            sock.sendall(
                b"POST /runsync HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
        time.sleep(0.2)
        refused = connect(url)
        answer = read_all(refused, 5)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"TOO_MANY_CONNECTIONS" in answer
        assert b"retry-after: 1" in answer.lower()
        for sock in held:
            sock.close()


def test_the_h11_parser_has_the_same_bounds():
    protocol = bounded_protocol(1, 10, parser="h11")
    assert protocol.__mro__[1].__name__ == "BoundedH11"
    assert protocol.header_timeout_s == 1  # type: ignore[attr-defined]
