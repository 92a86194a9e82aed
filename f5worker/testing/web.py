"""A reference-audio web server on 127.0.0.1: one path per behaviour a URL has in the wild.

audio_server(audio, limit) serves `audio` at /ref.wav and, at the other paths, pages that are
not audio, errors, bodies over `limit` (declared, chunked, gzip-bombed), a body that drips, a
server that never answers, and redirects (one, and a loop). Tests of reference fetching and the
worker's bad-input suite share it.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        """Clients that give up mid-response are the point of several tests."""


@contextlib.contextmanager
def audio_server(audio: bytes, limit: int) -> Iterator[str]:
    """Serve the paths of AudioServer; yields the base URL."""
    handler = type("Handler", (AudioServer,), {"audio": audio, "limit": limit})
    httpd = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class AudioServer(BaseHTTPRequestHandler):
    """Each path is one behaviour a reference URL can have in the wild."""

    protocol_version = "HTTP/1.1"
    audio = b""
    limit = 0

    def do_GET(self) -> None:
        route = {
            "/ref.wav": lambda: self._send(200, self.audio),
            "/page.html": lambda: self._send(200, b"<html>not audio</html>", "text/html"),
            "/missing.wav": lambda: self._send(404, b"no"),
            "/error.wav": lambda: self._send(500, b"boom"),
            "/declared-big.wav": lambda: self._send(200, b"x" * (self.limit + 1)),
            "/chunked-big.wav": self._chunked_big,
            "/gzip-bomb.wav": self._gzip_bomb,
            "/drip.wav": self._drip,
            "/silent-hang.wav": lambda: time.sleep(3),
            "/redirect": lambda: self._redirect("/ref.wav"),
            "/redirect-loop": lambda: self._redirect("/redirect-loop"),
        }.get(self.path.split("?")[0])
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

    def _drip(self) -> None:
        """A byte every 50 ms: each read succeeds, the whole never ends in time."""
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.audio)))
        self.end_headers()
        try:
            for i in range(len(self.audio)):
                self.wfile.write(self.audio[i : i + 1])
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *_args: object) -> None:
        pass
