import io

import numpy as np
import pytest
import soundfile as sf

from audio import Audio, cross_fade, decode, encode
from errors import BadRefAudio, UnsupportedFormat

RATE = 24000


def tone(seconds: float = 1.0, rate: int = RATE) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "opus", "mp3"])
def test_each_format_decodes_back(fmt):
    data = encode(tone(), fmt)
    back, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == RATE
    assert abs(len(back) - RATE) < 0.1 * RATE  # lossy codecs pad a little
    assert np.isfinite(back).all() and 0.1 < np.abs(back).max() <= 1.0


def test_pcm_is_raw_little_endian_int16():
    audio = tone(0.5)
    data = encode(audio, "pcm")
    samples = np.frombuffer(data, dtype="<i2")
    assert len(samples) == len(audio.samples)
    assert np.allclose(samples / 32768, audio.samples, atol=1e-3)


def test_wav_is_lossless_16_bit():
    audio = tone(0.25)
    back, _ = sf.read(io.BytesIO(encode(audio, "wav")), dtype="float32")
    assert np.allclose(back, audio.samples, atol=1 / 32768 + 1e-6)


def test_encode_sanitises_nan_and_clipping():
    audio = Audio(np.array([np.nan, 2.0, -2.0, 0.5], dtype=np.float32), RATE)
    back, _ = sf.read(io.BytesIO(encode(audio, "wav")), dtype="float32")
    assert np.isfinite(back).all() and np.abs(back).max() <= 1.0


def test_unknown_format_and_bad_opus_rate():
    with pytest.raises(UnsupportedFormat):
        encode(tone(), "aiff")
    with pytest.raises(UnsupportedFormat):
        encode(tone(rate=22050), "opus")


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_decode_reads_what_encode_writes(fmt):
    decoded = decode(encode(tone(), fmt))
    assert decoded.sample_rate == RATE and decoded.samples.ndim == 1


def test_decode_downmixes_stereo():
    buf = io.BytesIO()
    sf.write(buf, np.stack([np.ones(100), -np.ones(100)], axis=1) * 0.5, 16000, format="WAV")
    decoded = decode(buf.getvalue())
    assert decoded.sample_rate == 16000 and np.allclose(decoded.samples, 0.0)


@pytest.mark.parametrize("data", [b"", b"not audio at all", b"RIFF\x00\x00\x00\x00WAVE"])
def test_decode_rejects_garbage(data):
    with pytest.raises(BadRefAudio):
        decode(data)


def test_cross_fade_lengths_and_continuity():
    a, b = np.ones(1000, np.float32), np.zeros(1000, np.float32)
    out = cross_fade([a, b], sample_rate=1000, seconds=0.1)
    assert len(out) == 2000 - 100
    assert out[899] == pytest.approx(1.0) and out[1000] == pytest.approx(0.0)
    assert np.all(np.diff(out[900:1000]) <= 0)
    assert len(cross_fade([a, b], 1000, 0.0)) == 2000
    assert len(cross_fade([a], 1000, 0.1)) == 1000 and len(cross_fade([], 1000, 0.1)) == 0
