"""The one tail every delivered sound goes through after synthesis: pauses -> output rate.

A whole utterance (one result item, a batch entry), a queue stream's items and an HTTP stream's
encoded chunks all shape their audio here, so `remove_silence` and `sample_rate` mean the same
thing on every path. Encoding follows, per transport: a whole file per item (codecs.encode) or
one continuous stream (stream_codecs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from f5worker.audio import Audio
from f5worker.job.codecs import StreamResampler, pause_mask, resample


@dataclass(frozen=True)
class Shaped:
    """Audio ready to encode, and what captions need to map times through the shaping."""

    audio: Audio  # at the output rate
    keep: np.ndarray | None  # which of the model's samples pause shortening kept (None: all)
    kept: int  # how many it kept, at the model's rate


class Shaper:
    """Shapes one utterance's audio: whole (one call), or streamed piece by piece in order, the
    shaped pieces then concatenating to one continuous signal (the resampler keeps its state
    across them; pauses are shortened within each piece, as each is delivered on its own)."""

    def __init__(
        self, model_rate: int, out_rate: int | None, remove_silence: bool, streamed: bool
    ) -> None:
        self.out_rate = out_rate or model_rate
        self.remove_silence = remove_silence
        self._stream = StreamResampler(model_rate, self.out_rate) if streamed else None

    def __call__(self, audio: Audio, last: bool = True) -> Shaped:
        keep = pause_mask(audio) if self.remove_silence else None
        if keep is not None:
            audio = Audio(audio.samples[keep], audio.sample_rate)
        kept = len(audio.samples)
        if self._stream is None:
            return Shaped(resample(audio, self.out_rate), keep, kept)
        return Shaped(self._stream(audio, last=last), keep, kept)
