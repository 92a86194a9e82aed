"""The GPU proof's ASR step (scripts/gpu_proof.py, step 8): what the ASR companion costs on the
proof's device, beside the F5 engine already loaded there.

- the companion's device memory: free memory (torch.cuda.mem_get_info, which sees CTranslate2's
  allocations too) before and after loading it;
- transcribing a 10 s reference (language detected, no word times);
- verify's overhead per chunk at the `balanced` preset (NFE 16): synthesising a paragraph's
  chunks against transcribing each of them with word times, as the job path verifies.

The Whisper has large-v3-turbo's shapes with random weights (f5worker/testing/tiny_whisper.py:
real compute, no download: the GPU machine reaches no hub); a dry run uses the tiny test model.
Random weights never end a transcript, so decoding runs to the token budget: an upper bound.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import PARAGRAPH

BALANCED_NFE = 16


def asr_rows(engine: Any, work_dir: Path, device: str, repeats: int, dry_run: bool) -> list[list]:
    """Rows in gpu_proof's shape: [what, variant, nfe, audio s, median s, rtf, vs, peak, note]."""
    from f5worker.asr.engine import WhisperTranscriber
    from f5worker.engine.plan import SynthesisParams
    from f5worker.job.voices import default_voice
    from f5worker.testing.tiny_whisper import LARGE_V3_TURBO, TINY, build_tiny_whisper

    shape, name = (TINY, "tiny") if dry_run else (LARGE_V3_TURBO, "turbo-shaped")
    whisper_dir = work_dir / f"whisper-{name}"
    if not (whisper_dir / "model.bin").is_file():
        build_tiny_whisper(whisper_dir, shape)
    free_before = _free_bytes(device)
    asr = WhisperTranscriber(lambda: whisper_dir, device, "auto")
    asr.load()
    memory = _gb(free_before - _free_bytes(device)) if device == "cuda" else "-"
    voice = default_voice()
    rate = engine.sample_rate
    reference = np.tile(voice.audio.samples, 10 * rate // len(voice.audio.samples) + 1)[: 10 * rate]
    params = SynthesisParams(seed=1, nfe_step=BALANCED_NFE)
    chunks: list[np.ndarray] = []

    def synthesis() -> None:
        chunks[:] = [p.samples for p in engine.synthesize_stream(PARAGRAPH, voice, params)]

    synth_s = _median(synthesis, repeats)
    ref_s = _median(lambda: asr.transcribe(reference.astype(np.float32), rate), repeats)
    verify_s = _median(
        lambda: [asr.transcribe(c, rate, language="en", words=True) for c in chunks], repeats
    )
    audio_s = sum(len(c) for c in chunks) / rate
    per_chunk_synth, per_chunk_verify = synth_s / len(chunks), verify_s / len(chunks)
    variant = f"{name} Whisper, {asr.compute_type}"
    return [
        ["asr", f"{variant}: 10 s reference", "-", 10.0, ref_s, ref_s / 10.0, "-", memory,
         f"companion's device memory {memory} GB"],
        ["asr", f"{variant}: verify per chunk", BALANCED_NFE, audio_s / len(chunks),
         per_chunk_verify, per_chunk_verify * len(chunks) / audio_s, "synthesis per chunk", "-",
         f"{per_chunk_verify / per_chunk_synth:.2f}x the chunk's synthesis "
         f"({per_chunk_synth:.3f} s; {len(chunks)} chunks)"],
    ]  # fmt: skip


def _median(fn: Any, repeats: int) -> float:
    fn()  # warm: first calls allocate
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _free_bytes(device: str) -> int:
    if device != "cuda":
        return 0
    import torch

    torch.cuda.synchronize()
    return int(torch.cuda.mem_get_info()[0])


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f}"
