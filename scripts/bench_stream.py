#!/usr/bin/env python3
"""Time to first audio: `"stream": true` against the same job returned whole.

Both go through handler.Worker.run in this process (parse, voice, engine, encode, base64), on
the same model, alternating round by round so load from other processes falls on both alike.
The figure that matters to a caller is the first item's latency against the whole job's.

  .venv/bin/python scripts/bench_stream.py --repeats 5
  .venv/bin/python scripts/bench_stream.py --model full --nfe 8 --texts paragraph --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
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

log = logging.getLogger("bench_stream")


def main() -> int:
    args = _parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    from f5worker.config import Settings
    from f5worker.engine import torch_thread
    from f5worker.engine.f5tts import F5TTSEngine
    from f5worker.job.voices import default_voice
    from f5worker.startup.compose import make_worker

    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    if args.model == "full":
        model_dir = torch_thread.run(build_full_arch_model, work / "full")
    else:
        from f5worker.models.demo import build_demo_model

        model_dir = torch_thread.run(build_demo_model, work / "demo")
    engine = F5TTSEngine.load(model_dir, args.device)
    engine.warm_up(default_voice())
    worker = make_worker(engine, Settings())
    rows = []
    for name in args.texts:
        job = {"text": TEXTS[name], "nfe_step": args.nfe, "seed": 1, "format": args.format}
        chunks = len(engine.split_text(TEXTS[name], default_voice(), 1.0))
        first: list[float] = []

        def stream(job: dict[str, Any] = job, first: list[float] = first) -> list[dict]:
            start = time.perf_counter()
            items = []
            for item in worker.run({"id": "bench", "input": {**job, "stream": True}}):
                if not items:
                    first.append(time.perf_counter() - start)
                items.append(item)
            return items

        def whole(job: dict[str, Any] = job) -> list[dict]:
            return list(worker.run({"id": "bench", "input": job}))

        timings, last = interleaved({"whole": whole, "stream": stream}, args.repeats)
        audio_s = last["whole"][0]["duration_s"]
        first_median = sorted(first)[len(first) // 2]
        rows.append(
            [
                name,
                chunks,
                audio_s,
                timings["whole"].median,
                first_median,
                timings["stream"].median,
                first_median / timings["whole"].median,
            ]
        )
    print(f"model={args.model} nfe={args.nfe} format={args.format} device={args.device}")
    print(f"machine: {machine_facts()} (shared, noisy: compare ratios, not absolutes)")
    headers = ["text", "chunks", "audio s", "whole s", "first item s", "stream total s", "ratio"]
    print(table(headers, rows))
    print(f"medians of {args.repeats} interleaved runs; ratio = first item / whole job")
    print(f"reproduce: cd {REPO} && {command_line()}")
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("demo", "full"), default="demo")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--nfe", type=int, default=8)
    parser.add_argument("--format", default="pcm")
    parser.add_argument("--texts", nargs="+", choices=sorted(TEXTS), default=["paragraph", "page"])
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
