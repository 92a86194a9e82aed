#!/usr/bin/env python3
"""Handler overhead: a job through RunPod's local API against a direct engine call.

The worker is started exactly as `make run` starts it (model_cache_init.py, the SDK's local
API on 127.0.0.1), serving the same model directory that this process loads directly. Each
round sends the same request both ways, alternating, so load from other processes falls on
both alike: POST /runsync (parse, synthesize, encode, base64, JSON, HTTP) against
engine.synthesize() alone, and against engine.synthesize() + encode(), both called from a
thread other than the main one, as the worker calls them. The goal is an overhead of at most
5% over the direct call. "handler's own ms" is the median, over the handler runs, of each run's
wall time minus the worker's own timing of its synthesis in that run: what the handler, the
SDK and HTTP add, free of the engine's run-to-run noise.

  .venv/bin/python scripts/bench_handler.py --nfe 32 --repeats 5
  .venv/bin/python scripts/bench_handler.py --model full --nfe 4 --texts sentence --repeats 3
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_common import (
    REPO,
    TEXTS,
    build_full_arch_model,
    command_line,
    interleaved,
    machine_facts,
    table,
)

from f5worker.engine import torch_thread

log = logging.getLogger("bench_handler")
GOAL = 0.05  # at most 5% over the direct engine call
job_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job")


def main() -> int:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("engine").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-handler-"))
    model_dir = torch_thread.run(_model_dir, args, work)  # all torch work on one thread
    threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    if args.threads:
        import torch

        torch_thread.run(torch.set_num_threads, args.threads)  # per OS thread in OpenMP
    engine = _load_engine(model_dir)
    env = {
        **threads,
        "MODEL_NAME": "demo",
        "MODEL_DIR": str(model_dir),
        "MODEL_CACHE_DIR": str(work / "cache"),
        "RUNPOD_LOG_LEVEL": "ERROR",
        "LOG_LEVEL": "WARNING",
    }
    rows = []
    with _running_worker(env, work / "worker.log") as url:
        for nfe in args.nfe:
            for name in args.texts:
                rows.append(_measure(url, engine, TEXTS[name], name, nfe, args))
    _report(args, rows)
    return 0 if all(r[-1] != "no" for r in rows) else 1


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("demo", "full"), default="demo")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "f5bench")
    parser.add_argument("--nfe", type=int, nargs="+", default=[32])
    parser.add_argument(
        "--texts", nargs="+", choices=tuple(TEXTS), default=["sentence", "paragraph"]
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, help="torch threads in both processes (default: torch's)"
    )
    return parser.parse_args()


def _model_dir(args: argparse.Namespace, work: Path) -> Path:
    if args.model == "full":
        return build_full_arch_model(args.work_dir / "full")
    from f5worker.models.demo import build_demo_model

    return build_demo_model(work / "demo")


def _load_engine(model_dir: Path) -> Any:
    from f5worker.engine.f5tts import F5TTSEngine
    from f5worker.job.voices import default_voice

    engine = F5TTSEngine.load(model_dir, device="auto")
    engine.warm_up(default_voice())
    return engine


def _measure(url: str, engine: Any, text: str, name: str, nfe: int, args: argparse.Namespace):
    from f5worker.engine.plan import SynthesisParams
    from f5worker.job.codecs import encode
    from f5worker.job.voices import default_voice

    voice, params = default_voice(), SynthesisParams(seed=args.seed, nfe_step=nfe)
    payload = {"text": text, "seed": args.seed, "nfe_step": nfe, "format": "wav"}

    def call_engine() -> Any:
        # From a job thread, as the worker calls the engine (which moves the work to its
        # torch thread).
        return job_thread.submit(engine.synthesize, text, voice, params).result()

    own: list[float] = []  # per handler run: its wall time minus the worker's synthesis

    def call_handler() -> dict[str, Any]:
        start = time.perf_counter()
        body = runsync(url, payload)
        inside = _synthesis_stage(body)
        if inside is not None:
            own.append(time.perf_counter() - start - inside)
        return body

    # The first run of a new input shape is not timed on either side.
    runsync(url, payload)
    call_engine()
    timings, last = interleaved(
        {
            "handler": call_handler,
            "engine": call_engine,
            "engine+encode": lambda: encode(call_engine(), "wav"),
        },
        args.repeats,
    )
    served_audio = _decode_wav(_audio_item(last["handler"])["audio_base64"])
    if served_audio.shape != last["engine"].samples.shape:
        raise RuntimeError("the handler and the engine produced different audio lengths")
    handler, direct = timings["handler"].median, timings["engine"].median
    overhead = handler / direct - 1
    return [
        name,
        nfe,
        round(last["engine"].duration_s, 2),
        direct,
        timings["engine+encode"].median,
        handler,
        timings["handler"].spread,
        f"{statistics.median(own) * 1000:.0f}" if own else "-",
        f"{statistics.median(own) / direct * 100:+.1f}%" if own else "-",
        f"{overhead * 100:+.1f}%",
        "yes" if overhead <= GOAL else "no",
    ]


def runsync(url: str, payload: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/runsync",
        data=json.dumps({"input": payload}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.loads(response.read())
    _audio_item(body)  # fail loudly on an error instead of timing it
    return body


def _audio_item(body: dict[str, Any]) -> dict[str, Any]:
    """The result item of a /runsync answer, whatever the handler's shape (one dict, or the
    list a generator handler's aggregated stream returns)."""
    output = body.get("output")
    items = output if isinstance(output, list) else [output]
    for item in items:
        if isinstance(item, dict) and "audio_base64" in item:
            return item
    raise RuntimeError(f"no audio in the answer: {json.dumps(body)[:500]}")


def _synthesis_stage(body: dict[str, Any]) -> float | None:
    """The worker's own timing of engine.synthesize for this job, where it reports one: it
    splits the overhead into the engine running in the worker and the handler's own work."""
    stage = _audio_item(body).get("timings", {}).get("synthesis")
    return float(stage) if isinstance(stage, int | float) else None


def _decode_wav(b64: str) -> Any:
    import soundfile as sf

    samples, _ = sf.read(io.BytesIO(base64.b64decode(b64)), dtype="float32")
    return samples


@contextmanager
def _running_worker(env: dict[str, str], log_path: Path, timeout: float = 300) -> Iterator[str]:
    """`make run PORT=...`, as tests/integration/worker_process.py starts it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={port}"],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, timeout, log_path)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_ready(proc: subprocess.Popen, url: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited:\n{log_path.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/docs", timeout=2).close()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise TimeoutError(f"worker not ready after {timeout} s:\n{log_path.read_text()[-3000:]}")


def _report(args: argparse.Namespace, rows: list[list[Any]]) -> None:
    facts = machine_facts()
    print()
    print(f"model: {args.model}, repeats: {args.repeats}, median seconds")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    print()
    headers = [
        "text",
        "NFE",
        "audio s",
        "engine s",
        "engine+encode s",
        "handler via local API s",
        "handler spread s",
        "handler's own ms",
        "own vs engine",
        "overhead vs engine",
        f"<= {GOAL:.0%}",
    ]
    print(table(headers, rows))
    print()
    print(f"reproduce: {command_line()}")


if __name__ == "__main__":
    raise SystemExit(main())
