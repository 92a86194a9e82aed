"""Reference voices: the default voice shipped in the f5-tts wheel, and voices sent in a request.

A voice is decoded once into memory (soundfile), trimmed and clipped as upstream does, so no
request ever writes a temp file. Pure numpy; never imports torch.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np

from audio import Audio, decode
from errors import BadRefAudio

DEFAULT_VOICE_TEXT = "Some call me nature, others call me mother nature."
MAX_REF_SECONDS = 12.0  # upstream clips references to about 12 s
MIN_REF_SECONDS = 0.3
SILENCE_DBFS = -42.0  # upstream's remove_silence_edges threshold
TAIL_SILENCE_S = 0.05  # upstream appends 50 ms of silence


@dataclass(frozen=True)
class Voice:
    audio: Audio
    text: str
    name: str = "custom"


def default_voice_path() -> Path:
    return Path(str(files("f5_tts.infer").joinpath("examples/basic/basic_ref_en.wav")))


@lru_cache(maxsize=1)
def default_voice() -> Voice:
    audio = prepare_reference(decode(default_voice_path().read_bytes()))
    return Voice(audio, DEFAULT_VOICE_TEXT, name="default")


def voice_from_base64(data: str, text: str) -> Voice:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRefAudio("ref_audio is not valid base64") from None
    return Voice(prepare_reference(decode(raw)), text)


def prepare_reference(audio: Audio) -> Audio:
    """Trim silent edges, clip to MAX_REF_SECONDS, append a short silence (as upstream)."""
    samples = _trim_silence(audio.samples, audio.sample_rate)
    if samples.size == 0:
        raise BadRefAudio("reference audio is silent")
    samples = samples[: int(MAX_REF_SECONDS * audio.sample_rate)]
    if len(samples) < MIN_REF_SECONDS * audio.sample_rate:
        raise BadRefAudio(f"reference audio is shorter than {MIN_REF_SECONDS} s of sound")
    tail = np.zeros(int(TAIL_SILENCE_S * audio.sample_rate), dtype=np.float32)
    return Audio(np.concatenate([samples, tail]).astype(np.float32), audio.sample_rate)


def _trim_silence(samples: np.ndarray, rate: int) -> np.ndarray:
    window = max(1, rate // 100)  # 10 ms, like pydub's detect_leading_silence
    n = len(samples) // window
    if n == 0:
        return samples[:0]
    frames = samples[: n * window].reshape(n, window)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    loud = np.nonzero(rms > 10 ** (SILENCE_DBFS / 20))[0]
    if loud.size == 0:
        return samples[:0]
    return samples[loud[0] * window : (loud[-1] + 1) * window]
