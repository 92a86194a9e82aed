"""The HTTP mode in-process for tests and benchmarks: uvicorn on 127.0.0.1 in a thread.

`serving(service)` runs the real app and server (sockets, streaming, disconnects, the client
bounds) around a Service the caller controls: a test can hold it in the initializing state, make
it ready with a Worker built on the session's demo engine, and read its counters afterwards. The
clients below misbehave on purpose (half headers, half bodies, a stream never read), and
post_until_served is a well-behaved one, retrying as Retry-After says.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import uvicorn

from f5worker.config import Settings
from f5worker.serve.http.serve import listening_sockets, server_config
from f5worker.serve.http.service import Service
from f5worker.testing.s3_servers import free_port


def http_settings(**overrides: Any) -> Settings:
    return replace(Settings(http_host="127.0.0.1", port=free_port()), **overrides)


@contextlib.contextmanager
def serving(service: Service, start_timeout_s: float = 20.0) -> Iterator[str]:
    """Serve `service` until the block ends; yields the base URL."""
    settings = service.settings
    server = uvicorn.Server(server_config(service))
    sockets = listening_sockets(settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{settings.http_host}:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# -- clients that misbehave, and one that does not (the adversarial HTTP tests) -----------------


def connect(url: str, receive_buffer: int | None = None) -> socket.socket:
    """A raw TCP connection to `url`'s server; a small receive buffer makes a slow reader."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # before connect: it sets the window the server may fill
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    return sock


def half_header_lines(url: str, count: int) -> list[socket.socket]:
    """`count` connections that send half a header line and then nothing."""
    socks = [connect(url) for _ in range(count)]
    for sock in socks:
        sock.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Ty")
    return socks


def half_sent_bodies(
    url: str, count: int, path: str = "/v1/audio/speech", headers: dict[str, str] | None = None
) -> list[socket.socket]:
    """`count` connections that send a request's headers and one byte of its body, then nothing."""
    socks = [connect(url) for _ in range(count)]
    for sock in socks:
        sock.sendall(request_head(path, 200, headers) + b"{")
    return socks


def non_reading_stream(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> socket.socket:
    """A whole speech request from a client that never reads its response."""
    sock = connect(url, receive_buffer=4096)
    data = json.dumps(body).encode()
    sock.sendall(request_head("/v1/audio/speech", len(data), headers) + data)
    return sock


def non_reading_websocket(
    url: str, path: str, messages: list[str], headers: dict[str, str] | None = None
) -> socket.socket:
    """A WebSocket client that sends its text messages and never reads a byte of the answer
    (a 4 KiB receive window), written by hand: a library client reads in the background."""
    sock = connect(url, receive_buffer=4096)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", "Host: x", "Upgrade: websocket", "Connection: Upgrade"]
    lines += [f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    sock.sendall("\r\n".join([*lines, "", ""]).encode())
    head = b""
    while b"\r\n\r\n" not in head:  # the 101 only: what follows is left unread
        head += sock.recv(1)
    if not head.startswith(b"HTTP/1.1 101 "):
        raise RuntimeError(f"the handshake was refused: {head[:40]!r}")
    for message in messages:
        sock.sendall(masked_text_frame(message))
    return sock


def masked_text_frame(text: str) -> bytes:
    """One final text frame as a client must send it (RFC 6455 5.2: masked)."""
    data = text.encode()
    size = len(data)
    if size < 126:
        head = bytes([0x81, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def request_head(path: str, length: int, headers: dict[str, str] | None = None) -> bytes:
    """A JSON POST's request line and headers."""
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += [f"Content-Length: {length}", "", ""]
    return "\r\n".join(lines).encode()


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()


def post_until_served(
    url: str, body: dict[str, Any], within_s: float, **kwargs: Any
) -> tuple[httpx.Response, float]:
    """POST `body` as a well-behaved client does: retry a 429 or 503 after its Retry-After,
    until `within_s` has passed. Returns the last response and the seconds it all took."""
    started = time.monotonic()
    while True:
        left = within_s - (time.monotonic() - started)
        response = httpx.post(url, json=body, timeout=max(1.0, left), **kwargs)
        if response.status_code not in (429, 503) or left <= 0:
            return response, time.monotonic() - started
        time.sleep(min(float(response.headers.get("retry-after", "1")), max(0.0, left)))
