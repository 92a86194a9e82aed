"""The reference of a voice, prepared once: what every chunk spoken in that voice needs.

F5TTSEngine._prepare_reference (f5tts.py) computes it (the reference's mel spectrogram on the
device, its loudness, its normalised transcript, its frame count); this module keeps the results
in a small LRU keyed by a hash of the samples, sample rate and text, so a voice used by job
after job is prepared once.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from f5worker.audio import Voice

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Reference:
    """What every chunk of a voice needs, computed once per voice."""

    mel: torch.Tensor  # (1, frames, n_mels) in the model's dtype, on the device
    rms: float
    text: str  # normalised transcript
    audio_frames: int  # reference samples // hop, upstream's frame count for durations


class ReferenceCache:
    """A small LRU of prepared references, keyed by a hash of the samples, rate and text."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int, str], Reference] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(voice: Voice) -> tuple[str, int, str]:
        digest = hashlib.blake2b(voice.audio.samples.tobytes(), digest_size=16).hexdigest()
        return digest, voice.audio.sample_rate, voice.text

    def get(self, key: tuple[str, int, str]) -> Reference | None:
        with self._lock:
            ref = self._items.get(key)
            if ref is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return ref

    def put(self, key: tuple[str, int, str], ref: Reference) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._items[key] = ref
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
