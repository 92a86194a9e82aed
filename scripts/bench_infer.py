#!/usr/bin/env python3
"""Inference benchmark: this worker's engine against upstream's f5_tts.api.F5TTS.infer.

Both load the same model directory and speak the same texts (a sentence, a paragraph, a page)
with the same reference voice, NFE and device. Runs alternate between the contenders so load
from other processes falls on all of them alike; the table shows medians, RTF (compute seconds
per second of audio) and the ratio against upstream measured in the same run.

  # the demo model (built into a temp dir), CPU
  .venv/bin/python scripts/bench_infer.py --model demo --nfe 16 32 --repeats 5
  # F5TTS_v1_Base's architecture with random weights (built once into --work-dir), CPU
  .venv/bin/python scripts/bench_infer.py --model full --nfe 4 --texts sentence paragraph
  # on a GPU machine: fp16 vs fp32, batched vs sequential chunks, peak GPU memory
  .venv/bin/python scripts/bench_infer.py --model full --device cuda --nfe 16 32 \\
      --variants upstream ours ours:float32 ours-seq ours-all-batched

Variants: `upstream`; `ours` (the device's default plan); `ours-seq` (one chunk per pass);
`ours-threads` (first chunk alone, then two chunks at a time side by side in threads, each
alone: the CPU default); `ours-all-batched` (every chunk in one padded pass);
`ours-first-alone` (first chunk alone, the rest in one padded pass: the CUDA default);
`ours-unmasked` (as all-batched, padding not masked); `ours-batch-vocoder` (as all-batched,
one vocoder pass); `ours-compiled` (torch.compile).
A `:dtype` suffix (float16, bfloat16, float32) picks the engine's dtype; the default is
upstream's choice (float16 on CUDA, float32 on CPU).

Upstream's F5TTS.__init__ builds its network from the packaged config of the model's name; the
demo model has no packaged config, so for it the F5TTS object is assembled without __init__
from upstream's own load_model / load_vocoder, with the attributes infer() reads.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import (
    TEXTS,
    build_full_arch_model,
    command_line,
    interleaved,
    machine_facts,
    peak_rss_gb,
    table,
)

from f5worker.engine import torch_thread

log = logging.getLogger("bench_infer")

PLANS: dict[str, dict[str, Any] | None] = {
    "ours": None,  # the device's default
    "ours-seq": {"max_batch": 1},
    "ours-threads": {"max_batch": 2, "concurrent": True},
    "ours-all-batched": {"max_batch": 8, "first_chunk_alone": False},
    "ours-first-alone": {"max_batch": 8, "first_chunk_alone": True},
    "ours-unmasked": {"max_batch": 8, "first_chunk_alone": False, "mask_padding": False},
    "ours-batch-vocoder": {"max_batch": 8, "first_chunk_alone": False, "batch_vocoder": True},
    "ours-compiled": None,
}


@dataclass(frozen=True)
class Result:
    samples: Any  # np.ndarray
    sample_rate: int
    first_audio_s: float | None  # streaming variants: time to the first piece

    @property
    def audio_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass
class Contender:
    """One variant, loaded (and warmed up) once; run(text, nfe, seed) speaks a text."""

    name: str
    run: Callable[[str, int, int], Result]
    load_s: float
    peak_gpu_gb: list[float] = field(default_factory=list)


def main() -> int:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("f5_tts", "engine", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Built on the torch thread, so that this process's torch work all runs on one thread
    # (torch_thread.py): the engine's, upstream's, and the model builder's.
    model_dir = torch_thread.run(_model_dir, args)
    engines: dict[tuple[str, bool], Any] = {}  # variants with one dtype share one model
    contenders = _load_contenders(args, model_dir, engines)
    rows = _measure(args, contenders)
    _report(args, model_dir, contenders, rows)
    if engines:
        print(_reference_cache_row(next(iter(engines.values()))))
    return 0


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("demo", "full"), default="demo")
    parser.add_argument("--model-dir", type=Path, help="an existing model directory instead")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "f5bench")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--nfe", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--texts", nargs="+", choices=tuple(TEXTS), default=list(TEXTS))
    parser.add_argument("--variants", nargs="+", default=["upstream", "ours"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    for variant in args.variants:
        name, _, dtype = variant.partition(":")
        if name != "upstream" and name not in PLANS:
            parser.error(f"unknown variant {variant!r}")
        if dtype and dtype not in ("float16", "bfloat16", "float32"):
            parser.error(f"unknown dtype in {variant!r}")
    return args


def _model_dir(args: argparse.Namespace) -> Path:
    if args.model_dir:
        return args.model_dir
    if args.model == "full":
        return build_full_arch_model(args.work_dir / "full")
    from f5worker.models.demo import build_demo_model

    return build_demo_model(args.work_dir / "demo")


def _load_contenders(
    args: argparse.Namespace, model_dir: Path, engines: dict[tuple[str, bool], Any]
) -> list[Contender]:
    import torch

    if args.threads:
        torch_thread.run(torch.set_num_threads, args.threads)  # per OS thread in OpenMP
    out = []
    for variant in args.variants:
        start = time.perf_counter()
        if variant == "upstream":
            run = _upstream(model_dir, args.device)
        else:
            run = _ours(variant, model_dir, args.device, engines)
        out.append(Contender(variant, run, time.perf_counter() - start))
    return out


def _upstream(model_dir: Path, device: str) -> Callable[[str, int, int], Result]:
    from f5_tts.api import F5TTS

    from f5worker.job.voices import DEFAULT_VOICE_TEXT, default_voice_path
    from f5worker.models.spec import ModelSpec

    spec = ModelSpec.load(model_dir)

    def build() -> Any:
        with contextlib.redirect_stdout(io.StringIO()):  # upstream prints while loading
            if not _has_packaged_config(spec.name):
                return _assemble_upstream(model_dir, spec, device)
            return F5TTS(
                model=spec.name,
                ckpt_file=str(model_dir / spec.checkpoint),
                vocab_file=str(model_dir / spec.vocab),
                vocoder_local_path=str(model_dir / spec.vocoder_dir),
                device=device,
            )

    tts = torch_thread.run(build)
    ref_file = str(default_voice_path())

    def infer(text: str, nfe: int, seed: int) -> Result:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the text and chunks
            wav, rate, _ = tts.infer(
                ref_file,
                DEFAULT_VOICE_TEXT,
                text,
                nfe_step=nfe,
                seed=seed,
                show_info=lambda *_: None,
                progress=None,
            )
        return Result(wav, rate, None)

    def run(text: str, nfe: int, seed: int) -> Result:
        # Called from the torch thread, as the engine's work is: upstream's infer() still
        # moves each chunk to a thread of its own, as it does in a server.
        return torch_thread.run(infer, text, nfe, seed)

    # The same one-off work as the engine's warm-up: first inference, reference preprocessing.
    run("Warm up.", 2, 0)
    return run


def _has_packaged_config(name: str) -> bool:
    from importlib.resources import files

    return files("f5_tts").joinpath(f"configs/{name}.yaml").is_file()


def _assemble_upstream(model_dir: Path, spec: Any, device: str) -> Any:
    """An F5TTS object for a model without a packaged config, built from the same upstream
    functions F5TTS.__init__ calls, with the attributes infer() reads."""
    import f5_tts.model
    from f5_tts.api import F5TTS
    from f5_tts.infer.utils_infer import load_model, load_vocoder

    tts = F5TTS.__new__(F5TTS)
    tts.mel_spec_type = spec.mel_spec["mel_spec_type"]
    tts.target_sample_rate = spec.mel_spec["target_sample_rate"]
    tts.ode_method, tts.use_ema, tts.device = "euler", True, device
    tts.vocoder = load_vocoder("vocos", True, str(model_dir / spec.vocoder_dir), device)
    tts.ema_model = load_model(
        getattr(f5_tts.model, spec.backbone),
        dict(spec.arch),
        str(model_dir / spec.checkpoint),
        tts.mel_spec_type,
        str(model_dir / spec.vocab),
        tts.ode_method,
        tts.use_ema,
        device,
    )
    return tts


def _ours(
    variant: str, model_dir: Path, device: str, engines: dict[tuple[str, bool], Any]
) -> Callable[[str, int, int], Result]:
    from f5worker.engine.f5tts import F5TTSEngine
    from f5worker.engine.plan import BatchPlan, SynthesisParams
    from f5worker.job.voices import default_voice

    name, _, dtype = variant.partition(":")
    compiled = name == "ours-compiled"
    key = (dtype or "auto", compiled)
    if key not in engines:
        engines[key] = F5TTSEngine.load(model_dir, device, dtype=dtype or "auto", compile=compiled)
    base = engines[key]
    plan_args = PLANS[name]
    plan = BatchPlan(**plan_args) if plan_args is not None else base.plan
    eng = base.with_plan(plan)
    voice = default_voice()
    log.info("%s: plan %s, warm-up %.1f s", variant, plan, eng.warm_up(voice))

    def run(text: str, nfe: int, seed: int) -> Result:
        start = time.perf_counter()
        first = None
        pieces = []
        for piece in eng.synthesize_stream(text, voice, SynthesisParams(seed=seed, nfe_step=nfe)):
            first = time.perf_counter() - start if first is None else first
            pieces.append(piece.samples)
        assert first is not None
        return Result(np.concatenate(pieces), eng.sample_rate, first)

    return run


def _measure(args: argparse.Namespace, contenders: list[Contender]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for nfe in args.nfe:
        for text_name in args.texts:
            log.info(
                "NFE %d, %s: %d rounds of %d variants",
                nfe,
                text_name,
                args.repeats,
                len(contenders),
            )
            rows += _measure_case(args, contenders, text_name, nfe)
    return rows


def _measure_case(
    args: argparse.Namespace, contenders: list[Contender], text_name: str, nfe: int
) -> list[list[Any]]:
    import torch

    cuda = args.device == "cuda"
    results: dict[str, list[Result]] = {c.name: [] for c in contenders}

    def call(c: Contender) -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        results[c.name].append(c.run(TEXTS[text_name], nfe, args.seed))
        if cuda:
            torch.cuda.synchronize()
            c.peak_gpu_gb.append(torch.cuda.max_memory_allocated() / 1024**3)

    timings, _ = interleaved({c.name: (lambda c=c: call(c)) for c in contenders}, args.repeats)
    base = timings["upstream"].median if "upstream" in timings else None
    rows = []
    reference = results["ours-seq"][-1].samples if "ours-seq" in results else None
    for c in contenders:
        last = results[c.name][-1]
        firsts = [r.first_audio_s for r in results[c.name] if r.first_audio_s is not None]
        t = timings[c.name]
        rows.append(
            [
                text_name,
                nfe,
                c.name,
                round(last.audio_s, 2),
                t.median,
                t.spread,
                t.median / last.audio_s,
                f"{base / t.median:.2f}x" if base else "-",
                f"{statistics.median(firsts):.3f}" if firsts else "-",
                _relative_difference(last.samples, reference),
                f"{max(c.peak_gpu_gb):.2f}" if c.peak_gpu_gb else "-",
            ]
        )
    return rows


def _relative_difference(samples: Any, reference: Any) -> str:
    """RMS of the difference over RMS of the reference (ours-seq, one chunk per pass): how far a
    batching plan moves the audio. '-' where there is no reference or the lengths differ."""
    if reference is None or samples.shape != reference.shape:
        return "-"
    rms = float(np.sqrt(np.mean(np.square(reference, dtype=np.float64))))
    diff = float(np.sqrt(np.mean(np.square(samples - reference, dtype=np.float64))))
    return f"{diff / rms:.1e}" if rms > 0 else "-"


def _reference_cache_row(engine: Any) -> str:
    """Per-voice reference preparation (resample, loudness, mel) against a cache hit."""
    from f5worker.job.voices import default_voice

    voice = default_voice()
    timings, _ = interleaved(
        {
            "prepare": lambda: engine._prepare_reference(voice),  # the cache-miss path
            "cached": lambda: engine._reference(voice),
        },
        20,
    )
    return (
        f"reference preparation: {timings['prepare'].median * 1e3:.2f} ms uncached, "
        f"{timings['cached'].median * 1e3:.2f} ms from the per-voice cache (median of 20)"
    )


def _report(
    args: argparse.Namespace, model_dir: Path, contenders: list[Contender], rows: list[list[Any]]
) -> None:
    facts = machine_facts()
    print()
    print(f"model: {args.model} ({model_dir}), device: {args.device}, repeats: {args.repeats}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    print("load s: " + ", ".join(f"{c.name}={c.load_s:.1f}" for c in contenders))
    print(f"peak RSS: {peak_rss_gb():.2f} GB")
    print()
    headers = [
        "text",
        "NFE",
        "variant",
        "audio s",
        "median s",
        "spread s",
        "RTF",
        "speed vs upstream",
        "first audio s",
        "diff vs ours-seq",
        "peak GPU GB",
    ]
    print(table(headers, rows))
    print()
    print(f"reproduce: {command_line()}")


if __name__ == "__main__":
    raise SystemExit(main())
