#!/usr/bin/env python3
"""Quality presets benchmark: steps (32 / 16 / 7) and reference length (12 s / trimmed), one run.

One engine, one short text, one reference voice: real speech (the default voice's sentence said
twice, with a pause between: 12.0 s), and the same voice as `quality: fast` keeps it (cut at the
sentence end: about 5 s, ref_trim.py). Variants run round-robin, so load from other processes
falls on all of them alike; the table shows medians of wall and CPU seconds, and RTF (CPU
seconds per second of audio) and ratios against `best` and against `fast` without trimming from
CPU seconds, which other processes on a shared machine do not inflate (with --threads 1 they
are the compute itself), all measured in this run. A
second table shows what each way of shortening the reference does to the output's pace
(seconds of audio per character, from upstream's duration rule), without running the model.

  # F5TTS_v1_Base's architecture with random weights (built once into --work-dir), CPU
  .venv/bin/python scripts/bench_quality.py --model full --repeats 2
  # the demo model: a quick check of the script
  .venv/bin/python scripts/bench_quality.py --model demo --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_common import (
    Timing,
    build_full_arch_model,
    command_line,
    machine_facts,
    peak_rss_gb,
    table,
)

from f5worker.engine import torch_thread

log = logging.getLogger("bench_quality")

SHORT_TEXT = "The quick brown fox jumps over the lazy dog."
# The gap that makes two of the default voice's sentences 12.0 s with the 50 ms tail.
TWELVE_S_GAP = 2.09
NATURAL_GAP = 0.45


@dataclass(frozen=True)
class Variant:
    name: str
    nfe_step: int
    trimmed: bool  # the reference as `fast` keeps it, else the whole 12 s


VARIANTS = {
    "best": Variant("best", 32, False),
    "balanced": Variant("balanced", 16, False),
    "fast-untrimmed": Variant("fast-untrimmed", 7, False),
    "fast": Variant("fast", 7, True),
    "best-trimmed": Variant("best-trimmed", 32, True),
}


def main() -> int:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("f5_tts", "f5worker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from f5worker.engine.f5tts import F5TTSEngine

    model_dir = torch_thread.run(_model_dir, args)
    if args.threads:
        import torch

        torch_thread.run(torch.set_num_threads, args.threads)
    start = time.perf_counter()
    engine = F5TTSEngine.load(model_dir, args.device, dtype=args.dtype)
    load_s = time.perf_counter() - start
    voices = references(TWELVE_S_GAP)
    engine.warm_up(voices[False])
    rows, rounds = _measure(engine, voices, args)
    _report(args, model_dir, load_s, rounds, rows, _pace_rows(engine, args.text))
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("demo", "full"), default="full")
    parser.add_argument("--model-dir", type=Path, help="an existing model directory instead")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "f5bench")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "float16", "bfloat16", "float32")
    )
    parser.add_argument(
        "--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS)[:4]
    )
    parser.add_argument("--text", default=SHORT_TEXT)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, help="no new round after this long")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    return parser.parse_args()


def _model_dir(args: argparse.Namespace) -> Path:
    if args.model_dir:
        return args.model_dir
    if args.model == "full":
        return build_full_arch_model(args.work_dir / "full")
    from f5worker.models.demo import build_demo_model

    return build_demo_model(args.work_dir / "demo")


def references(gap_s: float) -> dict[bool, Any]:
    """{False: the whole reference, True: as `fast` keeps it}, prepared as a job's would be."""
    from f5worker.audio import Audio
    from f5worker.job.voices import fit_voice, prepare_voice
    from f5worker.presets import PRESETS
    from f5worker.testing.audio import spoken_sentences

    samples, rate, text = spoken_sentences(2, gap_s=gap_s)
    whole = prepare_voice(Audio(samples, rate), text, name="two-sentences")
    trimmed = fit_voice(whole, PRESETS["fast"].max_ref_seconds)
    assert trimmed is not whole, "the reference was not trimmed"
    return {False: whole, True: trimmed}


