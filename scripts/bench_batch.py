#!/usr/bin/env python3
"""Batch jobs: N short lines as one `texts` job against the same N lines as N separate jobs.

Both go through Worker.run in this process (parse, voice, synthesis, encoding, base64), with
the same seed, so the outputs are the same audio (checked) and only how the work reaches the
engine differs: separate jobs run one chunk per engine pass, a batch lets the engine's plan
group the chunks of every line (side by side in threads on CPU, padded and masked batches on
CUDA). The two are timed round-robin, so load from other processes falls on both alike.

  .venv/bin/python scripts/bench_batch.py --lines 20 --nfe 16 --repeats 5
  .venv/bin/python scripts/bench_batch.py --plan padded   # the CUDA plan, on any device
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from bench_common import command_line, interleaved, machine_facts, table

from f5worker.config import Settings
from f5worker.engine.f5tts import F5TTSEngine
from f5worker.engine.plan import BatchPlan
from f5worker.models.demo import build_demo_model
from f5worker.startup.compose import make_worker

log = logging.getLogger("bench_batch")
WORDS = [
    "the",
    "boats",
    "came",
    "back",
    "early",
    "and",
    "the",
    "market",
    "filled",
    "with",
    "voices",
    "before",
    "the",
    "rain",
]


def lines(count: int) -> list[str]:
    """Short, different lines of 4 to 9 words, like an app's UI prompts or dialogue."""
    return [
        " ".join(WORDS[(i * 3) % 7 : (i * 3) % 7 + 4 + i % 6]).capitalize() + "."
        for i in range(count)
    ]


def main() -> int:
    args = _parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("f5worker").setLevel(logging.WARNING)  # no line per job
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        model_dir = build_demo_model(Path(tmp) / "demo")
        engine = F5TTSEngine.load(model_dir, device=args.device)
        if args.plan == "padded":
            engine = engine.with_plan(BatchPlan())
        worker = make_worker(engine, Settings(worker_version="bench"))
        texts = lines(args.lines)
        common = {"nfe_step": args.nfe, "seed": 1, "format": "pcm"}

        def separate() -> list[str]:
            out = []
            for text in texts:
                [item] = worker.run({"id": "one", "input": {**common, "text": text}})
                out.append(_audio(item))
            return out

        def batch() -> list[str]:
            items = list(worker.run({"id": "batch", "input": {**common, "texts": texts}}))
            return [_audio(item) for item in items]

        batch()  # warm both paths once (the reference cache, first-call allocations)
        timings, last = interleaved({"separate": separate, "batch": batch}, args.repeats)
    same = last["separate"] == last["batch"]
    base = timings["separate"].median
    rows = [
        [
            f"{args.lines} separate jobs",
            timings["separate"].median,
            timings["separate"].spread,
            "1.00x",
        ],
        [
            f"one job, texts of {args.lines}",
            timings["batch"].median,
            timings["batch"].spread,
            f"{base / timings['batch'].median:.2f}x",
        ],
    ]
    print(f"\n{command_line()}")
    print(", ".join(f"{k}={v}" for k, v in machine_facts().items()))
    print(f"plan={engine.plan}, nfe={args.nfe}, repeats={args.repeats}, same audio: {same}\n")
    print(table(["how", "median s", "spread s", "speed-up"], rows))
    return 0 if same or args.plan == "padded" else 1


def _audio(item: dict[str, Any]) -> str:
    if "audio_base64" not in item:
        raise RuntimeError(f"a job failed: {item.get('error') or item.get('item_error')}")
    return item["audio_base64"]


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--nfe", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--plan",
        choices=("device", "padded"),
        default="device",
        help="device: the engine's default plan for the device; padded: the CUDA plan",
    )
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
