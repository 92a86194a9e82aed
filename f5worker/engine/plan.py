"""How the chunks of requests become transformer passes, and their waves utterances again.

F5TTSEngine (f5tts.py) runs the passes; this module holds what decides them without a model:
the settings of one utterance (SynthesisParams), the utterances of a batch job (Line), how
chunks are grouped into passes (BatchPlan, share_a_pass), how each chunk is seeded
(chunk_seed: seed + its index, so a seed fixes the whole utterance), and how the waves of
consecutive chunks are cross-faded back into pieces (Joiner). docs/benchmarks.md has the
measurements behind the defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from f5worker.audio import Audio, Voice, cross_fade
from f5worker.engine.reference_cache import ReferenceCache

if TYPE_CHECKING:
    import torch

SEED_MASK = 2**63 - 1  # torch seeds are unsigned 64-bit; stay in the positive int64 range
CPU_CONCURRENT_CHUNKS = 2  # measured on 2 cores


@dataclass(frozen=True)
class SynthesisParams:
    seed: int
    nfe_step: int = 32
    speed: float = 1.0
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
    cross_fade_duration: float = 0.15


@dataclass(frozen=True)
class BatchPlan:
    """How the chunks of one request are grouped into transformer passes.

    The plan depends only on the number of chunks, never on whether the caller streams, so
    synthesize() and synthesize_stream() always produce the same samples.

    max_batch: chunks per transformer pass; 1 is upstream's one-chunk-at-a-time order.
    first_chunk_alone: the first chunk is its own pass, so a stream's first audio costs one
        chunk's compute instead of the whole request's.
    mask_padding: mask the padding of a batch of unequal lengths out of attention, so each
        chunk comes out as it would alone (to float rounding); without it the shorter chunks
        attend to the padding, as in upstream's batched evaluation.
    batch_vocoder: one vocoder pass over the padded batch instead of one per chunk; the last
        frames of each padded chunk then differ slightly from its one-chunk result.
    concurrent: run the chunks of a group side by side in threads, each as a batch of one,
        instead of as one padded batch. Each chunk then computes exactly what it would alone.
    """

    max_batch: int = 8
    first_chunk_alone: bool = True
    mask_padding: bool = True
    batch_vocoder: bool = False
    concurrent: bool = False

    @classmethod
    def for_device(cls, device: torch.device) -> BatchPlan:
        """The measured defaults (docs/benchmarks.md). CUDA: padded batches. CPU: a padded
        batch was 2.5 times slower than one chunk at a time (masked attention there builds the
        full mask), while two chunks side by side in threads use both cores of a small machine
        better than one chunk's operators do, as upstream's thread pool shows."""
        if device.type == "cuda":
            return cls()
        return cls(max_batch=CPU_CONCURRENT_CHUNKS, concurrent=True)

    def groups(self, n_chunks: int) -> list[range]:
        if self.max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        start = 1 if self.first_chunk_alone and n_chunks > 1 else 0
        out = [range(0, start)] if start else []
        out += [
            range(i, min(i + self.max_batch, n_chunks))
            for i in range(start, n_chunks, self.max_batch)
        ]
        return out


@dataclass(frozen=True)
class Line:
    """One utterance of a batch: its voice, its text already split, its settings and seed."""

    voice: Voice
    chunks: Sequence[str]
    params: SynthesisParams


class Joiner:
    """Cross-fades consecutive chunk waveforms into pieces: each piece holds back the fade-out
    tail that the next chunk fades into, so the pieces concatenate to the whole utterance."""

    def __init__(self, count: int, sample_rate: int, seconds: float) -> None:
        self.remaining = count
        self.sample_rate = sample_rate
        self.seconds = seconds
        self.tail = np.zeros(0, dtype=np.float32)

    def add(self, wave: np.ndarray) -> Audio:
        self.remaining -= 1
        joined = cross_fade([self.tail, wave], self.sample_rate, self.seconds)
        fade = int(self.seconds * self.sample_rate)
        keep = 0 if self.remaining == 0 else min(fade, len(wave))
        self.tail = joined[len(joined) - keep :]
        return Audio(joined[: len(joined) - keep], self.sample_rate)


def chunk_seed(seed: int, index: int) -> int:
    """Chunk i of an utterance is seeded with seed + i, so a seed fixes the whole utterance."""
    return (seed + index) & SEED_MASK


def share_a_pass(lines: Sequence[Line]) -> list[list[int]]:
    """Line indexes grouped by what one pass must share: the reference (voice) and every
    setting but the seed; groups in the order they first appear."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for n, line in enumerate(lines):
        key = (ReferenceCache.key(line.voice), replace(line.params, seed=0))
        groups.setdefault(key, []).append(n)
    return list(groups.values())
