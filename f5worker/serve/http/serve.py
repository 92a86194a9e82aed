"""Serve the HTTP mode: uvicorn answers from the first second, the start-up timeline runs beside.

RunPod's load balancer polls `/ping` on PORT_HEALTH (default PORT) from the moment the
container starts: 204 means initializing, 200 healthy, anything else unhealthy, and it measures
cold start from the first 204 to the first 200. So the server starts before anything slow
(torch, flash-attn, the model, warm-up run on a thread: startup/main.py's timeline, the same
as the queue mode's) and the routes other than /ping answer 503 INITIALIZING until the worker
is warm. A start-up failure makes /ping unhealthy and ends the process with status 1, as the
queue mode does.

uvicorn runs in the main thread so SIGTERM gets its graceful shutdown (in-flight streams
finish, new connections are refused). PORT and PORT_HEALTH, when they differ, are two
listening sockets of the same server.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from f5worker.config import Settings
from f5worker.errors import WorkerError
from f5worker.redact import redact_urls
from f5worker.serve.http.app import create_app
from f5worker.serve.http.service import Service

if TYPE_CHECKING:
    import uvicorn

    from f5worker.job.worker import Worker

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 30  # in-flight streams may finish; RunPod's stop waits about this long


def serve_http(settings: Settings, build: Callable[[], Worker | None]) -> int:
    """Serve until stopped; `build` returns the ready Worker, or None when start-up failed."""
    import uvicorn

    service = Service(settings)
    server = uvicorn.Server(server_config(service, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))
    sockets = listening_sockets(settings)
    thread = threading.Thread(
        target=_start_up, args=(service, server, build), name="startup", daemon=True
    )
    thread.start()
    log.info(
        "serving http on %s:%d (health on port %d)",
        settings.http_host,
        settings.port,
        settings.health_port,
    )
    server.run(sockets=sockets)
    return 1 if service.failure is not None else 0


def server_config(service: Service, **extra: Any) -> uvicorn.Config:
    """uvicorn's configuration for the app: its protocol with the header deadline and the
    connection cap (deadlines.py); uvicorn's own limit_concurrency stays off (it would answer
    /ping 503 while idle connections are open). WebSocket keepalive pings stay uvicorn's (20 s,
    a peer that answers none within 20 s is dropped)."""
    import uvicorn

    from f5worker.serve.http.body import MAX_BODY_BYTES
    from f5worker.serve.http.deadlines import bounded_protocol

    settings = service.settings
    return uvicorn.Config(
        create_app(service),
        http=bounded_protocol(settings.http_header_timeout_s, settings.http_max_connections),
        # the WebSocket route (ws_route.py): websockets' Sans-I/O protocol (the websockets
        # package is in the locks); a message over the body bound is closed 1009 by it
        ws="websockets-sansio",
        ws_max_size=MAX_BODY_BYTES,
        log_config=None,  # the worker's logging, configured once
        access_log=False,  # /ping every few seconds would drown the job lines
        lifespan="off",
        **extra,
    )


def listening_sockets(settings: Settings) -> list[socket.socket]:
    ports = dict.fromkeys((settings.port, settings.health_port))  # one socket when equal
    return [socket.create_server((settings.http_host, port)) for port in ports]


def _start_up(service: Service, server: uvicorn.Server, build: Callable[[], Worker | None]) -> None:
    try:
        worker = build()
    except WorkerError as err:
        log.error("start-up failed: %s: %s", err.code, redact_urls(err.message))
        worker = None
    except Exception:
        log.exception("start-up failed")
        worker = None
    if worker is None:
        service.fail("start-up failed")
        server.should_exit = True
        return
    service.ready(worker)
    log.info("http worker ready: /ping answers 200")
