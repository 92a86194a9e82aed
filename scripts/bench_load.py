#!/usr/bin/env python3
"""Concurrent clients against one worker: the fair scheduler against first come, first served.

One worker per policy and target, started as its `make` target starts it, all in the same run:
`fair` (SCHEDULER=fair, MAX_CONCURRENCY=N) against the `--policies`: `fifo` (SCHEDULER=fifo,
MAX_CONCURRENCY=N: the requests' chunks in the order they were submitted, as a plain executor
interleaves them, the worker of decision 027's context), `fcfs` (MAX_CONCURRENCY=1: one request
at a time, in arrival order, the worker as #22 found it: "a sentence sent while a page is being
synthesized waits for the whole page") and, on request, `strict` (SCHEDULER=strict: fair without
the playback clock of decision 035). Targets: `make run-http` (HTTP mode: mode `http`, clients
through the official `openai` client's streamed speech call; mode `ws`, clients on `WS
/v1/audio/speech/stream` with the `websockets` client, sending the text as word deltas
`--delta-ms` apart, as an LLM writes it, first audio timed from the delta that completes the
first sentence) and `make run` (mode `queue`: the RunPod SDK's local API, `POST /runsync`, whose
first audio is its last).

A scenario is a set of clients started together. Arrivals are open-loop, the same instants for
every policy: a "pages" client sends `--pages` pages back to back from the start; "sentences"
client i sends its k-th of `--sentences` sentences at 0.5 + i*interval/n + k*interval seconds
(`--interval`), whether or not its earlier ones are done (a client that waited for its answers
would send less under the slower policy, so the policies would not get the same work). Each
scenario runs `--rounds` times per policy, in order and then in reverse order (ABBA), so load
from other processes falls on all alike; one torch thread per worker by default (`--threads`),
as in bench_http.py.

Per scenario and kind of request: p50/p95 time to first audio, p50/p95 total, audio seconds per
wall second (the requests' audio over their own wall time), the pages' worst stall (how long a
listener playing the stream in real time from its first byte would have waited for audio that
had not come: max over arrivals of elapsed - audio received before it), 429s and errors.

Scenarios: for each N of `--clients`, one page client and N-1 sentence clients (N=1: a page
alone); and "sentences alone" (N-1 sentence clients, no page) for the largest N, the figure a
sentence would have with no page running. The goal (docs/benchmarks.md): with one page client
and three sentence clients, the sentences' p95 first audio under fair at most 1/3 of first come,
first served, and the page's audio seconds per wall second no more than 10% below it; the
summary prints both ratios against each other policy of the run.

  .venv/bin/python scripts/bench_load.py                     # the goal's scenarios, http and ws
  .venv/bin/python scripts/bench_load.py --clients 1 2 4 8 --sentences 6 --modes http ws queue
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bench_common import PAGE, SENTENCE, command_line, machine_facts, table
from bench_http import _worker

log = logging.getLogger("bench_load")
POLICIES = ("fair", "strict", "fifo", "fcfs")
BASELINES = ("fcfs", "fifo", "strict")  # what fair is compared with, in that order
TARGETS = {"http": "run-http", "ws": "run-http", "queue": "run"}  # mode -> the worker's target
PCM_RATE = 24000  # OpenAI's pcm: 24 kHz, 16-bit mono
GOAL_FIRST = 1 / 3  # sentences' p95 first audio, fair / first come first served, at most
GOAL_PAGE = 0.90  # the page's audio s per wall s, fair / first come first served, at least
START_S = 0.5  # the first sentence is sent once a page is under way


@dataclass
class Result:
    kind: str  # "page" or "sentence"
    first_s: float = 0.0
    total_s: float = 0.0
    audio_s: float = 0.0
    stall_s: float = 0.0  # a real-time listener's wait for audio not yet come (streams)
    status: int = 200
    error: str = ""


@dataclass
class Scenario:
    name: str
    pages: int  # page clients
    sentences: int  # sentence clients
    results: list[Result] = field(default_factory=list)
    wall_s: float = 0.0


class _Listener:
    """A listener playing pcm in real time from its first byte: the first byte's time and the
    longest it would have waited for audio that had not come (no pause before the first)."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.first_at = 0.0
        self.size = 0
        self.stall_s = 0.0

    def heard(self, size: int) -> None:
        now = time.perf_counter()
        if not self.size:
            self.first_at = now
        else:  # played so far, had nothing paused: now - first_at; received: self.size
            self.stall_s = max(self.stall_s, now - self.first_at - self.size / 2 / PCM_RATE)
        self.size += size

    def into(self, result: Result) -> None:
        result.first_s = self.first_at - self.start if self.size else 0.0
        result.audio_s = self.size / 2 / PCM_RATE
        result.stall_s = self.stall_s


