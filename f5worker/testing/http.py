"""The HTTP mode in-process for tests and benchmarks: uvicorn on 127.0.0.1 in a thread.

`serving(service)` runs the real app and server (sockets, streaming, disconnects) around a
Service the caller controls: a test can hold it in the initializing state, make it ready with
a Worker built on the session's demo engine, and read its counters afterwards.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

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
