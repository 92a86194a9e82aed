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
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from f5worker.testing import REPO
from f5worker.testing.audio import noise, wav_bytes
from f5worker.testing.runpod_gateway import FakeRunPod
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
            "VOICE_WRITES": "on",
            **s3_env(s3_url, LIBRARY_BUCKET),
        }
        with running_worker(env, log_path) as url:
            yield url, s3_url
