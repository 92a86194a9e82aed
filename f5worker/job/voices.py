"""Reference voices: the default voice shipped in the f5-tts wheel, the voice library in S3, and
voices sent with a request. Pure numpy and boto3; never imports torch.

A voice is decoded once into memory (soundfile), trimmed, and clipped to 12 s at a sentence end
that its transcript and its pauses agree on (ref_trim.py; else as upstream does), so no
request ever writes a temp file (upstream's preprocess_ref_audio_text keeps one per reference and
never deletes it). Library voices live under `<S3_PREFIX>/voices/<name>/` (voice_store.py says
how) and are kept in a bounded LRU after first use; the bound is in entries, and an entry is at
most 12 s of audio (about 2.3 MB at 48 kHz), so the cache is at most VOICE_CACHE_SIZE * 2.3 MB.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np
import soundfile as sf

from f5worker.audio import Audio, Voice
from f5worker.config.table import default as setting_default
from f5worker.errors import (
    BadRefAudio,
    InvalidInput,
    StorageError,
    VoiceChanged,
    VoiceExists,
    VoiceLimitReached,
    VoiceNotFound,
    VoiceWritesDisabled,
)
from f5worker.job.codecs import decode, resample
from f5worker.job.openai_compat import OPENAI_VOICES
from f5worker.job.ref_trim import cut_at_sentence, find_pauses
from f5worker.job.voice_store import BadManifest, StoredVoice, VoiceInfo, VoiceStore, preview
from f5worker.presets import REF_SECONDS_FULL
from f5worker.s3 import AccessDenied, ClientFactory, S3Client

log = logging.getLogger(__name__)

DEFAULT_VOICE_NAME = "default"
# Names a voice.add may not take, compared case-insensitively: the built-in voice, and OpenAI's
# stock voices, which OpenAI clients (and frameworks that only offer those) send expecting the
# default voice. A clip added as `alloy` would speak to every such client unasked.
RESERVED_VOICE_NAMES = frozenset({DEFAULT_VOICE_NAME, *OPENAI_VOICES})
DEFAULT_VOICE_TEXT = "Some call me nature, others call me mother nature."
MAX_REF_SECONDS = REF_SECONDS_FULL  # upstream clips references to about 12 s
MIN_CLIP_SECONDS = 6.0  # upstream's clip at a pause keeps more than 6 s
MIN_REF_SECONDS = 0.3
SILENCE_DBFS = -42.0  # upstream's remove_silence_edges threshold
TAIL_SILENCE_S = 0.05  # upstream appends 50 ms of silence
MAX_REF_BYTES = 10 * 1024 * 1024  # encoded reference audio, from any source
MAX_REF_TEXT_BYTES = 4096


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


@dataclass
class _Cached:
    voice: Voice
    created: str
    token: str
    checked: float  # monotonic time of the last look at S3
    consent: str = ""
    transcript_source: str = "request"  # StoredVoice.transcript_source

    def entry(self) -> VoiceEntry:
        return VoiceEntry(
            self.voice, self.created, self.consent, transcript_source=self.transcript_source
        )


@dataclass(frozen=True)
class VoiceEntry:
    """A named voice with what the library records about it."""

    voice: Voice
    created: str
    consent: str
    cached: bool = True  # from the worker's memory; False: just read from S3
    transcript_source: str = "request"  # "asr": transcribed when the voice was added


class VoiceLibrary:
    """Named voices: "default" from the wheel, others from S3 (voice_store.py), cached after use.

    `client_factory` builds the S3 client on first need (tests pass one for moto); without a
    bucket only "default" exists. A cached voice is used for at most `cache_ttl_s` seconds
    before S3 is asked (one HEAD) whether it is still the same, so a voice deleted or replaced
    by another worker is seen within that time; a missing voice is never cached, so one added
    elsewhere is seen at once. This worker's own adds and deletes take effect here at once.
    """

    def __init__(
        self,
        bucket: str | None,
        prefix: str = "",
        client_factory: ClientFactory | None = None,
        max_cached: int = setting_default("voice_cache_size"),
        cache_ttl_s: float = setting_default("voice_cache_ttl_s"),
        writes: bool = setting_default("voice_writes"),
        max_voices: int = setting_default("voice_max_count"),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bucket = bucket
        self.writes = writes
        self.max_voices = max_voices
        self._client_factory = client_factory
        self._client: S3Client | None = None
        self._max_cached = max_cached
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # orders this worker's adds and deletes
        self._store = VoiceStore(bucket, prefix, self._s3) if bucket else None

    # -- reads ----------------------------------------------------------------------------------

    def get(self, name: str, fallback_to_default: bool = False) -> Voice:
        return self.lookup(name, fallback_to_default).voice

    def lookup(self, name: str, fallback_to_default: bool = False) -> VoiceEntry:
        """get(), with whether the voice came from memory (`cached`) or was read from S3."""
        try:
            return self.entry(name)
        except VoiceNotFound:
            if fallback_to_default:
                return VoiceEntry(default_voice(), "", "")
            raise

    def entry(self, name: str) -> VoiceEntry:
        """A named voice and its record; VOICE_NOT_FOUND when there is none."""
        if name == DEFAULT_VOICE_NAME:
            return VoiceEntry(default_voice(), "", "")
        cached = self._cached(name)
        if cached is not None and self._clock() - cached.checked < self._ttl:
            return cached.entry()
        if cached is not None and self._still_current(name, cached):
            cached.checked = self._clock()
            return cached.entry()
        self.forget(name)
        loaded = self._load(name)
        with self._lock:
            self._cache[name] = loaded
            self._cache.move_to_end(name)
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return dataclasses.replace(loaded.entry(), cached=False)

    def list_voices(self) -> list[VoiceInfo]:
        """Every voice, "default" first, read from S3 now (no cache: always current)."""
        voice = default_voice()
        infos = [
            VoiceInfo(DEFAULT_VOICE_NAME, round(voice.audio.duration_s, 3), "", preview(voice.text))
        ]
        if self._store is not None:
            try:
                infos += self._store.list()
            except StorageError as exc:
                raise type(exc)(f"listing the voice library failed: {exc.reason}") from exc
        return infos

    def cached_names(self) -> list[str]:
        with self._lock:
            return list(self._cache)

    def forget(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)

    # -- writes ---------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        voice: Voice,
        created: str,
        consent: str = "",
        transcript_source: str = "request",
    ) -> VoiceInfo:
        """Store a normalised voice (normalise_voice) under a new name, atomically.

        Writes on one worker are ordered (one lock: an add and a delete of one name never
        interleave, and the count below holds exactly for this worker). Across workers
        max_voices is a soft limit: counted before the write, so adds running at once on
        several workers may each pass the count and overshoot it by their number."""
        store = self.check_writable()
        if name.casefold() in RESERVED_VOICE_NAMES:
            raise VoiceExists(
                f"voice name {name!r} is reserved (the built-in voice and OpenAI's stock "
                "voice names, in any case); choose another"
            )
        with self._write_lock:
            return self._add(store, name, voice, created, consent, transcript_source)

    def _add(
        self,
        store: VoiceStore,
        name: str,
        voice: Voice,
        created: str,
        consent: str,
        transcript_source: str,
    ) -> VoiceInfo:
        try:
            full = store.count() >= self.max_voices
        except StorageError as exc:
            raise type(exc)(f"listing the voice library failed: {exc.reason}") from exc
        if full:
            raise VoiceLimitReached(f"the voice library holds its limit of {self.max_voices}")
        audio = voice.audio
        manifest = {
            "transcript": voice.text,
            "duration_s": round(audio.duration_s, 3),
            "sample_rate": audio.sample_rate,
            "created": created,
            "consent": consent,
            "transcript_source": transcript_source,
        }
        try:
            added = store.create(name, encode_reference(audio), manifest)
        except StorageError as exc:
            raise type(exc)(f"storing voice {name!r} failed: {exc.reason}") from exc
        if not added:
            raise VoiceExists(f"voice {name!r} exists; delete it first to replace it")
        self.forget(name)
        log.info("voice %s added (%.1f s)", name, audio.duration_s)
        return VoiceInfo(name, round(audio.duration_s, 3), created, preview(voice.text), consent)

    def delete(self, name: str) -> None:
        """Remove a voice; returns only once it is gone (read back after the delete)."""
        store = self.check_writable()
        if name.casefold() == DEFAULT_VOICE_NAME:
            raise InvalidInput("the default voice is built in and cannot be deleted")
        with self._write_lock:
            try:
                deleted = store.delete(name)
                still_there = deleted and store.token(name) is not None
            except StorageError as exc:
                raise type(exc)(f"deleting voice {name!r} failed: {exc.reason}") from exc
            finally:
                self.forget(name)
        if not deleted:
            raise VoiceNotFound(f"voice {name!r} not found in the voice library")
        if still_there:  # another worker added it again between the delete and the check
            raise VoiceChanged(f"voice {name!r} was added again while it was being deleted")
        log.info("voice %s deleted", name)

    # -- helpers --------------------------------------------------------------------------------

    def check_writable(self) -> VoiceStore:
        """The store, when adds and deletes are allowed; VOICE_WRITES_DISABLED otherwise."""
        if self._store is None:
            raise VoiceWritesDisabled("no voice library is configured (S3_BUCKET)")
        if not self.writes:
            raise VoiceWritesDisabled("voice library writes are switched off (VOICE_WRITES)")
        return self._store

    def _cached(self, name: str) -> _Cached | None:
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None:
                self._cache.move_to_end(name)
            return cached

    def _still_current(self, name: str, cached: _Cached) -> bool:
        """Whether S3 still holds the cached version. When S3 cannot be reached (a retryable
        error), the cached copy is used (with a WARNING): a short outage of the library need
        not fail jobs whose voice is in memory; staleness is then bounded by the outage, not the
        TTL. Any other answer (403 included: S3 gives it for a missing key to credentials
        without s3:ListBucket) is no outage: the copy is dropped and the voice read again."""
        assert self._store is not None  # only library voices are cached
        try:
            return self._store.token(name) == cached.token
        except StorageError as exc:
            if not exc.retryable:
                return False
            log.warning("voice %s: S3 not reachable (%s); using the cached copy", name, exc.reason)
            return True

    def _load(self, name: str) -> _Cached:
        if self._store is None:
            raise VoiceNotFound(f"voice {name!r} not found: no voice library is configured")
        try:
            stored = self._store.read(name, MAX_REF_BYTES)
        except BadManifest:  # a listing skips it too: for a job it is no voice at all
            raise VoiceNotFound(
                f"voice {name!r} cannot be used: its manifest (voice.json) is unreadable; "
                "delete the voice and add it again"
            ) from None
        except AccessDenied as exc:
            raise AccessDenied(
                f"reading voice {name!r} failed: {exc.reason} (S3 also answers 403 for a "
                "missing voice when the credentials lack s3:ListBucket)"
            ) from exc
        except StorageError as exc:  # the operator's to fix or retryable, not a miss
            raise type(exc)(f"reading voice {name!r} failed: {exc.reason}") from exc
        except ValueError as exc:
            raise BadRefAudio(f"voice {name!r}: {exc}") from None
        if stored is None:
            raise VoiceNotFound(f"voice {name!r} not found in the voice library")
        if not stored.transcript:
            raise VoiceNotFound(f"voice {name!r} has an empty ref.txt")
        voice = stored_voice(stored, name)
        log.info("voice %s loaded from the library (%.1f s)", name, voice.audio.duration_s)
        return _Cached(
            voice,
            stored.created,
            stored.token,
            self._clock(),
            stored.consent,
            stored.transcript_source,
        )

    def _s3(self) -> S3Client:
        with self._lock:
            if self._client is None:
                if self._client_factory is None:
                    raise StorageError("voice library has no S3 client")
                self._client = self._client_factory()
            return self._client


def normalise_voice(voice: Voice, sample_rate: int) -> Voice:
    """A prepared voice (prepare_voice: trimmed, cut to at most MAX_REF_SECONDS of sound at a
    sentence end) at the model's rate: what a library voice is stored as, so a job that uses
    it decodes one WAV and does nothing else."""
    return Voice(resample(voice.audio, sample_rate), voice.text, name=voice.name)


def encode_reference(audio: Audio) -> bytes:
    """Mono 32-bit float WAV: the normalised samples exactly, at about 1.2 MB for 12 s."""
    buf = io.BytesIO()
    sf.write(buf, audio.samples, audio.sample_rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def stored_voice(stored: StoredVoice, name: str) -> Voice:
    """The Voice of a stored one: as stored when it was normalised at upload and still looks
    it (its rate, at most MAX_REF_SECONDS plus the tail); prepared as any reference otherwise
    (a hand upload, or an object edited by hand)."""
    audio = decode(stored.audio)
    normalised = stored.sample_rate == audio.sample_rate and audio.duration_s <= (
        MAX_REF_SECONDS + TAIL_SILENCE_S + 0.01
    )
    if normalised:
        return Voice(audio, stored.transcript, name=name)
    return prepare_voice(audio, stored.transcript, name)
