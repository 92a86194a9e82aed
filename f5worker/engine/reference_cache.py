"""The reference of a voice, prepared once: what every chunk spoken in that voice needs.

F5TTSEngine._prepare_reference (f5tts.py) computes it (the reference's mel spectrogram on the
device, its loudness, its normalised transcript, its frame count); this module keeps the results
in a small LRU keyed by a hash of the samples, sample rate and text, so a voice used by job
after job is prepared once.

Whether one call found its reference here is told to that call alone (a `Seen` callback passed
down with it, F5TTSEngine.synthesize_stream / synthesize_lines), never through a shared "last
hit" another thread could read: the result items report it as `usage.reference_cached`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from f5worker.audio import Voice

if TYPE_CHECKING:
    import torch


# Told, by the engine call that looked a voice's reference up, whether it was cached.
Seen = Callable[[bool], None]
# The same for several lines of a batch that share one lookup: (line index, was it cached).
SeenBy = Callable[[int, bool], None]


def seen_by(seen: SeenBy | None, lines: list[int]) -> Seen | None:
    """One lookup's answer told to each of the lines that share it."""
    if seen is None:
        return None
    told = seen

    def each(hit: bool) -> None:
        for n in lines:
            told(n, hit)

    return each


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

    def get(self, key: tuple[str, int, str], seen: Seen | None = None) -> Reference | None:
        """The cached reference or None; `seen`, if given, is told which (for its call only)."""
        with self._lock:
            ref = self._items.get(key)
            if ref is None:
                self.misses += 1
            else:
                self._items.move_to_end(key)
                self.hits += 1
        if seen is not None:
            seen(ref is not None)
        return ref

    def put(self, key: tuple[str, int, str], ref: Reference) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._items[key] = ref
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