def main() -> int:
    args = _parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("httpx", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    from f5worker.models.demo import build_demo_model

    model_dir = build_demo_model(work / "demo")
    most = max(args.clients)
    base = {
        "MODEL_NAME": "demo",
        "MODEL_DIR": str(model_dir),
        "MODEL_CACHE_DIR": str(work / "cache"),
        "RUNPOD_LOG_LEVEL": "ERROR",
        "LOG_LEVEL": "WARNING",
        "HTTP_MAX_WAITING": str(64),  # open-loop: every request waits for fcfs's one slot
        "HTTP_QUEUE_TIMEOUT_S": str(int(args.timeout)),
        **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}),
    }
    rows: list[list[Any]] = []
    goal: dict[tuple[str, str, str], Scenario] = {}
    loads: list[float] = []
    with contextlib.ExitStack() as stack:
        workers = {
            (target, policy): stack.enter_context(
                _worker(
                    target,
                    {**base, **_policy_env(policy, most, args)},
                    work / f"{target}-{policy}.log",
                )
            )
            for target in sorted({TARGETS[mode] for mode in args.modes})
            for policy in args.policies
        }
        for worker in workers.values():
            worker.wait()
        for mode in args.modes:  # a first request is not timed
            for policy in args.policies:
                _call(mode, workers[(TARGETS[mode], policy)].url, args)("sentence")
        for mode in args.modes:
            for scenario_args in _scenarios(args.clients):
                runs = {policy: Scenario(*scenario_args) for policy in args.policies}
                for n in range(args.rounds):  # fair fifo fcfs, fcfs fifo fair, ...
                    for policy in args.policies if n % 2 == 0 else args.policies[::-1]:
                        loads.append(os.getloadavg()[0])
                        _run(runs[policy], workers[(TARGETS[mode], policy)].url, mode, args)
                for policy, scenario in runs.items():
                    rows += _rows(mode, policy, scenario)
                    goal[(mode, policy, scenario.name)] = scenario
    _report(args, rows, goal, loads)
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--modes", nargs="+", choices=tuple(TARGETS), default=["http", "ws"])
    parser.add_argument(
        "--policies",
        nargs="+",
        choices=POLICIES,
        default=["fair", "fifo", "fcfs"],
        help="fair against these, in the same run (strict: fair without the playback clock)",
    )
    parser.add_argument("--pages", type=int, default=1, help="pages per page client")
    parser.add_argument("--sentences", type=int, default=3, help="sentences per sentence client")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each scenario per policy")
    parser.add_argument(
        "--interval", type=float, default=2.5, help="seconds between a client's sentences"
    )
    parser.add_argument("--quality", choices=("fast", "balanced", "best"), default="balanced")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per worker (0: torch's default)"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        help="BATCH_MAX_ITEMS of the fair worker (0: its device's default); the others always 1",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per request, at most")
    parser.add_argument(
        "--delta-ms", type=float, default=20, help="ws: ms between word deltas (an LLM's pace)"
    )
    args = parser.parse_args()
    if min(args.clients) < 1 or max(args.clients) > 64:
        parser.error("--clients: 1..64")
    args.policies = ["fair", *dict.fromkeys(p for p in args.policies if p != "fair")]
    return args


def _scenarios(clients: list[int]) -> list[tuple[str, int, int]]:
    out = [(f"{n} clients: 1 page + {n - 1} sentence", 1, n - 1) for n in sorted(set(clients))]
    if max(clients) > 1:
        out.append((f"{max(clients) - 1} sentence, no page", 0, max(clients) - 1))
    return out


def _run(scenario: Scenario, url: str, mode: str, args: argparse.Namespace) -> None:
    """One scenario's clients, every request sent at its planned instant (open-loop)."""
    call = _call(mode, url, args)
    lock = threading.Lock()

    def pages() -> None:
        for _ in range(args.pages):
            send("page", 0.0)

    def send(kind: str, at: float) -> None:
        time.sleep(max(0.0, at - (time.perf_counter() - start)))
        result = call(kind)
        with lock:
            scenario.results.append(result)

    n = max(scenario.sentences, 1)
    threads = [threading.Thread(target=pages) for _ in range(scenario.pages)]
    threads += [
        threading.Thread(
            target=send, args=("sentence", START_S + i * args.interval / n + k * args.interval)
        )
        for i in range(scenario.sentences)
        for k in range(args.sentences)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=args.timeout * (args.pages + args.sentences) + 60)  # bounded
    scenario.wall_s += time.perf_counter() - start
    log.info(
        "%s: %d requests so far, %.1f s", scenario.name, len(scenario.results), scenario.wall_s
    )


