"""Real worker processes for end-to-end tests, and the servers they talk to, all on 127.0.0.1.

- running_worker: the worker exactly as `make run` starts it (the SDK's local API), on a free port.
- running_worker_loop + FakeRunPod: the worker as the container starts it on RunPod
  (`python model_cache_init.py`), taking jobs from and posting results to a fake of RunPod's job
  API (job-take, job-take-batch, job-stream, job-done, job-stop), so the SDK's real worker loop
  (rp_scale.JobScaler, rp_job.handle_job) runs unchanged.
- wait_until: poll a started worker until something is true, failing with its log's tail.
- full_worker: one local-API worker with everything configured (voice library on moto,
  MAX_CONCURRENCY=4); tests/integration/conftest.py starts it once per session
  (`full_worker_urls`): each start costs 15-40 s of a shared CPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from f5worker.testing import REPO
from f5worker.testing.audio import noise, wav_bytes
from f5worker.testing.s3_servers import client_for, free_port, moto_process, s3_env

LIBRARY_BUCKET = "worker"


@contextmanager
def spawn(cmd: list[str], env: Mapping[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """Run cmd from the repo in its own process group, logging to log_path; kill the group after."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after 20 s; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@dataclass(frozen=True)
class LiveWorker:
    """A started worker: its local API, its process and its log."""

    url: str
    proc: subprocess.Popen
    log_path: Path

    def memory_kb(self) -> tuple[int, int]:
        """(resident now, peak resident) of the worker process, from /proc, in KiB."""
        fields = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
            if ":" in line
        )
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def reset_peak(self) -> None:
        """Start a new peak-resident measurement (Linux: `5` to clear_refs resets VmHWM)."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextmanager
def live_worker(
    env: Mapping[str, str], log_path: Path, timeout: float = 180
) -> Iterator[LiveWorker]:
    """`python model_cache_init.py --rp_serve_api` on a free port: the worker process itself
    (not make's), so tests can read its memory from /proc."""
    port = free_port()
    cmd = [sys.executable, "model_cache_init.py", "--rp_serve_api"]
    cmd += ["--rp_api_port", str(port), "--rp_api_host", "127.0.0.1"]
    with spawn(cmd, env, log_path) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(f"{url}/docs"), proc, log_path, timeout)
        yield LiveWorker(url, proc, log_path)