def _measure(
    engine: Any, voices: dict[bool, Any], args: argparse.Namespace
) -> tuple[list[list[Any]], int]:
    from f5worker.engine.plan import SynthesisParams

    variants = [VARIANTS[name] for name in args.variants]
    audio: dict[str, Any] = {}

    def runner(v: Variant) -> Callable[[], None]:
        params = SynthesisParams(seed=args.seed, nfe_step=v.nfe_step)

        def run() -> None:
            audio[v.name] = engine.synthesize(args.text, voices[v.trimmed], params)

        return run

    timings = _rounds({v.name: runner(v) for v in variants}, args.repeats, args.max_minutes)
    # Ratios from CPU seconds: the work each variant costs, which other processes sharing the
    # cores do not change (wall time is shown beside it).
    cpu = {name: pair[1].median for name, pair in timings.items()}
    best, untrimmed = cpu.get("best"), cpu.get("fast-untrimmed")
    rows = []
    for v in variants:
        (wall, _), out = timings[v.name], audio[v.name]
        rows.append(
            [
                v.name,
                v.nfe_step,
                round(voices[v.trimmed].audio.duration_s, 2),
                round(out.duration_s, 2),
                f"{out.duration_s / len(args.text) * 1000:.1f}",
                wall.median,
                wall.spread,
                cpu[v.name],
                cpu[v.name] / out.duration_s,
                f"{best / cpu[v.name]:.2f}x" if best else "-",
                f"{untrimmed / cpu[v.name]:.2f}x" if untrimmed and v.nfe_step == 7 else "-",
            ]
        )
    return rows, len(timings[variants[0].name][0].runs)


def _rounds(
    fns: dict[str, Callable[[], None]], repeats: int, max_minutes: float | None
) -> dict[str, tuple[Timing, Timing]]:
    """bench_common.interleaved, logging every run, and ending after the round in which
    max_minutes pass: on a shared 2-core machine one round of the full architecture can take
    most of an hour, and a table of fewer rounds (the report says how many) beats none."""
    runs: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for round_no in range(1, repeats + 1):
        for name, fn in fns.items():
            began, began_cpu = time.perf_counter(), time.process_time()
            fn()
            runs[name].append(time.perf_counter() - began)
            cpu[name].append(time.process_time() - began_cpu)
            log.info(
                "round %d/%d: %s took %.1f s (%.1f CPU s)",
                round_no,
                repeats,
                name,
                runs[name][-1],
                cpu[name][-1],
            )
        if max_minutes is not None and time.perf_counter() - start > max_minutes * 60:
            if round_no < repeats:
                log.warning("stopping after %d of %d rounds (--max-minutes)", round_no, repeats)
            break
    return {name: (Timing(tuple(runs[name])), Timing(tuple(cpu[name]))) for name in fns}


def _pace_rows(engine: Any, text: str) -> list[list[Any]]:
    """Output seconds per character for each way of shortening a reference (no model run)."""
    from f5worker.audio import Audio, Voice

    rows = []
    for gap in (TWELVE_S_GAP, NATURAL_GAP):
        voices = references(gap)
        whole, trimmed = voices[False], voices[True]
        rate = whole.audio.sample_rate
        keep = len(trimmed.audio.samples)
        clipped = Voice(Audio(whole.audio.samples[:keep], rate), whole.text, "clipped")
        base = engine.estimate_seconds([text], whole, 1.0)
        for name, voice in (
            ("whole", whole),
            ("cut at the sentence end, text cut too (ours)", trimmed),
            ("clipped to the same length, whole text (upstream's way)", clipped),
        ):
            seconds = engine.estimate_seconds([text], voice, 1.0)
            rows.append(
                [
                    f"{gap:.2f}",
                    name,
                    round(voice.audio.duration_s, 2),
                    f"{seconds / len(text) * 1000:.1f}",
                    f"{seconds / base - 1:+.0%}",
                ]
            )
    return rows


def _report(
    args: argparse.Namespace,
    model_dir: Path,
    load_s: float,
    rounds: int,
    rows: list[list[Any]],
    pace: list[list[Any]],
) -> None:
    facts = machine_facts()
    print()
    print(f"model: {args.model} ({model_dir}), device: {args.device}, dtype: {args.dtype}")
    print(f"text: {args.text!r} ({len(args.text)} chars), rounds: {rounds} of {args.repeats}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    print(f"load s: {load_s:.1f}, peak RSS: {peak_rss_gb():.2f} GB")
    print()
    headers = [
        "variant",
        "NFE",
        "reference s",
        "audio s",
        "ms audio/char",
        "median s",
        "spread s",
        "median CPU s",
        "RTF (CPU s)",
        "speed vs best",
        "trimming (vs fast-untrimmed)",
    ]
    print(table(headers, rows))
    print()
    headers = ["gap s", "reference", "seconds", "ms audio/char", "vs whole"]
    print(table(headers, pace))
    print()
    print(f"reproduce: {command_line()}")


if __name__ == "__main__":
    raise SystemExit(main())
