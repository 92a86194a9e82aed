"""Waveforms in and out: decode reference audio, resample, shorten pauses, encode results.

Codecs go through soundfile (libsndfile), and aac, which libsndfile lacks, through PyAV
(stream_codecs.py): no ffmpeg subprocess, no temp files. Resampling is
soxr (the resampler librosa uses), whose streaming mode makes chunk-by-chunk output identical to
resampling the whole utterance. Pure numpy; never imports torch.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import soxr

from f5worker.audio import Audio
from f5worker.errors import BadRefAudio, UnsupportedFormat
from f5worker.job.stream_codecs import encode_whole

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
    "pcm": "audio/pcm",  # 16-bit little-endian mono; OpenAI's name (L16 is big-endian)
    "aac": "audio/aac",
}
ENCODED_BY_AV = ("aac",)  # ADTS: raw AAC frames, the stream form browsers and ffmpeg play
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MAX_DECODED_SECONDS = 60.0  # a longer reference is a mistake, not a voice sample
MIN_RATE, MAX_RATE = 8000, 192000
MAX_CHANNELS = 8  # 7.1; a voice sample is mono or stereo, and FLAC stops at 8 too
DECODE_BLOCK_S = 0.5  # decoded frames x channels held at once, before the downmix
PAUSE_THRESHOLD_DBFS = -50.0  # upstream's remove_silence threshold


def encode(audio: Audio, fmt: str) -> bytes:
    if fmt in ENCODED_BY_AV:
        return encode_whole(audio, fmt)
    if fmt not in _CODECS:
        raise UnsupportedFormat(f"format must be one of {', '.join((*_CODECS, *ENCODED_BY_AV))}")
    if fmt == "opus" and audio.sample_rate not in OPUS_RATES:
        raise UnsupportedFormat(f"opus needs a sample rate in {OPUS_RATES}")
    container, subtype = _CODECS[fmt]
    samples = np.clip(np.nan_to_num(audio.samples, nan=0.0), -1.0, 1.0).astype(np.float32)
    buf = io.BytesIO()
    extra = {"endian": "LITTLE"} if fmt == "pcm" else {}
    sf.write(buf, samples, audio.sample_rate, format=container, subtype=subtype, **extra)
    return buf.getvalue()


def decode(data: bytes, max_seconds: float = MAX_DECODED_SECONDS) -> Audio:
    """Decode reference audio of any container libsndfile reads; mono float32.

    A few kilobytes of compressed audio can declare any rate, channel count and length, so what
    decoding may allocate is bounded before it allocates: the rate and channel count are checked
    from the header, and frames are decoded in blocks of DECODE_BLOCK_S, each downmixed to mono
    at once, stopping one frame past max_seconds. Peak memory is the mono result (at most
    max_seconds x MAX_RATE x 4 bytes, 46 MB) plus one block (at most 6 MB), whatever the file.
    """
    if not data:
        raise BadRefAudio("reference audio is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            _check_header(rate, channels)
            mono = _read_mono(f, int(max_seconds * rate) + 1, max(1, int(DECODE_BLOCK_S * rate)))
    except BadRefAudio:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, MemoryError):
        raise BadRefAudio("reference audio could not be decoded (WAV, FLAC, OGG or MP3)") from None
    if mono.size > max_seconds * rate:
        raise BadRefAudio(f"reference audio is longer than {max_seconds:g} s; send 3 to 12 s")
    if mono.size == 0:
        raise BadRefAudio("reference audio has no samples")
    if not np.isfinite(mono).all():
        raise BadRefAudio("reference audio contains invalid samples")
    return Audio(mono, rate)


def _check_header(rate: int, channels: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise BadRefAudio(f"reference sample rate must be {MIN_RATE} to {MAX_RATE} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        raise BadRefAudio(f"reference audio must have 1 to {MAX_CHANNELS} channels")


def _read_mono(f: sf.SoundFile, max_frames: int, block: int) -> np.ndarray:
    """At most max_frames frames, averaged over channels one block at a time."""
    pieces = []
    for frames in f.blocks(block, frames=max_frames, dtype="float32", always_2d=True):
        pieces.append(frames.mean(axis=1, dtype=np.float32))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


def resample(audio: Audio, rate: int) -> Audio:
    if rate == audio.sample_rate:
        return audio
    out = soxr.resample(audio.samples, audio.sample_rate, rate, quality="HQ")
    return Audio(out.astype(np.float32, copy=False), rate)


class StreamResampler:
    """Resample consecutive pieces so that they concatenate to resample(whole utterance)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
        )

    def __call__(self, piece: Audio, last: bool) -> Audio:
        if self._stream is None:
            return piece
        out = self._stream.resample_chunk(piece.samples.astype(np.float32), last=last)
        return Audio(out, self.out_rate)


def shorten_pauses(
    audio: Audio,
    max_pause_s: float = 1.0,
    threshold_dbfs: float = PAUSE_THRESHOLD_DBFS,
) -> Audio:
    """Cut every pause longer than max_pause_s down to max_pause_s.

    The numpy form of upstream's remove_silence_for_generated_wav (pydub split_on_silence with
    min_silence_len=1000, keep_silence=500): half a maximal pause is kept on each side of sound,
    so a leading or trailing pause becomes max_pause_s / 2.
    """
    return Audio(audio.samples[pause_mask(audio, max_pause_s, threshold_dbfs)], audio.sample_rate)


def pause_mask(
    audio: Audio,
    max_pause_s: float = 1.0,
    threshold_dbfs: float = PAUSE_THRESHOLD_DBFS,
) -> np.ndarray:
    """Which samples shorten_pauses keeps (a boolean mask), so captions can map times through
    what it removed."""
    total = len(audio.samples)
    keep = np.ones(total, dtype=bool)
    window = max(1, audio.sample_rate // 100)  # 10 ms, pydub's seek_step
    n = total // window
    if n == 0:
        return keep
    frames = audio.samples[: n * window].reshape(n, window)
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    silent = rms <= 10 ** (threshold_dbfs / 20)
    half = int(max_pause_s * audio.sample_rate / 2)
    for start, stop in _runs(silent):
        first = start * window
        last = total if stop == n else stop * window  # a trailing run takes the partial window
        if last - first <= 2 * half:
            continue
        leading, trailing = first == 0, last == total
        cut_from = first if leading else first + half
        cut_to = last if trailing else last - half
        if leading and trailing:
            cut_from = half  # nothing but silence: keep half a pause
        keep[cut_from:cut_to] = False
    return keep


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index pairs of the True runs in a boolean array."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
