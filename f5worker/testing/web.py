"""A reference-audio web server on 127.0.0.1: one path per behaviour a URL has in the wild.

audio_server(audio, limit) serves `audio` at /ref.wav and, at the other paths, pages that are
not audio, errors, bodies over `limit` (declared, chunked, gzip-bombed), compressed bodies, a body
and headers that drip, a server that never answers, and redirects (one, a chain, a slow chain, a
loop). silent_server() accepts connections and never answers at all. Tests of reference fetching
and the worker's bad-input suite share them.

Every slow behaviour is bounded (a few hundred bytes or steps), so a client that gives up leaves
at most one handler thread that ends within a second or so; handler threads are named
"audio-server" so that tests can tell them from threads a client left behind.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SERVER_THREAD = "audio-server"
DRIP_S = 0.05  # between two bytes of a dripping response
SLOW_HOP_S = 0.4  # before each answer of /slow-chain


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that give up mid-response are the point of several tests."""


@contextlib.contextmanager
def audio_server(audio: bytes, limit: int) -> Iterator[str]:
    """Serve the paths of AudioServer; yields the base URL."""
    handler = type("Handler", (AudioServer,), {"audio": audio, "limit": limit})
    httpd = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name=SERVER_THREAD, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A port that completes TCP handshakes (the kernel's backlog) and never reads or answers:
    no thread at all on this side. Yields the base URL."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


class AudioServer(BaseHTTPRequestHandler):
    """Each path is one behaviour a reference URL can have in the wild."""

    protocol_version = "HTTP/1.1"
    audio = b""
    limit = 0

    def setup(self) -> None:
        threading.current_thread().name = SERVER_THREAD
        super().setup()

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        for prefix, handler in (("/chain/", self._chain), ("/slow-chain/", self._slow_chain)):
            if path.startswith(prefix) and path[len(prefix) :].isdigit():
                handler(int(path[len(prefix) :]))
                return
        route = {
            "/ref.wav": lambda: self._send(200, self.audio),
            "/page.html": lambda: self._send(200, b"<html>not audio</html>", "text/html"),
            "/missing.wav": lambda: self._send(404, b"no"),
            "/error.wav": lambda: self._send(500, b"boom"),
            "/declared-big.wav": lambda: self._send(200, b"x" * (self.limit + 1)),
            "/chunked-big.wav": self._chunked_big,
            "/gzip-bomb.wav": self._gzip_bomb,
            "/deflate-bomb.wav": lambda: self._encoded("deflate", zlib.compress(b"\0" * 10**7)),
            "/gzip.wav": lambda: self._encoded("gzip", gzip.compress(self.audio)),
            "/brotli.wav": lambda: self._encoded("br", b"not really brotli"),
            "/drip.wav": self._drip,
            "/drip-headers.wav": self._drip_headers,
            "/silent-hang.wav": lambda: time.sleep(3),
            "/redirect": lambda: self._redirect("/ref.wav"),
            "/redirect-loop": lambda: self._redirect("/redirect-loop"),
        }.get(path)
        if route is None:
            self._send(404, b"")
        else:
            route()

    def _send(self, status: int, body: bytes, ctype: str = "audio/wav") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, to: str) -> None:
        self.send_response(302)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _chunked_big(self) -> None:
        """No Content-Length: only counting the bytes read catches it."""
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for _ in range(self.limit // 4096 + 2):
            self.wfile.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _gzip_bomb(self) -> None:
        """64 KB on the wire that decode to 10 MB."""
        body = gzip.compress(b"\0" * 10_000_000)
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chain(self, n: int) -> None:
        """n redirects, then the audio."""
        if n > 0:
            self._redirect(f"/chain/{n - 1}")
        else:
            self._send(200, self.audio)

    def _slow_chain(self, n: int) -> None:
        """n redirects, each answered after SLOW_HOP_S: every hop is quick, the chain is not."""
        time.sleep(SLOW_HOP_S)
        if n > 0:
            self._redirect(f"/slow-chain/{n - 1}")
        else:
            self._send(200, self.audio)

    def _encoded(self, encoding: str, body: bytes) -> None:
        """A body with a Content-Encoding, although the client asked for identity."""
        self.send_response(200)
        self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip_headers(self) -> None:
        """The status line and headers a byte every DRIP_S (about 20 s in all): every read
        brings something, the headers never end in time."""
        head = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 400 + b"\r\nContent-Length: 0\r\n\r\n"
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client gave up: the point of the test
            for i in range(len(head)):
                self.wfile.write(head[i : i + 1])
                self.wfile.flush()
                time.sleep(DRIP_S)

    def _drip(self) -> None:
        """A byte every 50 ms: each read succeeds, the whole never ends in time."""
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.audio)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up: the point of the test
            for i in range(len(self.audio)):
                self.wfile.write(self.audio[i : i + 1])
                self.wfile.flush()
                time.sleep(DRIP_S)

    def log_message(self, *_args: object) -> None:
        pass
