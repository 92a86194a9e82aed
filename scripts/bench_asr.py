#!/usr/bin/env python3
"""ASR companion benchmark: what transcribing a reference and verifying a paragraph cost, as
ratios against synthesising that paragraph on the full F5 architecture in the same run.

Rows, each a median of --repeats runs, interleaved so other processes' load falls on all alike:
  synthesis      the paragraph (its chunks, at --nfe) on F5TTS_v1_Base's architecture (random
                 weights, scripts/bench_common.py), the denominator of every ratio
  ref 10 s       transcribing a 10 s reference (language detected, no word times)
  verify         transcribing each of the paragraph's synthesised chunks, with word times
for each ASR model: `tiny` (the test model, f5worker/testing/tiny_whisper.py) and `turbo`
(large-v3-turbo's shape: 32 encoder and 4 decoder layers, d_model 1280, 128 mels; random
weights, real compute). Random weights never end a transcript on their own, so decoding runs to
the budget (12 tokens per second of audio): `turbo` is the worst case; `turbo speech-like` caps
the budget at 3 tokens per second, about what English speech decodes to.

  .venv/bin/python scripts/bench_asr.py --repeats 3
  .venv/bin/python scripts/bench_asr.py --models tiny --nfe 8      # quick
  .venv/bin/python scripts/bench_asr.py --device cuda              # on a GPU
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import (
    PARAGRAPH,
    build_full_arch_model,
    command_line,
    interleaved,
    machine_facts,
    peak_rss_gb,
    table,
)

from f5worker.engine import torch_thread

log = logging.getLogger("bench_asr")

SPEECH_LIKE_TOKENS_PER_S = 3.0


def main() -> int:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("f5_tts", "f5worker", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from f5worker.asr.engine import WhisperTranscriber
    from f5worker.engine.f5tts import F5TTSEngine
    from f5worker.engine.plan import SynthesisParams
    from f5worker.job.voices import default_voice

    model_dir = torch_thread.run(build_full_arch_model, args.work_dir / "full")
    engine = F5TTSEngine.load(model_dir, args.device)
    voice = default_voice()
    engine.warm_up(voice)
    params = SynthesisParams(seed=1, nfe_step=args.nfe)
    reference = _ten_seconds(voice.audio.samples, engine.sample_rate)
    chunks: list[np.ndarray] = []  # the paragraph's, from the first synthesis round

    asrs: dict[str, Any] = {}
    load_s: dict[str, float] = {}
    for name in args.models:
        started = time.perf_counter()
        whisper_dir = _whisper_dir(name, args.work_dir)
        build_s = time.perf_counter() - started
        for label, rate in _variants(name):
            asr = WhisperTranscriber(
                lambda d=whisper_dir: d, args.device, args.compute_type, tokens_per_s=rate
            )
            started = time.perf_counter()
            asr.load()
            load_s[label] = time.perf_counter() - started
            log.info("%s: built in %.1f s, loaded in %.1f s", label, build_s, load_s[label])
            asrs[label] = asr

    def synthesis() -> None:
        pieces = [a.samples for a in engine.synthesize_stream(PARAGRAPH, voice, params)]
        chunks[:] = chunks or pieces

    fns: dict[str, Any] = {"synthesis": synthesis}  # first in each round: verify needs chunks
    for label, asr in asrs.items():
        fns[f"{label}: ref 10 s"] = lambda a=asr: a.transcribe(reference, engine.sample_rate)
        fns[f"{label}: verify"] = lambda a=asr: [
            a.transcribe(c, engine.sample_rate, language="en", words=True) for c in chunks
        ]
    timings, _ = interleaved(fns, args.repeats)
    base = timings["synthesis"].median
    audio_s = sum(len(c) for c in chunks) / engine.sample_rate
    rows = [
        [name, f"{t.median:.2f}", f"{t.spread:.2f}", f"{t.median / base:.3f}"]
        for name, t in timings.items()
    ]
    print(
        f"\nparagraph: {len(chunks)} chunks, {audio_s:.1f} s of audio at nfe {args.nfe}; "
        f"device {args.device}, ASR compute type {next(iter(asrs.values())).compute_type}"
    )
    print(table(["what", "median s", "spread s", "x synthesis"], rows))
    print("\nASR load s: " + ", ".join(f"{k} {v:.1f}" for k, v in load_s.items()))
    print(f"peak RSS: {peak_rss_gb():.1f} GB")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine_facts().items()))
    print(f"command: {command_line()}")
    return 0


def _variants(name: str) -> list[tuple[str, float]]:
    from f5worker.asr.engine import TOKENS_PER_S

    if name == "turbo":
        return [("turbo", TOKENS_PER_S), ("turbo speech-like", SPEECH_LIKE_TOKENS_PER_S)]
    return [(name, TOKENS_PER_S)]


def _whisper_dir(name: str, work_dir: Path) -> Path:
    """The random-weight Whisper of that shape, built once into work_dir."""
    from f5worker.testing.tiny_whisper import LARGE_V3_TURBO, TINY, build_tiny_whisper

    out = work_dir / f"whisper-{name}"
    if not (out / "model.bin").is_file():
        build_tiny_whisper(out, LARGE_V3_TURBO if name == "turbo" else TINY)
    return out


def _ten_seconds(samples: np.ndarray, rate: int) -> np.ndarray:
    """The default voice repeated to 10 s: speech, as a reference is."""
    need = 10 * rate
    return np.tile(samples, need // len(samples) + 1)[:need].astype(np.float32)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=("tiny", "turbo"), default=["tiny", "turbo"])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--compute-type", default="auto")
    parser.add_argument("--nfe", type=int, default=16, help="16: the balanced preset")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "f5bench")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(main())