def _policy_env(policy: str, clients: int, args: argparse.Namespace) -> dict[str, str]:
    """The worker's scheduling settings. fifo and fcfs never batch across requests; fcfs takes
    one request at a time (the others wait for its slot, in arrival order); fair takes --batch
    (0: the worker's default for its device)."""
    if policy == "fcfs":
        return {"SCHEDULER": "fifo", "BATCH_MAX_ITEMS": "1", "MAX_CONCURRENCY": "1"}
    batch = str(args.batch) if policy == "fair" else "1"
    return {"SCHEDULER": policy, "BATCH_MAX_ITEMS": batch, "MAX_CONCURRENCY": str(clients)}


def _call(mode: str, url: str, args: argparse.Namespace) -> Callable[[str], Result]:
    if mode == "ws":
        return _ws_call(url, args)
    return _http_call(url, args) if mode == "http" else _queue_call(url, args)


def _http_call(url: str, args: argparse.Namespace) -> Callable[[str], Result]:
    import openai

    client = openai.OpenAI(
        base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=args.timeout
    )
    extra = {"quality": args.quality, "seed": args.seed}

    def call(kind: str) -> Result:
        result = Result(kind)
        start = time.perf_counter()
        listener = _Listener(start)
        try:
            with client.audio.speech.with_streaming_response.create(
                model="tts-1",
                voice="alloy",
                input=PAGE if kind == "page" else SENTENCE,
                response_format="pcm",
                extra_body=extra,
            ) as response:
                for data in response.iter_bytes():
                    if data:
                        listener.heard(len(data))
        except openai.APIStatusError as exc:
            result.status, result.error = exc.status_code, type(exc).__name__
        except (openai.APIError, httpx.HTTPError) as exc:
            result.status, result.error = 0, type(exc).__name__
        listener.into(result)
        result.total_s = time.perf_counter() - start
        return result

    return call


def _ws_call(url: str, args: argparse.Namespace) -> Callable[[str], Result]:
    """One WebSocket session per request: the text as word deltas, then input.done. First
    audio and total are timed from the delta that completes the first sentence (the worker's
    own splitter says which), so the LLM's pace before it is not counted."""
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    from f5worker.job.sentences import SentenceSplitter

    config = {"type": "session.config", "voice": "alloy", "quality": args.quality}
    config["seed"] = args.seed
    stream_url = url.replace("http://", "ws://") + "/v1/audio/speech/stream"

    def call(kind: str) -> Result:
        result = Result(kind)
        words = (PAGE if kind == "page" else SENTENCE).split(" ")
        deltas = [w + " " for w in words[:-1]] + [words[-1]]
        splitter = SentenceSplitter()
        ends = [i for i, d in enumerate(deltas) if splitter.feed(d)]
        completes = ends[0] if ends else len(deltas)  # len: input.done completes it
        marks: dict[str, float] = {}

        def send(ws: Any) -> None:
            for i, delta in enumerate(deltas):
                ws.send(json.dumps({"type": "input.text", "text": delta}))
                if i == completes:
                    marks["sentence"] = time.perf_counter()
                time.sleep(args.delta_ms / 1000)
            ws.send(json.dumps({"type": "input.done"}))
            marks.setdefault("sentence", time.perf_counter())

        listener = _Listener(0.0)
        try:
            with connect(stream_url, open_timeout=args.timeout, max_size=None) as ws:
                ws.send(json.dumps(config))
                sender = threading.Thread(target=send, args=(ws,), daemon=True)
                sender.start()
                while True:
                    message = ws.recv(timeout=args.timeout)
                    if isinstance(message, bytes):
                        listener.heard(len(message))
                        continue
                    event = json.loads(message)
                    if event["type"] == "error":
                        result.status, result.error = 0, event["code"]
                        break
                    if event["type"] == "session.done":
                        break
                sender.join(timeout=args.timeout)
                ws.send(json.dumps({"type": "session.close"}))
        except (OSError, TimeoutError, WebSocketException) as exc:
            result.status, result.error = 0, type(exc).__name__
        end = time.perf_counter()
        listener.start = marks.get("sentence", end)
        listener.into(result)
        result.total_s = end - listener.start
        return result

    return call


