#!/usr/bin/env python3
"""Time to first audio byte in the HTTP mode: shortened first chunk vs not, and vs a queue job.

Three workers serve the same model directory, each started as its `make` target starts it:
`make run-http` with the shortened first chunk (FIRST_CHUNK_MAX_BYTES=0, the default: a quarter
of the chunk budget, as upstream's socket server), `make run-http` without it (-1), and
`make run` (the RunPod SDK's local API, the queue contract). For a sentence, a paragraph and a
page, each round sends the same request to all three, round-robin, so load from other processes
falls on all alike: a streamed `POST /v1/audio/speech` (wav) to both HTTP workers, and
`POST /runsync` to the queue worker, whose first byte is its last (a queue job returns JSON when
it is done). Medians of the rounds; the goal is a paragraph's first byte at <= 1/4 of its total.

  .venv/bin/python scripts/bench_http.py --repeats 3
  .venv/bin/python scripts/bench_http.py --quality best --texts paragraph --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from bench_common import REPO, TEXTS, build_full_arch_model, command_line, machine_facts, table

from f5worker.testing.s3_servers import free_port
from f5worker.testing.worker import wait_until

log = logging.getLogger("bench_http")
GOAL = 0.25  # a paragraph's first byte at most a quarter of its total time
WORKERS = ("http short first", "http plain", "queue runsync")


def main() -> int:
    args = _parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the workers on the way out
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    model_dir = _model_dir(args, work)
    base = {
        "MODEL_NAME": "demo",
        "MODEL_DIR": str(model_dir),
        "MODEL_CACHE_DIR": str(work / "cache"),
        "RUNPOD_LOG_LEVEL": "ERROR",
        "LOG_LEVEL": "WARNING",
        **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}),
    }
    with contextlib.ExitStack() as stack:
        started = {
            "http short first": stack.enter_context(
                _worker("run-http", {**base, "FIRST_CHUNK_MAX_BYTES": "0"}, work / "short.log")
            ),
            "http plain": stack.enter_context(
                _worker("run-http", {**base, "FIRST_CHUNK_MAX_BYTES": "-1"}, work / "plain.log")
            ),
            "queue runsync": stack.enter_context(_worker("run", base, work / "queue.log")),
        }
        for worker in started.values():
            worker.wait()
        urls = {name: worker.url for name, worker in started.items()}
        rows = [_measure(urls, name, TEXTS[name], args) for name in args.texts]
    _report(args, rows)
    paragraph = [r for r in rows if r[0] == "paragraph"]
    return 0 if all(r[-1] == "yes" for r in paragraph) else 1


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("demo", "full"), default="demo")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "f5bench")
    parser.add_argument("--quality", choices=("fast", "balanced", "best"), default="balanced")
    parser.add_argument("--texts", nargs="+", choices=tuple(TEXTS), default=list(TEXTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: torch's)")
    return parser.parse_args()


def _model_dir(args: argparse.Namespace, work: Path) -> Path:
    if args.model == "full":
        return build_full_arch_model(args.work_dir / "full")
    from f5worker.models.demo import build_demo_model

    return build_demo_model(work / "demo")


def _measure(urls: dict[str, str], name: str, text: str, args: argparse.Namespace) -> list[Any]:
    speech = {"input": text, "response_format": "wav", "seed": args.seed, "quality": args.quality}
    native = {"text": text, "format": "wav", "seed": args.seed, "quality": args.quality}
    calls = {
        "http short first": lambda: _stream(f"{urls['http short first']}/v1/audio/speech", speech),
        "http plain": lambda: _stream(f"{urls['http plain']}/v1/audio/speech", speech),
        "queue runsync": lambda: _stream(f"{urls['queue runsync']}/runsync", {"input": native}),
    }
    for call in calls.values():  # the first run of a new input shape is not timed
        call()
    log.info("timing %s: %d rounds", name, args.repeats)
    runs: dict[str, list[tuple[float, float]]] = {w: [] for w in WORKERS}
    for _ in range(args.repeats):
        for worker, call in calls.items():
            runs[worker].append(call())
    first = {w: statistics.median(r[0] for r in runs[w]) for w in WORKERS}
    total = {w: statistics.median(r[1] for r in runs[w]) for w in WORKERS}
    short, plain, queue = WORKERS
    share = first[short] / total[short]
    return [
        name,
        first[short],
        total[short],
        first[plain],
        total[plain],
        total[queue],
        f"{share:.2f}",
        f"{first[short] / first[plain]:.2f}",
        f"{first[short] / total[queue]:.2f}",
        f"{total[short] / total[plain]:.2f}",
        "yes" if share <= GOAL else "no",
    ]


def _stream(url: str, body: dict[str, Any]) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the last) of one POST."""
    start = time.perf_counter()
    first = None
    with httpx.stream("POST", url, json=body, timeout=900) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.read()[:300]!r}")
        for _ in response.iter_raw():
            first = first or time.perf_counter() - start
    total = time.perf_counter() - start
    return first or total, total


@contextmanager
def _worker(target: str, env: dict[str, str], log_path: Path) -> Iterator[_Started]:
    """The worker started in the background; the caller waits for all (they start together)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ready = f"{url}/ping" if target == "run-http" else f"{url}/docs"  # the local API: /docs
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", target, f"PORT={port}"],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield _Started(url, lambda: wait_until(lambda: _answers_200(ready), proc, log_path, 900))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@dataclass(frozen=True)
class _Started:
    url: str
    wait: Callable[[], None]


def _answers_200(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(url, timeout=2, follow_redirects=True).status_code == 200
    return False


def _report(args: argparse.Namespace, rows: list[list[Any]]) -> None:
    facts = machine_facts()
    print()
    print(f"model: {args.model}, quality {args.quality}, repeats: {args.repeats}, median seconds")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    print()
    headers = [
        "text",
        "short first: first byte s",
        "short first: total s",
        "plain: first byte s",
        "plain: total s",
        "queue /runsync: total (= first byte) s",
        "first byte / total (short)",
        "first byte: short / plain",
        "first byte: short / queue",
        "total: short / plain",
        f"paragraph goal <= {GOAL:.2f}",
    ]
    print(table(headers, rows))
    print()
    print(f"reproduce: {command_line()}")


if __name__ == "__main__":
    raise SystemExit(main())
