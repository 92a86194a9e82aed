#!/usr/bin/env python3
"""Which threads run torch: the engine's one torch thread against the ways it could be called.

torch's CPU operators run on OpenMP teams, one per OS thread that runs them (torch_thread.py).
Each contender is a process of its own with the demo model loaded and warmed; the parent asks
each in turn for one synthesis of a sentence (round-robin, so a busy moment falls on all alike)
and reports medians:

  main          everything on the main thread (how a script calls the engine)
  job-thread    load on the main thread, synthesize on one other thread: how a worker with
                the engine called in place would run jobs (two OpenMP teams)
  torch-thread  the engine as it is: jobs come from another thread, all torch work (f5-tts
                import, load, warm-up, synthesis) runs on its one torch thread
  ...:1         the same with OMP_NUM_THREADS=1 (no OpenMP team at all)

main and job-thread call the engine's work in place (torch_thread.run replaced by a direct
call), as it was called before torch_thread.py existed.

  .venv/bin/python scripts/bench_threads.py --repeats 10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_common import REPO, TEXTS, Timing, command_line, machine_facts, table

CONTENDERS = ("main", "job-thread", "torch-thread", "main:1", "job-thread:1")


def main() -> int:
    args = _parse_args()
    if args.child:
        return _child(args.child, args.model_dir, args.nfe)
    model_dir = args.model_dir or _demo_model()
    procs = {name: _spawn(name, model_dir, args.nfe) for name in CONTENDERS}
    runs: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    try:
        for round_ in range(args.repeats + 1):  # round 0: a new shape, not timed
            for name, proc in procs.items():
                seconds = _ask(proc)
                if round_:
                    runs[name].append(seconds)
    finally:
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=60)
    _report(args, {name: Timing(tuple(r)) for name, r in runs.items()})
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--nfe", type=int, default=16)
    parser.add_argument("--model-dir", type=Path, help="default: a fresh demo model")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    return parser.parse_args()


def _demo_model() -> Path:
    from f5worker.models.demo import build_demo_model

    return build_demo_model(Path(tempfile.mkdtemp(prefix="bench-threads-")) / "demo")


def _spawn(name: str, model_dir: Path, nfe: int) -> subprocess.Popen[str]:
    env = dict(os.environ, **({"OMP_NUM_THREADS": "1"} if name.endswith(":1") else {}))
    cmd = [sys.executable, __file__, "--child", name, "--model-dir", str(model_dir)]
    proc = subprocess.Popen(
        [*cmd, "--nfe", str(nfe)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"contender {name} failed to start")
    return proc


def _ask(proc: subprocess.Popen[str]) -> float:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def _child(name: str, model_dir: Path, nfe: int) -> int:
    """Load, then time one synthesis per line read."""
    from f5worker.engine import torch_thread

    if not name.startswith("torch-thread"):
        torch_thread.run = _in_place  # type: ignore[assignment]
    from f5worker.engine.f5tts import F5TTSEngine
    from f5worker.engine.loading import import_backend
    from f5worker.engine.plan import SynthesisParams
    from f5worker.job.voices import default_voice

    voice, params = default_voice(), SynthesisParams(seed=1, nfe_step=nfe)
    import_backend()
    engine = F5TTSEngine.load(model_dir, device="cpu")
    engine.warm_up(voice)
    jobs = ThreadPoolExecutor(max_workers=1)

    def synthesize() -> None:
        engine.synthesize(TEXTS["sentence"], voice, params)

    print("ready", flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        if name.startswith("main"):
            synthesize()
        else:
            jobs.submit(synthesize).result()
        print(time.perf_counter() - start, flush=True)
    return 0


def _in_place(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


def _report(args: argparse.Namespace, timings: dict[str, Timing]) -> None:
    base = timings["main"].median
    rows = [[name, t.median, t.spread, f"{t.median / base:.2f}x"] for name, t in timings.items()]
    facts = ", ".join(f"{k}={v}" for k, v in machine_facts().items())
    print(f"\ndemo model, sentence, NFE {args.nfe}, repeats: {args.repeats}\nmachine: {facts}\n")
    print(table(["contender", "median s", "spread s", "time vs main"], rows))
    print(f"\nreproduce: {command_line()}")


if __name__ == "__main__":
    raise SystemExit(main())
