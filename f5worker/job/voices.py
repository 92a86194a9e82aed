"""Reference voices: the default voice shipped in the f5-tts wheel, the voice library in S3, and
voices sent with a request. Pure numpy and boto3; never imports torch.

A voice is decoded once into memory (soundfile), trimmed, and clipped to 12 s at a sentence end
that its transcript and its pauses agree on (ref_trim.py; else as upstream does), so no
request ever writes a temp file (upstream's preprocess_ref_audio_text keeps one per reference and
never deletes it). Library voices live at `<S3_PREFIX>/voices/<name>/ref.wav` + `ref.txt` and are
kept in a bounded LRU after first use; the bound is in entries, and an entry is at most 12 s of
audio (about 2.3 MB at 48 kHz), so the cache is at most MAX_CACHED_VOICES * 2.3 MB.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from f5worker.audio import Audio, Voice
from f5worker.errors import BadRefAudio, StorageError, VoiceNotFound
from f5worker.job.codecs import decode
from f5worker.job.ref_trim import cut_at_sentence, find_pauses
from f5worker.presets import REF_SECONDS_FULL
from f5worker.s3 import ObjectMissing, read_object

log = logging.getLogger(__name__)

DEFAULT_VOICE_NAME = "default"
DEFAULT_VOICE_TEXT = "Some call me nature, others call me mother nature."
MAX_REF_SECONDS = REF_SECONDS_FULL  # upstream clips references to about 12 s
MIN_CLIP_SECONDS = 6.0  # upstream's clip at a pause keeps more than 6 s
MIN_REF_SECONDS = 0.3
SILENCE_DBFS = -42.0  # upstream's remove_silence_edges threshold
TAIL_SILENCE_S = 0.05  # upstream appends 50 ms of silence
MAX_REF_BYTES = 10 * 1024 * 1024  # encoded reference audio, from any source
MAX_REF_TEXT_BYTES = 4096
MAX_CACHED_VOICES = 32


def default_voice_path() -> Path:
    return Path(str(files("f5_tts.infer").joinpath("examples/basic/basic_ref_en.wav")))


@lru_cache(maxsize=1)
def default_voice() -> Voice:
    audio = prepare_reference(decode(default_voice_path().read_bytes()))
    return Voice(audio, DEFAULT_VOICE_TEXT, name=DEFAULT_VOICE_NAME)


def voice_from_bytes(data: bytes, text: str, name: str = "custom") -> Voice:
    """Decode, check and prepare a reference; BAD_REF_AUDIO when it is not usable audio."""
    if len(data) > MAX_REF_BYTES:
        raise BadRefAudio(f"reference audio is larger than {MAX_REF_BYTES} bytes")
    return prepare_voice(decode(data), text, name)


def prepare_voice(audio: Audio, text: str, name: str = "custom") -> Voice:
    """A reference and its transcript, at most MAX_REF_SECONDS of sound.

    A longer one is cut where its transcript and its pauses agree on a sentence end, so clip
    and text still match (ref_trim.py). Failing that, upstream's way: at the latest pause
    between MIN_CLIP_SECONDS and MAX_REF_SECONDS, else at MAX_REF_SECONDS, with the whole
    transcript (which then says more than the clip holds).
    """
    rate = audio.sample_rate
    samples = _sound(audio)
    if len(samples) > MAX_REF_SECONDS * rate:
        cut = cut_at_sentence(samples, rate, text, MAX_REF_SECONDS)
        if cut is not None:
            samples, text = _trim_silence(cut[0], rate), cut[1]
            log.debug("reference cut at a sentence end: %.2f s kept", len(samples) / rate)
        else:
            samples = _trim_silence(samples[: _upstream_clip(samples, rate)], rate)
    return Voice(_with_tail(samples, rate), text, name=name)


def fit_voice(voice: Voice, max_seconds: float) -> Voice:
    """The voice with at most max_seconds of sound where its transcript allows a cut there
    (ref_trim.py); otherwise the voice as it is."""
    rate = voice.audio.sample_rate
    samples = _trim_silence(voice.audio.samples, rate)
    if len(samples) <= max_seconds * rate:
        return voice
    cut = cut_at_sentence(samples, rate, voice.text, max_seconds)
    if cut is None:
        return voice
    kept = _trim_silence(cut[0], rate)
    log.debug("reference cut to %.2f s of %.2f s", len(kept) / rate, len(samples) / rate)
    return Voice(_with_tail(kept, rate), cut[1], name=voice.name)


def prepare_reference(audio: Audio) -> Audio:
    """Trim silent edges, clip to MAX_REF_SECONDS, append a short silence (as upstream), for a
    reference without a transcript to keep consistent."""
    samples = _sound(audio)[: int(MAX_REF_SECONDS * audio.sample_rate)]
    return _with_tail(samples, audio.sample_rate)


def _sound(audio: Audio) -> np.ndarray:
    """The samples without their silent edges. A silent reference is refused here: upstream
    would normalise its loudness by dividing by its RMS (zero) and return inf/nan audio."""
    samples = _trim_silence(audio.samples, audio.sample_rate)
    if samples.size == 0:
        raise BadRefAudio("reference audio is silent")
    if len(samples) < MIN_REF_SECONDS * audio.sample_rate:
        raise BadRefAudio(f"reference audio is shorter than {MIN_REF_SECONDS} s of sound")
    return samples


def _upstream_clip(samples: np.ndarray, rate: int) -> int:
    """preprocess_ref_audio_text's fallback: end at a pause that leaves between
    MIN_CLIP_SECONDS and MAX_REF_SECONDS, else at MAX_REF_SECONDS (mid-word if it must)."""
    pauses, _ = find_pauses(samples, rate)
    cuts = [p.cut(rate) for p in pauses]
    fits = [c for c in cuts if MIN_CLIP_SECONDS * rate <= c <= MAX_REF_SECONDS * rate]
    return max(fits, default=int(MAX_REF_SECONDS * rate))


def _with_tail(samples: np.ndarray, rate: int) -> Audio:
    tail = np.zeros(int(TAIL_SILENCE_S * rate), dtype=np.float32)
    return Audio(np.concatenate([samples, tail]).astype(np.float32), rate)


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


class VoiceLibrary:
    """Named voices: "default" from the wheel, others from S3, cached after first use.

    `client_factory` builds the S3 client on first need (tests pass one for moto); without a
    bucket only "default" exists. A voice that is missing is not cached, so uploading it later
    works without a restart; a voice that is replaced in S3 is picked up by a new worker.
    """

    def __init__(
        self,
        bucket: str | None,
        prefix: str = "",
        client_factory: Callable[[], Any] | None = None,
        max_cached: int = MAX_CACHED_VOICES,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client_factory = client_factory
        self._client: Any = None
        self._max_cached = max_cached
        self._cache: OrderedDict[str, Voice] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, fallback_to_default: bool = False) -> Voice:
        if name == DEFAULT_VOICE_NAME:
            return default_voice()
        with self._lock:
            if name in self._cache:
                self._cache.move_to_end(name)
                return self._cache[name]
        try:
            voice = self._load(name)
        except VoiceNotFound:
            if fallback_to_default:
                return default_voice()
            raise
        with self._lock:
            self._cache[name] = voice
            self._cache.move_to_end(name)
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return voice

    def cached_names(self) -> list[str]:
        with self._lock:
            return list(self._cache)

    def key(self, name: str, file: str) -> str:
        return "/".join(p for p in (self.prefix, "voices", name, file) if p)

    def _load(self, name: str) -> Voice:
        if not self.bucket:
            raise VoiceNotFound(f"voice {name!r} not found: no voice library is configured")
        data = self._read(name, "ref.wav", MAX_REF_BYTES)
        text = self._read(name, "ref.txt", MAX_REF_TEXT_BYTES).decode("utf-8", "replace").strip()
        if not text:
            raise VoiceNotFound(f"voice {name!r} has an empty ref.txt")
        voice = voice_from_bytes(data, text, name=name)
        log.info("voice %s loaded from the library (%.1f s)", name, voice.audio.duration_s)
        return voice

    def _read(self, name: str, file: str, limit: int) -> bytes:
        key = self.key(name, file)
        try:
            data = read_object(self._s3(), self.bucket, key, limit)
        except ObjectMissing as exc:
            raise VoiceNotFound(f"voice {name!r} not found in the voice library") from exc
        except StorageError as exc:  # AccessDenied included: the operator's to fix, not a miss
            error = type(exc)(f"reading voice {name!r} ({file}) failed: {exc.reason}")
            raise error from exc
        if data is None:
            raise BadRefAudio(f"voice {name!r}: {file} is larger than {limit} bytes")
        return data

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                if self._client_factory is None:
                    raise StorageError("voice library has no S3 client")
                self._client = self._client_factory()
            return self._client
