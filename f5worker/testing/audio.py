"""Audio fixtures: seeded noise and its encodings, for tests and benchmarks."""

from __future__ import annotations

import base64
import io

import numpy as np
import soundfile as sf


def noise(seconds: float, rate: int = 24000, seed: int = 0) -> np.ndarray:
    """Seeded white noise at -14 dBFS RMS: loud enough to count as sound, never clipping."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * rate)) * 0.2).astype(np.float32)


def wav_bytes(samples: np.ndarray, rate: int = 24000, fmt: str = "WAV") -> bytes:
    """samples encoded in any container libsndfile writes (WAV, FLAC, OGG, MP3)."""
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt)
    return buf.getvalue()


def wav_b64(samples: np.ndarray, rate: int = 24000) -> str:
    return base64.b64encode(wav_bytes(samples, rate)).decode()


def spoken_sentences(copies: int, gap_s: float = 0.45) -> tuple[np.ndarray, int, str]:
    """Real speech of known sentences: the default voice's sentence said `copies` times, with
    gap_s of silence between, and its transcript. Its own comma pause ("nature, others") is
    the kind a reference cut must not take for a sentence end."""
    from f5worker.job.voices import DEFAULT_VOICE_TEXT, _trim_silence, default_voice

    voice = default_voice()
    rate = voice.audio.sample_rate
    sentence = _trim_silence(voice.audio.samples, rate)
    gap = np.zeros(int(gap_s * rate), dtype=np.float32)
    parts = [p for _ in range(copies) for p in (gap, sentence)][1:]
    return np.concatenate(parts), rate, " ".join([DEFAULT_VOICE_TEXT] * copies)
