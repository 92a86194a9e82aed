"""Waveforms in and out: decode reference audio, cross-fade chunks, encode results.

All codecs go through soundfile (libsndfile): no ffmpeg subprocess, no temp files. Pure numpy.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from errors import BadRefAudio, UnsupportedFormat

# format -> (libsndfile container, subtype); pcm is headerless little-endian int16.
_CODECS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "pcm": ("RAW", "PCM_16"),
}
MIME_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "mp3": "audio/mpeg",
    "pcm": "audio/L16",
}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] and their rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def encode(audio: Audio, fmt: str) -> bytes:
    if fmt not in _CODECS:
        raise UnsupportedFormat(f"format must be one of {', '.join(_CODECS)}")
    if fmt == "opus" and audio.sample_rate not in OPUS_RATES:
        raise UnsupportedFormat(f"opus needs a sample rate in {OPUS_RATES}")
    container, subtype = _CODECS[fmt]
    samples = np.clip(np.nan_to_num(audio.samples, nan=0.0), -1.0, 1.0).astype(np.float32)
    buf = io.BytesIO()
    extra = {"endian": "LITTLE"} if fmt == "pcm" else {}
    sf.write(buf, samples, audio.sample_rate, format=container, subtype=subtype, **extra)
    return buf.getvalue()


def decode(data: bytes) -> Audio:
    """Decode reference audio of any container libsndfile reads; mono float32."""
    if not data:
        raise BadRefAudio("reference audio is empty")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        raise BadRefAudio("reference audio could not be decoded (WAV, FLAC, OGG or MP3)") from None
    mono = samples.mean(axis=1)
    if mono.size == 0:
        raise BadRefAudio("reference audio has no samples")
    if not np.isfinite(mono).all():
        raise BadRefAudio("reference audio contains invalid samples")
    return Audio(mono, int(rate))


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
