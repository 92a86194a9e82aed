"""Audio encoded piece by piece is one valid file of the whole utterance, in every format."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import soundfile as sf

from f5worker.audio import Audio
from f5worker.errors import UnsupportedFormat
from f5worker.job.codecs import encode
from f5worker.job.stream_codecs import STREAM_FORMATS, pcm16, stream_encoder

RATE = 24000
PIECES = [  # uneven lengths, as text chunks make them
    Audio((0.3 * np.sin(np.arange(n) / 7)).astype(np.float32), RATE) for n in (12345, 24000, 701)
]
TOTAL = sum(p.samples.size for p in PIECES)


def streamed(fmt: str, rate: int = RATE) -> tuple[list[bytes], bytes]:
    encoder = stream_encoder(fmt, rate)
    parts = [encoder.encode(p) for p in PIECES] + [encoder.finish()]
    return parts, b"".join(parts)


def decoded_samples(data: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    return sum(f.samples for f in frames), frames[0].sample_rate


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_pieces_concatenate_to_one_file_of_the_whole_length(fmt):
    parts, data = streamed(fmt)
    assert parts[0], "the first piece's audio leaves with the first piece"
    samples, rate = decoded_samples(data)
    # encoder delay and the last frame's padding: at most a few codec frames
    assert samples / rate == pytest.approx(TOTAL / RATE, abs=0.1)


def test_wav_and_pcm_are_exact():
    _, wav = streamed("wav")
    samples, rate = sf.read(io.BytesIO(wav), dtype="int16")
    _, pcm = streamed("pcm")
    assert rate == RATE and samples.tobytes() == pcm
    assert pcm == b"".join(pcm16(p) for p in PIECES)


def test_an_empty_utterance_is_still_a_wav_file():
    encoder = stream_encoder("wav", RATE)
    assert len(encoder.finish()) == 44


def test_aac_is_a_native_format_too():
    data = encode(PIECES[1], "aac")
    assert data[:2] == b"\xff\xf1"  # an ADTS sync word: MPEG-4 AAC, no CRC
    assert decoded_samples(data)[0] >= 24000


@pytest.mark.parametrize(("fmt", "rate"), [("ogg", RATE), ("opus", 44100), ("aiff", RATE)])
def test_what_cannot_stream_is_unsupported(fmt, rate):
    with pytest.raises(UnsupportedFormat):
        stream_encoder(fmt, rate)
    assert fmt not in STREAM_FORMATS or rate != RATE


@pytest.mark.parametrize("fmt", [*STREAM_FORMATS])
def test_an_unfinished_encoder_closes_once_and_then_refuses_work(fmt):
    encoder = stream_encoder(fmt, RATE)
    encoder.encode(PIECES[0])
    encoder.close()  # a stream cut short: libav's state is freed now, not at the next gc
    encoder.close()
    if fmt not in ("pcm", "wav"):
        with pytest.raises(RuntimeError):
            encoder.encode(PIECES[1])
        assert encoder.finish() == b""  # nothing left over, and no trailer after a close
