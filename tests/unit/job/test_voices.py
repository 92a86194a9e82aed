"""Reference preparation and the voice library (S3 on moto)."""

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from f5worker.audio import Audio
from f5worker.errors import BadRefAudio, StorageError, VoiceNotFound
from f5worker.job.voices import (
    MAX_REF_BYTES,
    MAX_REF_SECONDS,
    VoiceLibrary,
    default_voice,
    prepare_reference,
    voice_from_bytes,
)
from f5worker.s3 import make_client

BUCKET = "worker-bucket"


def wav_bytes(samples: np.ndarray, rate: int = 24000, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt)
    return buf.getvalue()


def wav_b64(samples: np.ndarray, rate: int = 24000) -> str:
    return base64.b64encode(wav_bytes(samples, rate)).decode()


def noise(seconds: float, rate: int = 24000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * rate)) * 0.2).astype(np.float32)


def test_default_voice_is_the_wheels_reference():
    voice = default_voice()
    assert voice.name == "default" and voice.text.startswith("Some call me nature")
    assert voice.audio.sample_rate == 24000 and 3 < voice.audio.duration_s < MAX_REF_SECONDS


def test_reference_is_trimmed_and_clipped():
    rate = 24000
    samples = np.concatenate([np.zeros(rate), noise(20), np.zeros(rate)])
    out = prepare_reference(Audio(samples, rate))
    assert out.duration_s == pytest.approx(MAX_REF_SECONDS + 0.05, abs=0.02)
    assert np.abs(out.samples[:100]).max() > 0  # leading silence removed


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"garbage", "decoded"),
        (wav_bytes(np.zeros(24000, np.float32)), "silent"),
        (wav_bytes(np.full(24000, 1e-4, np.float32)), "silent"),  # below -42 dBFS
        (wav_bytes(noise(0.1)), "shorter"),
        (wav_bytes(noise(61, rate=8000), rate=8000), "longer than 60 s"),
        (b"\0" * (MAX_REF_BYTES + 1), "larger than"),
    ],
)
def test_bad_reference_audio(data, fragment):
    with pytest.raises(BadRefAudio) as info:
        voice_from_bytes(data, "text")
    assert fragment in info.value.message


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_good_reference_in_each_container(fmt):
    voice = voice_from_bytes(wav_bytes(noise(2, 16000), 16000, fmt), "hi there", name="x")
    assert voice.audio.sample_rate == 16000 and voice.text == "hi there" and voice.name == "x"
    assert 1.5 < voice.audio.duration_s < 2.2


@pytest.fixture
def s3_buckets() -> tuple[str, ...]:
    return (BUCKET,)


def put_voice(s3, name, audio=None, text="A voice from the library.", prefix="f5-tts"):
    if audio is not None:
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/voices/{name}/ref.wav", Body=audio)
    if text is not None:
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/voices/{name}/ref.txt", Body=text.encode())


def library(s3, **kw):
    calls = []

    def factory():
        calls.append(1)
        return s3

    lib = VoiceLibrary(BUCKET, "f5-tts/", client_factory=factory, **kw)
    return lib, calls


def test_library_voice_is_loaded_once_then_cached(s3):
    put_voice(s3, "anna", wav_bytes(noise(3)), text=" Hello, I am Anna. \n")
    lib, calls = library(s3)
    voice = lib.get("anna")
    assert voice.name == "anna" and voice.text == "Hello, I am Anna."
    assert 2.9 < voice.audio.duration_s < 3.1
    s3.delete_object(Bucket=BUCKET, Key="f5-tts/voices/anna/ref.wav")
    assert lib.get("anna") is voice  # served from the cache, S3 not asked again
    assert calls == [1]


def test_cache_is_bounded_lru(s3):
    for i in range(4):
        put_voice(s3, f"v{i}", wav_bytes(noise(1, seed=i)))
    lib, _ = library(s3, max_cached=2)
    for name in ("v0", "v1", "v0", "v2", "v3"):
        lib.get(name)
    assert lib.cached_names() == ["v2", "v3"]


@pytest.mark.parametrize(
    ("audio", "text", "error", "fragment"),
    [
        (None, "t", VoiceNotFound, "not found in the voice library"),
        (wav_bytes(noise(1)), None, VoiceNotFound, "not found in the voice library"),
        (wav_bytes(noise(1)), "  ", VoiceNotFound, "empty ref.txt"),
        (b"not audio", "t", BadRefAudio, "decoded"),
        (wav_bytes(np.zeros(24000, np.float32)), "t", BadRefAudio, "silent"),
    ],
)
def test_broken_library_voices(s3, audio, text, error, fragment):
    put_voice(s3, "broken", audio, text)
    lib, _ = library(s3)
    with pytest.raises(error) as info:
        lib.get("broken")
    assert fragment in info.value.message
    assert lib.cached_names() == []


def test_missing_voice_falls_back_only_when_asked(s3):
    lib, _ = library(s3)
    with pytest.raises(VoiceNotFound):
        lib.get("alloy")
    assert lib.get("alloy", fallback_to_default=True) is default_voice()
    put_voice(s3, "alloy", wav_bytes(noise(2)))
    assert lib.get("alloy", fallback_to_default=True).name == "alloy"


def test_default_needs_no_library():
    lib = VoiceLibrary(None)
    assert lib.get("default") is default_voice()
    with pytest.raises(VoiceNotFound) as info:
        lib.get("anna")
    assert "no voice library is configured" in info.value.message


def test_unreachable_store_is_a_retryable_storage_error():
    # Port 9 (discard) on loopback: connection refused at once, no retries worth waiting for.
    lib = VoiceLibrary(
        BUCKET,
        client_factory=lambda: make_client(
            "http://127.0.0.1:9", "us-east-1", "k", "s", max_pool_connections=1
        ),
    )
    with pytest.raises(StorageError) as info:
        lib.get("anna")
    assert info.value.retryable and "reading voice 'anna'" in info.value.message