def _queue_call(url: str, args: argparse.Namespace) -> Callable[[str], Result]:
    def call(kind: str) -> Result:
        result = Result(kind)
        text = PAGE if kind == "page" else SENTENCE
        body = {
            "input": {"text": text, "format": "wav", "quality": args.quality, "seed": args.seed}
        }
        start = time.perf_counter()
        try:
            answer = httpx.post(f"{url}/runsync", json=body, timeout=args.timeout)
            result.status = answer.status_code
            output = answer.json().get("output") if answer.status_code == 200 else None
            items = output if isinstance(output, list) else [output or {"error": "no output"}]
            if any("error" in item for item in items):
                result.error = "error item"
            result.audio_s = sum(float(item.get("duration_s", 0)) for item in items)
        except httpx.HTTPError as exc:
            result.status, result.error = 0, type(exc).__name__
        result.total_s = result.first_s = time.perf_counter() - start  # first audio = the last
        return result

    return call


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _rows(mode: str, policy: str, scenario: Scenario) -> list[list[Any]]:
    rows = []
    for kind in ("sentence", "page"):
        mine = [r for r in scenario.results if r.kind == kind]
        if not mine:
            continue
        ok = [r for r in mine if r.status == 200 and not r.error]
        first = [r.first_s for r in ok]
        total = [r.total_s for r in ok]
        rate = sum(r.audio_s for r in ok) / sum(total) if total else 0.0  # per request's wall s
        rows.append(
            [
                mode,
                scenario.name,
                policy,
                kind,
                len(mine),
                _pct(first, 0.5),
                _pct(first, 0.95),
                _pct(total, 0.5),
                _pct(total, 0.95),
                f"{rate:.2f}",
                f"{max((r.stall_s for r in ok), default=0.0):.3f}" if kind == "page" else "",
                sum(r.status == 429 for r in mine),
                sum(r.status not in (200, 429) or bool(r.error) for r in mine),
            ]
        )
    return rows


def _report(
    args: argparse.Namespace, rows: list[list[Any]], runs: dict[Any, Scenario], loads: list[float]
) -> None:
    print()
    print(
        f"demo model, quality {args.quality}, {args.pages} page(s) per page client, "
        f"{args.sentences} sentences per sentence client sent {args.interval:g} s apart "
        f"(open-loop), {args.rounds} rounds per policy (ABBA), "
        f"torch threads: {args.threads or 'default'}, "
        f"fair's BATCH_MAX_ITEMS: {args.batch or 'default'}"
    )
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine_facts().items()))
    print(
        f"load average (1 min) during the run: {min(loads):.2f}..{max(loads):.2f}, "
        f"median {statistics.median(loads):.2f}"
    )
    print()
    headers = [
        "mode",
        "scenario",
        "scheduler",
        "requests",
        "n",
        "first audio p50 s",
        "first audio p95 s",
        "total p50 s",
        "total p95 s",
        "audio s per wall s",
        "page stall max s",
        "429",
        "errors",
    ]
    print(table(headers, rows))
    print()
    n = max(args.clients)
    mix = f"{n} clients: 1 page + {n - 1} sentence"
    for mode in args.modes:
        fair = runs.get((mode, "fair", mix))
        for baseline in BASELINES:
            other = runs.get((mode, baseline, mix))
            if fair is None or other is None or n < 2:
                continue
            first = _p95_first(fair, "sentence") / _p95_first(other, "sentence")
            page = _page_rate(fair) / _page_rate(other)
            print(
                f"{mode}, {mix}: sentences' p95 first audio fair / {baseline} = {first:.2f} "
                f"(goal <= {GOAL_FIRST:.2f}); page audio s per wall s fair / {baseline} = "
                f"{page:.2f} (goal >= {GOAL_PAGE:.2f})"
            )
    print()
    print(f"reproduce: {command_line()}")


def _p95_first(scenario: Scenario, kind: str) -> float:
    return _pct([r.first_s for r in scenario.results if r.kind == kind and not r.error], 0.95)


def _page_rate(scenario: Scenario) -> float:
    pages = [r for r in scenario.results if r.kind == "page" and not r.error]
    return sum(r.audio_s for r in pages) / max(sum(r.total_s for r in pages), 1e-9)


if __name__ == "__main__":
    raise SystemExit(main())
