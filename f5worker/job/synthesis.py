"""A prepared job -> the engine's pieces -> shaped, encoded, delivered result items.

`pieces` is the only loop over the engine for one job: between chunks it reports progress and
honours a cancel, so the engine is free for the next job after at most one chunk's (or one
batch's) work. `whole_item` and `stream_items` are the queue's two item shapes; the HTTP stream
shapes the same pieces (shaping.Shaper) into one continuous encoded body instead.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import numpy as np

from f5worker.audio import Audio
from f5worker.engine.scheduler import WorkTag
from f5worker.errors import JobCancelled
from f5worker.job import captions
from f5worker.job.codecs import MIME_TYPES, encode
from f5worker.job.prepared import JobControl, Piece, PreparedJob
from f5worker.job.shaping import Shaper
from f5worker.job.usage import item_usage


def pieces(job: PreparedJob, control: JobControl) -> Generator[Piece, None, None]:
    """The engine's audio chunk by chunk (cross-faded; the pieces concatenate to the whole
    utterance). The engine's scheduler knows the job by its tag: a cancel drops its pending
    chunk at once (JobCancelled), and its first chunk goes before other jobs' continuations."""
    count = len(job.chunks)
    tag = WorkTag(cancelled=control.cancelled)
    audio = job.engine.synthesize_stream(
        job.req.text, job.voice, job.params, job.chunks, tag, seen=job.saw_reference
    )
    try:
        for index, text in enumerate(job.chunks):
            if control.cancelled():
                raise JobCancelled(f"cancelled after {index} of {count} chunks")
            with job.clock("synthesis"):
                piece = next(audio, None)
            if piece is None:
                return
            control.progress(index + 1, count)
            yield Piece(index, count, text, piece)
    finally:
        audio.close()


def shaper(job: PreparedJob, streamed: bool) -> Shaper:
    return Shaper(job.engine.sample_rate, job.req.sample_rate, job.req.remove_silence, streamed)


def whole_item(job: PreparedJob, made: list[Piece], index: int = 0) -> dict[str, Any]:
    """The one result item of a whole utterance made of `made` (with its captions)."""
    samples = np.concatenate([piece.audio.samples for piece in made])
    shaped = shaper(job, streamed=False)(
        Audio(samples.astype(np.float32, copy=False), job.engine.sample_rate)
    )
    item = _deliver(shaped.audio, job, index=index)
    item["usage"] = item_usage(
        job, characters=job.chars, chunks=len(made), audio_s=shaped.audio.duration_s
    )
    if job.req.captions:
        texts = [(p.text, len(p.audio.samples)) for p in made]
        timing = captions.Placement(
            job.fade_samples, shaped.keep, shaped.kept, shaped.audio.duration_s
        )
        item |= captions.item_fields(job.req.captions, texts, timing)
    return item


def stream_items(job: PreparedJob, made: Iterator[Piece]) -> Iterator[dict[str, Any]]:
    """One item per text chunk; the items concatenate to the whole utterance (pcm exactly).
    Captions: each item's own sentences, timed from the start of the utterance."""
    shape = shaper(job, streamed=True)
    offset_s, numbered, first_audio_s = 0.0, 1, None
    for piece in made:
        shaped = shape(piece.audio, last=piece.last)
        item = _deliver(shaped.audio, job, index=piece.index)
        if first_audio_s is None:  # the first item is ready: the stream's first audio
            first_audio_s = job.clock.now() - job.clock.started
        item["usage"] = item_usage(
            job,
            characters=len(piece.text),
            chunks=1,
            audio_s=shaped.audio.duration_s,
            first_audio_s=first_audio_s,
        )
        if job.req.captions:
            texts = [(piece.text, len(piece.audio.samples))]
            timing = captions.Placement(
                job.fade_samples,
                shaped.keep,
                shaped.kept,
                shaped.audio.duration_s,
                offset_s,
                piece.last,
            )
            item |= captions.item_fields(job.req.captions, texts, timing, numbered)
            numbered += len(item["segments"])
        offset_s += shaped.audio.duration_s
        yield item | {"chunk": piece.index, "chunks": piece.count}
        job.clock.reset()


def _deliver(audio: Audio, job: PreparedJob, index: int) -> dict[str, Any]:
    req, clock = job.req, job.clock
    with clock("encode"):
        data = encode(audio, req.format)
    with clock("upload"):
        out = job.deliver(data, index)
    if "audio_url" not in out:
        clock.drop("upload")  # inline: base64 only, not worth a stage of its own
    return out | {
        "format": req.format,
        "mime_type": MIME_TYPES[req.format],
        "sample_rate": audio.sample_rate,
        "duration_s": round(audio.duration_s, 3),
        "timings": clock.rounded(),
    }
