"""The values passed between the job path and the engine: audio samples and a voice.

Pure numpy, no codecs and no torch, so the engine can take a Voice without importing the job
path's decoders or its S3 client, and the job path can hold Audio without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] and their rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Voice:
    """A prepared reference (trimmed, clipped, with its tail of silence) and its transcript."""

    audio: Audio
    text: str
    name: str = "custom"


def cross_fade(chunks: list[np.ndarray], sample_rate: int, seconds: float) -> np.ndarray:
    """Join chunks with a linear cross-fade, as upstream's infer_batch_process does."""
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    out = chunks[0]
    for nxt in chunks[1:]:
        n = min(int(seconds * sample_rate), len(out), len(nxt))
        if n <= 0:
            out = np.concatenate([out, nxt])
            continue
        fade = np.linspace(0.0, 1.0, n, dtype=np.float32)
        mixed = out[-n:] * (1.0 - fade) + nxt[:n] * fade
        out = np.concatenate([out[:-n], mixed, nxt[n:]])
    return out.astype(np.float32, copy=False)
