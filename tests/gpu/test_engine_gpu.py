"""The engine on a CUDA device: upstream's fp16 choice, bf16, batching, flash-attn, compile.

Run wherever a GPU is available (`.venv/bin/python -m pytest tests/gpu -q`); the figures
themselves come from `scripts/bench_infer.py --device cuda` (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from f5worker.engine.f5tts import F5TTSEngine
from f5worker.engine.plan import BatchPlan, SynthesisParams
from f5worker.job.voices import default_voice

PARAMS = SynthesisParams(seed=3, nfe_step=4)
PAGE = " ".join(["A GPU speaks this page in several chunks of speech."] * 8)
BACKENDS = ["torch"] + (["flash_attn"] if importlib.util.find_spec("flash_attn") else [])


def test_default_is_fp16_and_batched_on_cuda(gpu_engine):
    major, _ = torch.cuda.get_device_capability()
    expected = torch.float16 if major >= 7 else torch.float32
    assert next(gpu_engine.model.parameters()).dtype == expected
    assert gpu_engine.device.type == "cuda"
    assert gpu_engine.plan == BatchPlan(), "GPU default: padded batches, first chunk alone"


def test_same_seed_same_samples_and_stream_matches(gpu_engine):
    voice = default_voice()
    a = gpu_engine.synthesize(PAGE, voice, PARAMS)
    b = gpu_engine.synthesize(PAGE, voice, PARAMS)
    pieces = list(gpu_engine.synthesize_stream(PAGE, voice, PARAMS))
    assert np.isfinite(a.samples).all()
    assert np.array_equal(a.samples, b.samples)
    assert np.array_equal(np.concatenate([p.samples for p in pieces]), a.samples)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_matches_chunk_by_chunk(demo_model_dir: Path, backend: str):
    """Masked padding: a batch changes only rounding (fp16 rounding here)."""
    voice, text = default_voice(), PAGE + " A short end."
    batched = F5TTSEngine.load(demo_model_dir, device="cuda", attn_backend=backend)
    one_by_one = batched.with_plan(BatchPlan(max_batch=1))
    a = batched.synthesize(text, voice, PARAMS).samples
    b = one_by_one.synthesize(text, voice, PARAMS).samples
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 2e-2 * np.abs(b).max()


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_other_dtypes_run(demo_model_dir: Path, dtype: str):
    eng = F5TTSEngine.load(demo_model_dir, device="cuda", dtype=dtype)
    assert next(eng.model.parameters()).dtype == getattr(torch, dtype)
    audio = eng.synthesize("Another precision.", default_voice(), PARAMS)
    assert np.isfinite(audio.samples).all() and audio.duration_s > 0.5


def test_compiled_engine_matches_eager(demo_model_dir: Path, gpu_engine):
    compiled = F5TTSEngine.load(demo_model_dir, device="cuda", compile=True)
    assert compiled.warm_up(default_voice()) > 0
    text = "Compiled once, at warm-up."
    a = compiled.synthesize(text, default_voice(), PARAMS).samples
    b = gpu_engine.synthesize(text, default_voice(), PARAMS).samples
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 2e-2 * np.abs(b).max()


def test_sampling_loop_never_waits_for_the_device(gpu_engine, monkeypatch):
    """Every length is known on the host before the Euler loop starts, so the loop only queues
    work; torch raises on any synchronising call in this mode."""
    loop = gpu_engine._euler
    calls = []

    def checked(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return loop(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            calls.append(1)

    monkeypatch.setattr(gpu_engine, "_euler", checked)
    audio = gpu_engine.synthesize("No syncs in here.", default_voice(), PARAMS)
    assert calls == [1] and np.isfinite(audio.samples).all()
