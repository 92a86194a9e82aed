"""A fake of RunPod's queue gateway: the job API a worker's SDK talks to, with RunPod's limits.

The SDK's local API (`--rp_serve_api`) enforces none of RunPod's documented limits, so a worker
that passes locally could fail at RunPod's edge. The end-to-end tests run the real worker loop
(the container's CMD, the SDK's rp_job) against this server instead: it hands out jobs, serves
the stop channel, records every job-stream post, progress update and result, and refuses what
RunPod would refuse (serve/limits.py holds the numbers: 1 MB per yield, 10 MB per /run result,
20 MB per /runsync result, 10 MB / 20 MB per input).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from f5worker.serve.limits import (
    MAX_INPUT_BYTES,
    MAX_RUN_RESULT_BYTES,
    MAX_RUNSYNC_RESULT_BYTES,
    MAX_YIELD_BYTES,
)


class PayloadTooLarge(Exception):
    """RunPod's 413 to a client whose job input is over the route's cap."""


@dataclass(frozen=True)
class Limits:
    yield_bytes: int = MAX_YIELD_BYTES
    run_result_bytes: int = MAX_RUN_RESULT_BYTES
    runsync_result_bytes: int = MAX_RUNSYNC_RESULT_BYTES
    run_input_bytes: int = MAX_INPUT_BYTES
    runsync_input_bytes: int = 2 * MAX_INPUT_BYTES

    def result_cap(self, route: str) -> int:
        return self.runsync_result_bytes if route == "runsync" else self.run_result_bytes

    def input_cap(self, route: str) -> int:
        return self.runsync_input_bytes if route == "runsync" else self.run_input_bytes


@dataclass(frozen=True)
class Violation:
    job_id: str
    what: str  # "yield", "run result", "runsync result"
    size: int
    cap: int


class FakeRunPod:
    """Hands out queued jobs and records what the worker posts back, per job id: results
    (`done`, at `done_at`), stream items, progress updates (`progress`: (time, output)), and
    serves the stop channel (`stop(job_id)`, as RunPod does for a cancel or a timeout).

    RunPod's documented limits are enforced as its gateway would: an input over the route's
    cap is refused at `submit` (PayloadTooLarge), a job-stream post over one yield's cap or a
    result over its route's cap is answered 413 and never delivered, and every such refusal is
    kept in `violations` (job id, what, bytes, cap), which the end-to-end tests expect empty."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.violations: list[Violation] = []
        self._route: dict[str, str] = {}
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

    def submit(self, job_id: str, payload: Any, route: str = "run") -> None:
        """Queue a job as a client's POST /run (or /runsync) would; over the cap: refused."""
        size = len(json.dumps({"input": payload}).encode())
        cap = self.limits.input_cap(route)
        if size > cap:
            raise PayloadTooLarge(f"{route} input of {size} bytes is over RunPod's {cap}")
        self._route[job_id] = route
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

    def _admit(self, path: str, size: int) -> bool:
        """Whether RunPod would take this post; a refusal is recorded as a violation."""
        kind, _worker, job_id = path.strip("/").split("/")[:3]
        if kind == "job-stream":
            what, cap = "yield", self.limits.yield_bytes
        else:
            route = self._route.get(job_id, "run")
            what, cap = f"{route} result", self.limits.result_cap(route)
        if size <= cap:
            return True
        with self._finished:
            self.violations.append(Violation(job_id, what, size, cap))
        return False

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
                path = urlsplit(self.path).path
                if not fake._admit(path, len(body)):
                    self.send_response(413)  # what RunPod answers a payload over its cap
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                fake._record(path, json.loads(body))
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
