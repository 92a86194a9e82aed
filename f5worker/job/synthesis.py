"""A prepared job -> the engine's pieces -> shaped, encoded, delivered result items.

`pieces` is the only loop over the engine for one job: between chunks it reports progress and
honours a cancel, so the engine is free for the next job after at most one chunk's (or one
batch's) work. `whole_item` and `stream_items` are the queue's two item shapes; the HTTP stream
shapes the same pieces (shaping.Shaper) into one continuous encoded body instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np

from f5worker.audio import Audio
from f5worker.engine.plan import Joiner
from f5worker.engine.scheduler import WorkTag
from f5worker.errors import JobCancelled
from f5worker.job import captions, word_timings
from f5worker.job.codecs import MIME_TYPES, encode
from f5worker.job.prepared import JobControl, Piece, PreparedJob
from f5worker.job.shaping import Shaper
from f5worker.job.usage import item_usage
from f5worker.job.verify import ChunkCheck, retry_seeds


def pieces(job: PreparedJob, control: JobControl) -> Generator[Piece, None, None]:
    """The engine's audio chunk by chunk (cross-faded; the pieces concatenate to the whole
    utterance). The engine's scheduler knows the job by its tag: a cancel drops its pending
    chunk at once (JobCancelled), and its first chunk goes before other jobs' continuations.
    With a checker (verify, captions: words) each chunk is checked before it is joined, so a
    stream never sends a chunk that verification would replace."""
    count = len(job.chunks)
    tag = WorkTag(cancelled=control.cancelled, live=control.live or job.req.stream)
    waves = job.engine.synthesize_waves(
        job.voice, job.params, job.chunks, tag, seen=job.saw_reference
    )
    joiner = Joiner(count, job.engine.sample_rate, job.params.cross_fade_duration)
    try:
        for index, text in enumerate(job.chunks):
            if control.cancelled():
                raise JobCancelled(f"cancelled after {index} of {count} chunks")
            with job.clock("synthesis"):
                wave = next(waves, None)
            if wave is None:
                return
            wave, check = checked(job, index, wave, tag)
            audio = joiner.add(wave)
            control.progress(index + 1, count)
            yield placed(Piece(index, count, text, audio, check), wave, joiner)
    finally:
        waves.close()


def checked(
    job: PreparedJob, index: int, wave: np.ndarray, tag: WorkTag
) -> tuple[np.ndarray, ChunkCheck | None]:
    """Chunk `index`'s waveform as verification keeps it, and its check (None: no checker)."""
    if job.checker is None:
        return wave, None
    text, engine = job.chunks[index], job.engine
    seeds = retry_seeds(job.params.seed, index, len(job.chunks), job.checker.retries)

    def again(seed: int) -> np.ndarray:
        return engine.regenerate(job.voice, text, job.params, seed, tag, first=index == 0)

    return job.checker.check(text, wave, engine.sample_rate, seeds, again, job.clock)


def placed(piece: Piece, wave: np.ndarray, joiner: Joiner) -> Piece:
    """The piece with where its chunk's own waveform lies in it: the joined audio is the piece
    then the tail the joiner holds back, and the waveform is its end."""
    lead = len(piece.audio.samples) + len(joiner.tail) - len(wave)
    return dataclasses.replace(piece, lead=lead, wave=len(wave))


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
        job,
        characters=job.chars,
        chunks=len(made),
        audio_s=shaped.audio.duration_s,
        retries=_retries(made),
    )
    if job.req.captions:
        texts = [(p.text, len(p.audio.samples)) for p in made]
        timing = captions.Placement(
            job.fade_samples, shaped.keep, shaped.kept, shaped.audio.duration_s
        )
        item |= captions.item_fields(job.req.captions, texts, timing)
        item |= _words(job, made, timing)
    return item | _verification(job, made)


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
            retries=_retries([piece]),
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
            item |= _words(job, [piece], timing)
            numbered += len(item["segments"])
        offset_s += shaped.audio.duration_s
        yield item | _verification(job, [piece]) | {"chunk": piece.index, "chunks": piece.count}
        job.clock.reset()


def _words(job: PreparedJob, made: list[Piece], timing: captions.Placement) -> dict[str, Any]:
    """`words` for `captions: "words"`: each word timed by what the ASR companion heard."""
    if job.req.captions != "words":
        return {}
    return {"words": word_timings.word_fields(made, job.engine.sample_rate, timing)}


def _verification(job: PreparedJob, made: list[Piece]) -> dict[str, Any]:
    """`verification` of a verified job's item: one entry per chunk it carries."""
    if job.checker is None or not job.checker.verify:
        return {}
    return {"verification": [p.check.as_dict(p.index) for p in made if p.check is not None]}


def _retries(made: list[Piece]) -> int:
    return sum(p.check.retries for p in made if p.check is not None)


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
