"""Encoding, decoding, resampling and pause shortening (f5worker/job/codecs.py)."""

import io
import itertools
import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from f5worker.audio import Audio
from f5worker.errors import BadRefAudio, UnsupportedFormat
from f5worker.job.codecs import StreamResampler, decode, encode, resample, shorten_pauses

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


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3", "opus", "pcm"])
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_each_format_at_each_rate_decodes_back(fmt, rate):
    audio = resample(tone(0.5), rate)
    data = encode(audio, fmt)
    if fmt == "pcm":
        back, back_rate = np.frombuffer(data, dtype="<i2") / 32768, rate
    else:
        back, back_rate = sf.read(io.BytesIO(data), dtype="float32")
    assert back_rate == rate
    assert abs(len(back) - len(audio.samples)) < 0.1 * rate
    assert np.isfinite(back).all() and 0.1 < np.abs(back).max() <= 1.0


def test_resample_keeps_duration_and_pitch():
    out = resample(tone(1.0), 44100)
    assert out.sample_rate == 44100 and len(out.samples) == 44100
    spectrum = np.abs(np.fft.rfft(out.samples))
    assert np.argmax(spectrum) * 44100 / len(out.samples) == pytest.approx(220, abs=2)
    same = tone()
    assert resample(same, RATE) is same


@pytest.mark.parametrize("rate", [16000, 24000, 44100])
def test_stream_resampler_pieces_join_to_the_whole(rate):
    whole = tone(2.0)
    cuts = [0, 7000, 7001, 30000, len(whole.samples)]
    stream = StreamResampler(RATE, rate)
    pieces = [
        stream(Audio(whole.samples[a:b], RATE), last=b == len(whole.samples)).samples
        for a, b in itertools.pairwise(cuts)
    ]
    assert np.array_equal(np.concatenate(pieces), resample(whole, rate).samples)


def pauses(*spans: tuple[str, float]) -> Audio:
    """Concatenate ("sound"|"silence", seconds) spans into one signal."""
    parts = [
        tone(sec).samples if kind == "sound" else np.zeros(int(sec * RATE), np.float32)
        for kind, sec in spans
    ]
    return Audio(np.concatenate(parts), RATE)


@pytest.mark.parametrize(
    ("spans", "expected_s"),
    [
        ([("sound", 1), ("silence", 3), ("sound", 1)], 3.0),  # long pause -> 1 s
        ([("sound", 1), ("silence", 0.8), ("sound", 1)], 2.8),  # short pause kept
        ([("silence", 2), ("sound", 1), ("silence", 2)], 2.0),  # edges -> 0.5 s each
        ([("silence", 3)], 0.5),
        ([("sound", 1)], 1.0),
    ],
)
def test_shorten_pauses(spans, expected_s):
    out = shorten_pauses(pauses(*spans))
    assert out.duration_s == pytest.approx(expected_s, abs=0.02)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: encode(tone(61.0, rate=8000), "wav"), "longer than 60 s"),
        (lambda: encode(Audio(np.zeros(100, np.float32), 4000), "wav"), "sample rate"),
        (lambda: encode(tone(1.0), "wav")[:44], "no samples"),
    ],
)
def test_decode_limits(make, fragment):
    with pytest.raises(BadRefAudio) as info:
        decode(make())
    assert fragment in info.value.message


# -- decompression bombs: what decoding may allocate is bounded before it allocates -----------


def many_channels(channels: int, seconds: float, fmt: str = "OGG", rate: int = 48000) -> bytes:
    buf = io.BytesIO()
    frames = np.full((int(seconds * rate), channels), 0.01, dtype=np.float32)
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    sf.write(buf, frames, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(("channels", "fmt"), [(9, "WAV"), (64, "OGG"), (255, "OGG")])
def test_too_many_channels_are_refused_before_decoding(channels, fmt):
    data = many_channels(channels, 0.5, fmt)
    started = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(BadRefAudio, match="1 to 8 channels"):
            decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2
    assert peak < 1_000_000, f"{peak} bytes allocated to refuse a header"


def test_a_long_multichannel_reference_decodes_in_blocks():
    """8 channels x 50 s at 48 kHz: decoding all of it at once would take 77 MB of frames;
    block by block the peak is the mono result (9.6 MB) plus one block."""
    data = many_channels(8, 50, "WAV")
    tracemalloc.start()
    try:
        audio = decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    mono_bytes = audio.samples.nbytes
    assert audio.duration_s == pytest.approx(50) and audio.sample_rate == 48000
    assert peak < 2.5 * mono_bytes + 8_000_000, f"peak {peak / 1e6:.1f} MB"


def test_a_bomb_that_declares_a_long_stream_stops_at_the_limit():
    """A short file claiming more than the limit costs only the limit's worth of work."""
    data = many_channels(2, 61, "OGG", rate=8000)
    started = time.perf_counter()
    with pytest.raises(BadRefAudio, match="longer than 60 s"):
        decode(data)
    assert time.perf_counter() - started < 5
