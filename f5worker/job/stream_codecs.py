"""Encode an utterance piece by piece, so the concatenated bytes are one valid file.

The HTTP mode sends each text chunk's audio as soon as it exists; a client that saves the body
gets one playable file, not a list of files. Per format:

- pcm: raw little-endian int16 (OpenAI's `pcm`), nothing to carry between pieces;
- wav: the 44-byte header first, with the RIFF and data sizes set to 0xFFFFFFFF (the usual
  marker of a WAV of unknown length, which readers take as "until the end of the stream");
- mp3, opus (in Ogg), aac (in ADTS) and flac: one PyAV (ffmpeg) encoder and muxer per request,
  fed frame by frame. The muxer writes to a sink that is drained after each piece; encoder
  delay and frame padding stay inside the one stream, so there are no gaps at piece joins.
  The sink cannot seek, so muxers that would patch their header at the end (FLAC's total
  sample count, mp3's Xing frame) leave the streaming form, which decoders accept.

PyAV ships ffmpeg's encoders in its wheels: no subprocess and no temporary file. Pure numpy and
av; never imports torch.
"""

from __future__ import annotations

import struct
from typing import Protocol

import av
import numpy as np

from f5worker.audio import Audio
from f5worker.errors import UnsupportedFormat

# format -> (container, codec, bit rate); the rates suit mono speech at 24 kHz.
_AV_FORMATS: dict[str, tuple[str, str, int | None]] = {
    "mp3": ("mp3", "libmp3lame", 64_000),
    "opus": ("ogg", "libopus", 32_000),
    "aac": ("adts", "aac", 64_000),
    "flac": ("flac", "flac", None),
}
STREAM_FORMATS = ("wav", "pcm", *_AV_FORMATS)
# Ogg holds packets until a page spans page_duration (default 1 s, in microseconds); 100 ms
# pages let a piece's audio leave with the piece, for about 1.2 kbit/s of page headers.
_MUXER_OPTIONS = {"ogg": {"page_duration": "100000"}}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_UNKNOWN_SIZE = 0xFFFFFFFF


class StreamEncoder(Protocol):
    def encode(self, audio: Audio) -> bytes:
        """The bytes this piece completes (may be empty while the muxer fills a frame)."""
        ...

    def finish(self) -> bytes:
        """The rest: flushed encoder frames and the container's trailer."""
        ...

    def close(self) -> None:
        """Free the encoder without finishing the file (a stream cut short); idempotent."""
        ...


def stream_encoder(fmt: str, sample_rate: int) -> StreamEncoder:
    if fmt == "pcm":
        return _Pcm()
    if fmt == "wav":
        return _Wav(sample_rate)
    if fmt not in _AV_FORMATS:
        raise UnsupportedFormat(f"streamed audio must be one of {', '.join(STREAM_FORMATS)}")
    if fmt == "opus" and sample_rate not in OPUS_RATES:
        raise UnsupportedFormat(f"opus needs a sample rate in {OPUS_RATES}")
    return _AvEncoder(fmt, sample_rate)


def encode_whole(audio: Audio, fmt: str) -> bytes:
    """One piece, finished: for formats only PyAV encodes (aac)."""
    encoder = stream_encoder(fmt, audio.sample_rate)
    return encoder.encode(audio) + encoder.finish()


def pcm16(audio: Audio) -> bytes:
    samples = np.clip(np.nan_to_num(audio.samples, nan=0.0), -1.0, 1.0)
    return (samples * 32767.0).astype("<i2").tobytes()


class _Pcm:
    def encode(self, audio: Audio) -> bytes:
        return pcm16(audio)

    def finish(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


class _Wav:
    def __init__(self, sample_rate: int) -> None:
        self._header = wav_header(sample_rate)

    def encode(self, audio: Audio) -> bytes:
        header, self._header = self._header, b""
        return header + pcm16(audio)

    def finish(self) -> bytes:
        return self._header  # an empty utterance is still a WAV file

    def close(self) -> None:
        pass


def wav_header(sample_rate: int, channels: int = 1, bits: int = 16) -> bytes:
    block = channels * bits // 8
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", _UNKNOWN_SIZE),
            b"WAVEfmt ",
            struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, bits),
            b"data",
            struct.pack("<I", _UNKNOWN_SIZE),
        )
    )


class _Sink:
    """A write-only file for the muxer; `drain` hands over what it wrote since the last call.
    No seek method: muxers then write their streaming form instead of patching headers."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


class _AvEncoder:
    def __init__(self, fmt: str, sample_rate: int) -> None:
        container, codec, bit_rate = _AV_FORMATS[fmt]
        self._sink = _Sink()
        self._out = av.open(
            self._sink, mode="w", format=container, options=_MUXER_OPTIONS.get(container, {})
        )
        stream = self._out.add_stream(codec, rate=sample_rate, layout="mono")
        assert isinstance(stream, av.AudioStream)  # an audio codec's name gives an audio stream
        self._stream = stream
        if bit_rate:
            self._stream.bit_rate = bit_rate
        self._rate = sample_rate
        self._pts = 0
        self._closed = False

    def encode(self, audio: Audio) -> bytes:
        if self._closed:  # libav's state is gone: using it would crash the process
            raise RuntimeError("this encoder is closed")
        samples = np.clip(np.nan_to_num(audio.samples, nan=0.0), -1.0, 1.0).astype(np.float32)
        if samples.size:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = self._pts
            self._pts += samples.size
            self._out.mux(self._stream.encode(frame))
        return self._sink.drain()

    def finish(self) -> bytes:
        if not self._closed:
            self._closed = True
            self._out.mux(self._stream.encode(None))
            self._out.close()
        return self._sink.drain()

    def close(self) -> None:
        # The container holds libav's codec and muxer state (megabytes, outside Python's
        # accounting), which only the cycle collector would otherwise free: release it now.
        # What the trailer writes goes to the sink and is dropped.
        if not self._closed:
            self._closed = True
            self._out.close()
        self._sink.drain()