@contextmanager
def running_worker(
    env: Mapping[str, str], log_path: Path, timeout: float = 180, via_make: bool = True
) -> Iterator[str]:
    """The worker's local API on a free port, as `make run` starts it (or, with via_make=False,
    as `python model_cache_init.py --rp_serve_api`); yields its URL once it answers."""
    if not via_make:
        with live_worker(env, log_path, timeout) as worker:
            yield worker.url
        return
    port = free_port()
    cmd = ["make", "--no-print-directory", "run", f"PORT={port}"]
    with spawn(cmd, env, log_path) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(f"{url}/docs"), proc, log_path, timeout)
        yield url


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def ping(url: str) -> int | None:
    """The status of GET <url>/ping (an HTTP-mode worker's health), None while nothing answers."""
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen, log_path: Path, timeout: float
) -> None:
    """Poll ready() until it is true; fail with the log's tail if the process dies first or
    the timeout passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        _check_alive(proc, log_path)
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def _check_alive(proc: subprocess.Popen, log_path: Path) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"worker exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")


def post(url: str, path: str, body: Any = None, timeout: float = 300) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body if body is not None else {}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def runsync(url: str, payload: Any, timeout: float = 300) -> dict[str, Any]:
    return post(url, "/runsync", {"input": payload}, timeout)


# -- RunPod's job API, faked ------------------------------------------------------------------


class FakeRunPod:
    """Hands out queued jobs and records what the worker posts back, per job id: results
    (`done`, at `done_at`), stream items, progress updates (`progress`: (time, output)), and
    serves the stop channel (`stop(job_id)`, as RunPod does for a cancel or a timeout)."""

    def __init__(self) -> None:
        self.jobs: queue.Queue[dict[str, Any]] = queue.Queue()
        self.done: dict[str, dict[str, Any]] = {}
        self.done_at: dict[str, float] = {}
        self.taken_at: dict[str, float] = {}
        self.streamed: dict[str, list[dict[str, Any]]] = {}
        self.progress: dict[str, list[tuple[float, Any]]] = {}
        self._stops: queue.Queue[str] = queue.Queue()
        self.batch_sizes: list[int] = []
        self.polled = threading.Event()
        self._finished = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """The variables RunPod sets in a worker's container."""
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.url}/job-take/$ID?gpu=test",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.url}/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{self.url}/job-stream/$RUNPOD_POD_ID/$ID?gpu=test",
            "RUNPOD_POD_ID": "fake-worker",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
        }

    def submit(self, job_id: str, payload: Any) -> None:
        self.jobs.put({"id": job_id, "input": payload})

    def stop(self, job_id: str) -> None:
        """Ask the worker to stop a job, through the stop channel its SDK long-polls."""
        self._stops.put(job_id)

    def wait_progress(self, job_id: str, count: int = 1, timeout: float = 300) -> None:
        """Until the job has posted `count` progress updates."""
        deadline = time.monotonic() + timeout
        with self._finished:
            while len(self.progress.get(job_id, [])) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no progress from {job_id}")
                self._finished.wait(left)

    def wait_done(self, job_ids: list[str], timeout: float = 300) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._finished:
            while not all(j in self.done for j in job_ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [j for j in job_ids if j not in self.done]
                    raise TimeoutError(f"jobs not done: {missing}")
                self._finished.wait(left)
        return {j: self.done[j] for j in job_ids}

    def __enter__(self) -> FakeRunPod:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()

    def _take(self, count: int) -> list[dict[str, Any]]:
        """Long-poll like RunPod: wait up to 1 s for the first job, then take what is there."""
        self.polled.set()
        try:
            jobs = [self.jobs.get(timeout=1.0)]
        except queue.Empty:
            return []
        while len(jobs) < count:
            try:
                jobs.append(self.jobs.get_nowait())
            except queue.Empty:
                break
        now = time.monotonic()
        self.taken_at.update((job["id"], now) for job in jobs)
        return jobs

    def _stop_signals(self) -> dict[str, list[str]] | None:
        """Long-poll like RunPod's stop channel: up to 0.5 s for a job to stop."""
        try:
            return {"jobsToStop": [self._stops.get(timeout=0.5)]}
        except queue.Empty:
            return None

    def _record(self, path: str, body: dict[str, Any]) -> None:
        kind, _worker, job_id = path.strip("/").split("/")[:3]
        with self._finished:
            if kind == "job-stream":
                self.streamed.setdefault(job_id, []).append(body)
            elif body.get("status") == "IN_PROGRESS":  # the SDK's progress update
                self.progress.setdefault(job_id, []).append((time.monotonic(), body["output"]))
            else:
                self.done[job_id] = body
                self.done_at[job_id] = time.monotonic()
            self._finished.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path.startswith("/job-take-batch/"):
                    size = int(parse_qs(parts.query)["batch_size"][0])
                    fake.batch_sizes.append(size)
                    self._json(fake._take(size))
                elif parts.path.startswith("/job-take/"):
                    jobs = fake._take(1)
                    self._json(jobs[0] if jobs else None)
                else:  # job-stop
                    self._json(fake._stop_signals())

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake._record(urlsplit(self.path).path, json.loads(body))
                self._json({})

            def _json(self, value: Any) -> None:
                if value is None or value == []:
                    self.send_response(204)
                    self.end_headers()
                    return
                data = json.dumps(value).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        return Handler


@contextmanager
def running_worker_loop(
    fake: FakeRunPod, env: Mapping[str, str], log_path: Path, timeout: float = 180
) -> Iterator[subprocess.Popen]:
    """The container's start command against the fake job API; ready once it polls for jobs."""
    cmd = [sys.executable, "model_cache_init.py"]
    full_env = {"HF_HUB_OFFLINE": "1", **fake.env(), **env}
    with spawn(cmd, full_env, log_path) as proc:
        wait_until(lambda: fake.polled.wait(0.5), proc, log_path, timeout)
        yield proc


# -- one fully configured worker per session ---------------------------------------------------


def seed_library(client: Any) -> None:
    """The voice library and objects the tests refer to."""
    client.put_object(Bucket=LIBRARY_BUCKET, Key="notes.txt", Body=b"not audio at all")
    for name, audio, text in [
        ("silent", wav_bytes(noise(2) * 0), b"Silence."),
        ("textless", wav_bytes(noise(2)), None),
        ("anna", wav_bytes(noise(2)), b"I am Anna."),
    ]:
        client.put_object(Bucket=LIBRARY_BUCKET, Key=f"f5-tts/voices/{name}/ref.wav", Body=audio)
        if text is not None:
            key = f"f5-tts/voices/{name}/ref.txt"
            client.put_object(Bucket=LIBRARY_BUCKET, Key=key, Body=text)


@contextmanager
def full_worker(model_dir: Path, log_path: Path) -> Iterator[tuple[str, str]]:
    """(local API URL, S3 URL): the demo model, a voice library, MAX_CONCURRENCY=4."""
    with moto_process(LIBRARY_BUCKET) as s3_url:  # shared by the session: a backend of its own
        seed_library(client_for(s3_url))
        env = {
            "MODEL_DIR": str(model_dir),
            "MAX_CONCURRENCY": "4",
            "WORKER_VERSION": "api-1",
            **s3_env(s3_url, LIBRARY_BUCKET),
        }
        with running_worker(env, log_path) as url:
            yield url, s3_url
